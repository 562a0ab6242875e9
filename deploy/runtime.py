"""The onnxruntime side: open an exported graph, read its snnkit metadata, run batches."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime as ort
import torch

from snnkit.errors import SnnkitError

OUTPUTS = ["logits", "spike_counts"]


def default_providers() -> list[str]:
    """CUDA only when both the CUDA build of onnxruntime and a CUDA device are present."""
    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass
class OnnxModel:
    path: Path
    session: ort.InferenceSession
    meta: Optional[dict]  # the snnkit metadata, None for a graph exported elsewhere

    @property
    def providers(self) -> list[str]:
        """The providers onnxruntime actually uses (it falls back to CPU silently)."""
        return self.session.get_providers()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` in the graph's input layout -> (logits [B, classes], spike_counts [B, L])."""
        name = self.session.get_inputs()[0].name
        logits, counts = self.session.run(OUTPUTS, {name: np.ascontiguousarray(x, dtype=np.float32)})
        return logits, counts


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
    if not set(OUTPUTS) <= set(outputs):  # a streaming graph also outputs its next states
        raise SnnkitError(f"{path} has outputs {outputs}; snnkit needs {OUTPUTS} among them "
                          "(export the model with `snnkit export`)")
    props = session.get_modelmeta().custom_metadata_map
    meta = {k: json.loads(v) for k, v in props.items()} if "snnkit_version" in props else None
    return OnnxModel(path, session, meta)
