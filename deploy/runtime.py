"""The onnxruntime side: open an exported graph, read its snnkit metadata, run batches, and run it
with its per-step membranes and spikes exposed for parity."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import onnxruntime as ort
import torch

from snnkit.errors import SnnkitError

from .graph import PROBE
from .parity import Observed

OUTPUTS = ["logits", "spike_counts"]
# the metadata_props snnkit writes (JSON values); other keys, e.g. onnxruntime's quantizer's, are left alone
META_KEYS = ("snnkit_version", "T", "neuron", "layer_names", "topology", "computed_once", "input_shape",
             "input_kind", "input_layout", "normalization", "class_names", "dataset", "model", "opset",
             "config_hash", "checkpoint", "exporter")


def default_providers() -> list[str]:
    """CUDA only when both the CUDA build of onnxruntime and a CUDA device are present."""
    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def with_probes(path: Path) -> tuple[bytes, list[str]]:
    """The graph at ``path`` with every probe tensor (:func:`~snnkit.deploy.graph.probe_name`) as an output."""
    model = onnx.load(path)
    names = [o for node in model.graph.node for o in node.output if PROBE.match(o)]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    return model.SerializeToString(), names


@dataclass
class OnnxModel:
    path: Path
    session: ort.InferenceSession
    meta: Optional[dict]  # the snnkit metadata, None for a graph exported elsewhere
    options: Optional[ort.SessionOptions] = None
    _probed: Optional[tuple[ort.InferenceSession, list[str]]] = field(default=None, repr=False)

    @property
    def providers(self) -> list[str]:
        """The providers onnxruntime actually uses (it falls back to CPU silently)."""
        return self.session.get_providers()

    def feed(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {self.session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` in the graph's input layout -> (logits [B, classes], spike_counts [B, L])."""
        try:
            logits, counts = self.session.run(OUTPUTS, self.feed(x))
        except Exception as e:  # onnxruntime's own exception types: the graph rejects this input
            raise SnnkitError(f"{self.path} cannot run on inputs of shape {list(x.shape)} "
                              f"({str(e).splitlines()[0]}); give the graph exported from this checkpoint") from None
        if logits.ndim != 2 or counts.ndim != 2 or len(counts) != len(logits):
            raise SnnkitError(f"{self.path} gives logits of shape {list(logits.shape)} and spike counts of shape "
                              f"{list(counts.shape)}; snnkit graphs give [batch, classes] and [batch, layers]")
        return logits, counts

    def weights(self) -> dict[str, np.ndarray]:
        return {w.name: onnx.numpy_helper.to_array(w) for w in onnx.load(self.path).graph.initializer}

    def probe_names(self) -> list[str]:
        if self._probed is None:
            model, names = with_probes(self.path)
            self._probed = ort.InferenceSession(model, self.options, providers=self.providers), names
        return self._probed[1]

    def observe(self, x: np.ndarray) -> Observed:
        """Run ``x`` with the per-step membranes and spikes exposed (``[steps, B, ...]`` per layer)."""
        names = self.probe_names()
        logits, counts, *probed = self._probed[0].run(OUTPUTS + names, self.feed(x))
        steps: dict[str, dict[str, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
        for name, value in zip(names, probed):
            m = PROBE.match(name)
            steps[m["kind"]][m["layer"]][int(m["step"])] = value

        def stacked(kind: str) -> dict[str, torch.Tensor]:
            return {layer: torch.from_numpy(np.stack([by_step[t] for t in sorted(by_step)]))
                    for layer, by_step in steps[kind].items()}

        return Observed(torch.from_numpy(logits), torch.from_numpy(counts), stacked("u"), stacked("s"))


def load_onnx(path: str | Path, providers: Optional[list[str]] = None,
              options: Optional[ort.SessionOptions] = None) -> OnnxModel:
    path = Path(path)
    if not path.is_file():
        raise SnnkitError(f"no ONNX file at {path}; export one with `snnkit export`")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers or default_providers())
    except Exception as e:  # truncated, corrupt or not ONNX at all
        raise SnnkitError(f"{path} is not a readable ONNX model ({type(e).__name__}); "
                          "re-export it with `snnkit export`") from None
    outputs = [o.name for o in session.get_outputs()]
    if sorted(outputs) != sorted(OUTPUTS):
        raise SnnkitError(f"{path} has outputs {outputs}; snnkit needs exactly {OUTPUTS} "
                          "(export the model with `snnkit export`)")
    props = session.get_modelmeta().custom_metadata_map
    try:
        meta = {k: json.loads(v) for k, v in props.items() if k in META_KEYS} if "snnkit_version" in props else None
    except json.JSONDecodeError:
        raise SnnkitError(f"{path} has snnkit metadata whose values are not JSON; re-export it with "
                          "`snnkit export`") from None
    return OnnxModel(path, session, meta, options)
