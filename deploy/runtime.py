"""The onnxruntime side: open an exported graph, read its snnkit metadata, run batches, and run it
with its per-step membranes and spikes exposed for parity. A streaming graph is driven for its T
steps, so every form answers as the unrolled graph does."""
from __future__ import annotations

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
from .metadata import read_metadata
from .parity import Observed
from .structure import form_of_structure, inexact_spike_encodings

OUTPUTS = ["logits", "spike_counts"]


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


@dataclass
class OnnxModel:
    """A graph that runs a whole sample per call (the unrolled and int8 forms)."""

    path: Path
    session: ort.InferenceSession
    meta: Optional[dict]  # the snnkit metadata, None for a graph exported elsewhere
    form: str = "unrolled"  # as its nodes make it (snnkit.deploy.structure), which its metadata must say too
    options: Optional[ort.SessionOptions] = None
    _probed: Optional[tuple[ort.InferenceSession, list[str]]] = field(default=None, repr=False)

    @staticmethod
    def outputs(meta: Optional[dict]) -> list[str]:
        return OUTPUTS

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

    def step(self, frame: np.ndarray, states: dict[str, np.ndarray], names: list[str] = OUTPUTS,
             session: Optional[ort.InferenceSession] = None) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """One call: ``frame`` ``[B, C, H, W]`` and the states (:meth:`initial_states` before the first
        step) -> (the ``names`` outputs, the next states). A state of another batch than the frame's
        is refused: onnxruntime would broadcast a batch-1 state over the batch, silently."""
        for s in self.meta["states"]:
            expected = [len(frame), *s["shape"]]
            if s["input"] not in states or list(np.shape(states[s["input"]])) != expected:
                got = list(np.shape(states[s["input"]])) if s["input"] in states else "nothing"
                raise SnnkitError(f"state {s['input']!r} (layer {s['layer']}) is {got} but a frame of batch {len(frame)} "
                                  f"needs {expected}; start from initial_states({len(frame)}) and feed back each "
                                  "call's next states")
        outs = self.meta["states"]
        values = self.call(session or self.session, names + [s["output"] for s in outs],
                           {**self.feed(frame), **{s["input"]: states[s["input"]] for s in outs}})
        return values[:len(names)], {s["input"]: v for s, v in zip(outs, values[len(names):])}

    def drive(self, session: ort.InferenceSession, names: list[str], x: np.ndarray) -> list[list[np.ndarray]]:
        """Each call's ``names`` outputs, every call's next states fed to the next call."""
        frames = [x] * self.meta["T"] if self.meta["input_kind"] == "static" else list(x)
        carried = self.initial_states(len(frames[0]))
        steps = []
        for frame in frames:
            values, carried = self.step(frame, carried, names, session)
            steps.append(values)
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


def check_states(path: Path, session: ort.InferenceSession, meta: dict) -> None:
    """A streaming graph's states as its metadata describes them: one per spiking layer, in order,
    each an input and an output of the graph with the per-sample shape the graph declares."""
    states, inputs = meta["states"], {i.name: i.shape for i in session.get_inputs()}
    if [s["layer"] for s in states] != meta["layer_names"] or set(inputs) != {"input", *(s["input"] for s in states)}:
        raise SnnkitError(f"{path}: its snnkit metadata 'states' does not name one state per spiking layer as the "
                          "graph's inputs; re-export it with `snnkit export --form streaming`")
    for state in states:
        declared = inputs[state["input"]][1:]
        if any(isinstance(d, int) and d != n for d, n in zip(declared, state["shape"])) or len(declared) != len(
                state["shape"]):
            raise SnnkitError(f"{path}: its snnkit metadata gives state {state['input']!r} the shape {state['shape']} "
                              f"but the graph takes {declared}; re-export it with `snnkit export --form streaming`")


RUNNERS = {"streaming": StreamingModel}  # forms run otherwise than one call per sample


def load_onnx(path: str | Path, providers: Optional[list[str]] = None,
              options: Optional[ort.SessionOptions] = None) -> OnnxModel:
    path = Path(path)
    if not path.is_file():
        raise SnnkitError(f"no ONNX file at {path}; export one with `snnkit export`")
    if path.suffix == ".nir":
        raise SnnkitError(f"{path} is a NIR graph, which `snnkit eval --onnx` does not run; evaluate the checkpoint, "
                          "or its streaming graph (`snnkit export --form streaming`), which computes the same steps")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers or default_providers())
    except Exception as e:  # truncated, corrupt or not ONNX at all
        raise SnnkitError(f"{path} is not a readable ONNX model ({type(e).__name__}); "
                          "re-export it with `snnkit export`") from None
    meta = read_metadata(path, session.get_modelmeta().custom_metadata_map)
    graph = onnx.load(path, load_external_data=False)
    form = form_of_structure(graph)
    if meta is not None and meta["format"] != form:
        raise SnnkitError(f"{path} is labelled an snnkit {meta['format']} graph but its nodes are those of the {form} form; "
                          "re-export it with `snnkit export`")
    if meta is None and form == "streaming":
        raise SnnkitError(f"{path} takes states beside its input but has no snnkit metadata naming them; "
                          "export it with `snnkit export --form streaming`")
    if form == "streaming":
        check_states(path, session, meta)
    runner = RUNNERS.get(form, OnnxModel)
    outputs, expected = [o.name for o in session.get_outputs()], runner.outputs(meta)
    if sorted(outputs) != sorted(expected):
        raise SnnkitError(f"{path} has outputs {outputs}; snnkit needs exactly {expected} "
                          "(export the model with `snnkit export`)")
    if form == "int8" and (inexact := inexact_spike_encodings(graph)):
        raise SnnkitError(f"{path} quantizes the spikes {inexact[0]!r} with a scale that rounds them (snnkit's int8 "
                          "graphs encode spikes exactly); re-export it with `snnkit export --form int8`")
    return runner(path, session, meta, form, options)
