"""Every ONNX form in a second runtime, ``onnx.reference.ReferenceEvaluator``: it loads the file as
written (the int8 graph at its opset, with only the domains it uses) and gives the spikes that
onnxruntime gives, or spikes that the parity rule explains by float32 rounding."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from deploy_helpers import exact_input, model_and_checkpoint
from snnkit.checkpoint import atomic_save
from snnkit.deploy.export import export_checkpoint
from snnkit.deploy.source import Source
from snnkit.deploy.parity import verify
from snnkit.deploy.quantize import INT8_OPSET
from snnkit.deploy.runtime import load_onnx, with_probes


class ReferenceSession:
    """The two calls snnkit's runners make of an onnxruntime session, answered by onnx.reference."""

    def __init__(self, model: onnx.ModelProto):
        self.evaluator = ReferenceEvaluator(model)
        self.model = model

    def get_inputs(self):
        return self.model.graph.input

    def run(self, names, feed):
        return self.evaluator.run(names, feed)


def reference_runner(path):
    """snnkit's own runner for the file (unrolled, streaming or int8), its sessions in onnx.reference."""
    runner = load_onnx(path)
    probed, names = with_probes(path)
    return replace(runner, session=ReferenceSession(onnx.load(path)),
                   _probed=(ReferenceSession(onnx.load_from_string(probed)), names))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    atomic_save(model_and_checkpoint("digits_convnet", width=1.0)[1], out / "checkpoint.pt")
    return out


@pytest.mark.parametrize("form", ["unrolled", "streaming"])
def test_float_forms_run_in_onnx_reference_within_the_parity_rule(digits, form):
    path = export_checkpoint(digits, digits / f"{form}.onnx", form=form).path
    src = Source.load(digits)
    x = exact_input(3, src.input_shape)
    seen = reference_runner(path).observe(x.numpy())
    verdict = verify(src.twin(), x, seen).verdict
    assert verdict.passed, verdict.first_unexplained.describe()
    ort_seen = load_onnx(path).observe(x.numpy())
    assert verdict.spikes_compared == sum(s.numel() for s in ort_seen.spikes.values()) > 0
    differing = int((seen.spike_counts - ort_seen.spike_counts).abs().sum())
    assert differing <= verdict.explained  # every count that differs from onnxruntime's is an explained spike


def test_int8_graph_declares_only_its_domains_and_runs_in_onnx_reference(digits):
    result = export_checkpoint(digits, digits / "int8.onnx", form="int8")
    model = onnx.load(result.path)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", INT8_OPSET)]
    assert result.opset == INT8_OPSET and load_onnx(result.path).meta["opset"] == INT8_OPSET
    x = exact_input(3, (1, 8, 8)).numpy()
    seen, ort_seen = reference_runner(result.path).observe(x), load_onnx(result.path).observe(x)
    assert ort_seen.spike_counts.sum() > 0
    np.testing.assert_array_equal(seen.spike_counts, ort_seen.spike_counts)
