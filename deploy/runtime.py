"""The onnxruntime side: open an exported graph, read its snnkit metadata, run batches, and run it
with its per-step membranes and spikes exposed for parity. A streaming graph is driven for its T
steps, so every form answers as the unrolled graph does."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import onnx
import onnxruntime as ort
import torch

from snnkit.errors import SnnkitError

from .graph import PROBE
from .parity import Observed

OUTPUTS = ["logits", "spike_counts"]
# the metadata_props snnkit writes (JSON values) on every graph, and what each form adds; other keys,
# e.g. onnxruntime's quantizer's, are left alone
META_KEYS = ("snnkit_version", "format", "T", "neuron", "layer_names", "topology", "computed_once", "input_shape",
             "input_kind", "input_layout", "normalization", "class_names", "dataset", "model", "opset",
             "config_hash", "checkpoint", "exporter")
FORM_KEYS = {"unrolled": (), "streaming": ("states",), "int8": ("quantization",)}
KNOWN_KEYS = set(META_KEYS).union(*FORM_KEYS.values())


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


def stacked(probed: Iterable[tuple[str, int, np.ndarray]]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(membranes, spikes): per layer, its probes' values ``[steps, B, ...]``, from (probe name, step, value)."""
    steps: dict[str, dict[str, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
    for name, step, value in probed:
        m = PROBE.match(name)
        steps[m["kind"]][m["layer"]][step] = value

    def stack(kind: str) -> dict[str, torch.Tensor]:
        return {layer: torch.from_numpy(np.stack([by_step[t] for t in sorted(by_step)]))
                for layer, by_step in steps[kind].items()}

    return stack("u"), stack("s")


def form_of(meta: Optional[dict]) -> str:
    """A graph's form, as its metadata says; one exported before the forms or elsewhere is unrolled."""
    return meta.get("format", "unrolled") if meta is not None else "unrolled"


@dataclass
class OnnxModel:
    """A graph that runs a whole sample per call (the unrolled and int8 forms)."""

    path: Path
    session: ort.InferenceSession
    meta: Optional[dict]  # the snnkit metadata, None for a graph exported elsewhere
    options: Optional[ort.SessionOptions] = None
    _probed: Optional[tuple[ort.InferenceSession, list[str]]] = field(default=None, repr=False)

    @staticmethod
    def outputs(meta: Optional[dict]) -> list[str]:
        return OUTPUTS

    @property
    def form(self) -> str:
        return form_of(self.meta)

    @property
    def providers(self) -> list[str]:
        """The providers onnxruntime actually uses (it falls back to CPU silently)."""
        return self.session.get_providers()

    def call(self, session: ort.InferenceSession, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return session.run(names, feed)
        except Exception as e:  # onnxruntime's own exception types: the graph rejects this input
            shape = list(feed[self.session.get_inputs()[0].name].shape)
            raise SnnkitError(f"{self.path} cannot run on inputs of shape {shape} ({str(e).splitlines()[0]}); "
                              "give the graph exported from this checkpoint") from None

    def feed(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {self.session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` in the graph's input layout -> (logits [B, classes], spike_counts [B, L])."""
        logits, counts = self.call(self.session, OUTPUTS, self.feed(x))
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
        logits, counts, *probed = self.call(self._probed[0], OUTPUTS + names, self.feed(x))
        membranes, spikes = stacked((n, int(PROBE.match(n)["step"]), v) for n, v in zip(names, probed))
        return Observed(torch.from_numpy(logits), torch.from_numpy(counts), membranes, spikes)


class StreamingModel(OnnxModel):
    """A streaming graph (one step per call, the membrane states as inputs and outputs), driven for
    the T steps of its metadata, so that :meth:`run` and :meth:`observe` take and give what the
    unrolled graph does: static input ``[B, C, H, W]`` is fed at every step, event input
    ``[T, B, C, H, W]`` one frame per step. :meth:`observe` also keeps each step's logits."""

    @staticmethod
    def outputs(meta: Optional[dict]) -> list[str]:
        return OUTPUTS + [s["output"] for s in meta["states"]]

    def initial_states(self, batch: int) -> dict[str, np.ndarray]:
        return {s["input"]: np.full((batch, *s["shape"]), s["initial"], np.float32) for s in self.meta["states"]}

    def drive(self, session: ort.InferenceSession, names: list[str], x: np.ndarray) -> list[list[np.ndarray]]:
        """Each call's ``names`` outputs, every call's next states fed to the next call."""
        states = self.meta["states"]
        frames = [x] * self.meta["T"] if self.meta["input_kind"] == "static" else list(x)
        carried = self.initial_states(len(frames[0]))
        steps = []
        for frame in frames:
            values = self.call(session, names + [s["output"] for s in states], {**self.feed(frame), **carried})
            carried = {s["input"]: v for s, v in zip(states, values[len(names):])}
            steps.append(values[:len(names)])
        return steps

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        steps = self.drive(self.session, OUTPUTS, x)
        return np.stack([logits for logits, _ in steps]).mean(0), sum(counts for _, counts in steps)

    def observe(self, x: np.ndarray) -> Observed:
        names = self.probe_names()  # one step's probes, "LAYER:u0" and "LAYER:s0"; call t is step t
        steps = self.drive(self._probed[0], OUTPUTS + names, x)
        logits = torch.from_numpy(np.stack([step[0] for step in steps]))  # [T, B, classes]
        membranes, spikes = stacked((n, t, v) for t, step in enumerate(steps) for n, v in zip(names, step[2:]))
        return Observed(logits.mean(0), torch.from_numpy(sum(step[1] for step in steps)), membranes, spikes, logits)


RUNNERS = {"streaming": StreamingModel}  # forms run otherwise than one call per sample


def load_onnx(path: str | Path, providers: Optional[list[str]] = None,
              options: Optional[ort.SessionOptions] = None) -> OnnxModel:
    path = Path(path)
    if not path.is_file():
        raise SnnkitError(f"no ONNX file at {path}; export one with `snnkit export`")
    if path.suffix == ".nir":
        raise SnnkitError(f"{path} is a NIR graph, which `snnkit eval --onnx` does not run; evaluate the checkpoint, "
                          "or its streaming graph (`snnkit export --streaming`), which computes the same steps")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers or default_providers())
    except Exception as e:  # truncated, corrupt or not ONNX at all
        raise SnnkitError(f"{path} is not a readable ONNX model ({type(e).__name__}); "
                          "re-export it with `snnkit export`") from None
    props = session.get_modelmeta().custom_metadata_map
    try:
        meta = {k: json.loads(v) for k, v in props.items() if k in KNOWN_KEYS} if "snnkit_version" in props else None
    except json.JSONDecodeError:
        raise SnnkitError(f"{path} has snnkit metadata whose values are not JSON; re-export it with "
                          "`snnkit export`") from None
    form = form_of(meta)
    if missing := [k for k in FORM_KEYS.get(form, ()) if k not in meta]:
        raise SnnkitError(f"{path} is an snnkit {form} graph whose metadata lacks {missing[0]!r}; "
                          "re-export it with `snnkit export`")
    runner = RUNNERS.get(form, OnnxModel)
    outputs, expected = [o.name for o in session.get_outputs()], runner.outputs(meta)
    if sorted(outputs) != sorted(expected):
        raise SnnkitError(f"{path} has outputs {outputs}; snnkit needs exactly {expected} "
                          "(export the model with `snnkit export`)")
    return runner(path, session, meta, options)
