"""The benchmark's meters and baselines measure what they claim."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import common  # noqa: E402
import convert_cost  # noqa: E402
import gpu_check  # noqa: E402
import grad_agreement  # noqa: E402
import onnx_latency  # noqa: E402
import peers  # noqa: E402
import train_cost  # noqa: E402

from deploy_helpers import exact_input, model_and_checkpoint, write_run  # noqa: E402
from snnkit.deploy.runtime import load_onnx  # noqa: E402

from snnkit import spiking  # noqa: E402
from snnkit.methods import build_method  # noqa: E402
from snnkit.models import ModelSpec, build_model  # noqa: E402
from snnkit.spiking import LIF  # noqa: E402


def test_meter_counts_each_storage_once_and_releases():
    meter = common.SavedTensorMeter()
    a = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    with meter.measuring():
        loss = (a * a).sum()  # saves a twice: one storage
    assert meter.current == meter.peak == 8000
    loss.backward()
    assert meter.current == 0 and meter.peak == 8000


def test_meter_peak_of_per_step_backward_is_one_graph():
    meter = common.SavedTensorMeter()
    a = torch.randn(500, requires_grad=True)
    with meter.measuring():
        for _ in range(3):
            a.exp().sum().backward()  # saves its 2000-byte output; freed by backward
    assert meter.peak == 2000 and meter.current == 0


def test_rows_follow_the_registry_and_filter():
    labels = [r[0] for r in train_cost.rows(["bptt", "rate_m", "rate_s", "memopt", "floor"])]
    assert labels == ["bptt", "bptt[single]", "rate_m", "rate_s", "memopt", "floor"]
    assert [r[0] for r in train_cost.rows(["rate_s"])] == ["rate_s"]


def test_segments_cover_the_body_in_order_and_end_at_spiking_layers():
    body = build_model(ModelSpec("resnet18", 10, 3, width=0.125)).body
    segs = common.segments(body)
    assert [m for seg in segs for m in seg] == common.flat_modules(body)
    assert all(any(isinstance(x, LIF) for m in seg[-1:] for x in m.modules()) for seg in segs[:-1])
    assert len(segs) == 1 + 8 + 1  # stem, eight blocks, head


def tiny(seed=3, dtype=torch.float32):
    torch.manual_seed(seed)
    return build_model(ModelSpec("digits_convnet", 10, 1, width=0.25)).to(dtype)


def assert_float64_grads_agree(got: dict, reference: dict) -> None:
    """Two implementations of one float64 backward: they differ by sums taken in another order, at
    most n·2⁻⁵³ of the summed magnitudes for the n < 10⁴ terms of an entry here (~1e-12 of a
    tensor's largest entry, leaving 1000× for cancellation under the 1e-9 checked); the spikes are
    the same unless a membrane lies within ~1e-15 of V_th."""
    assert got.keys() == reference.keys()
    for name, g in reference.items():
        assert g.dtype == torch.float64, name
        torch.testing.assert_close(got[name], g, rtol=0, atol=1e-9 * float(g.abs().max()), msg=name)


def grads_after(method, net, T=3):
    torch.manual_seed(4)
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    method.train_step(net, x.expand(T, *x.shape), torch.arange(6), lambda: None)
    return {n: p.grad for n, p in net.named_parameters()}


def test_memopt_gives_bptt_gradients():
    reference = grads_after(build_method("bptt", 3), tiny(dtype=torch.float64))
    net = tiny(dtype=torch.float64)
    assert_float64_grads_agree(grads_after(common.Memopt(3, net), net), reference)


def test_floor_reaches_every_parameter():
    grads = grads_after(common.Floor(3), tiny(dtype=torch.float64)).values()
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def setting(method, T, **options):
    return train_cost.Setting("digits_convnet", 0.25, 8, T, method, method, options, warmup=0, iters=1)


@pytest.mark.parametrize("method", ["rate_m", "rate_s"])
def test_rate_saved_memory_does_not_grow_with_T(method):
    assert train_cost.measure(setting(method, 4))["saved_bytes"] == train_cost.measure(setting(method, 1))["saved_bytes"]


def test_bptt_saved_memory_grows_with_T():
    one, four = (train_cost.measure(setting("bptt", T, layout="multi"))["saved_bytes"] for T in (1, 4))
    assert four > 3 * one


def test_spike_pass_row_times_three_paths():
    out = train_cost.measure(setting("spike_pass", 2))
    for prefix in ("", "lif_"):
        assert out[f"{prefix}speedup"] == pytest.approx(out[f"{prefix}reference_seconds"] / out[f"{prefix}fused_seconds"])
        assert out[f"{prefix}speedup_over_eager"] == pytest.approx(
            out[f"{prefix}eager_seconds"] / out[f"{prefix}fused_seconds"])
    assert out["fused_first_call_seconds"] > out["fused_seconds"]  # it compiled


def grads_of(net, method, T=2, dtype=torch.float64):
    torch.manual_seed(4)
    x = torch.rand(6, 1, 8, 8, dtype=dtype) * 2
    net.zero_grad(set_to_none=True)
    method.train_step(net, x.expand(T, *x.shape), torch.arange(6), lambda: None)
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def test_spikingjelly_peer_is_snnkit_bptt_with_its_neuron_swapped():
    net = tiny(dtype=torch.float64)
    method = peers.SpikingJellyBPTT(3, net)
    assert not spiking.spiking_layers(net.body)
    assert len([m for m in net.body.modules() if isinstance(m, peers.SpikingJellyLIF)]) == 3
    reference = grads_of(tiny(dtype=torch.float64), build_method("bptt", 3, {"layout": "multi"}), T=3)
    assert_float64_grads_agree(grads_of(net, method, T=3), reference)


def test_snntorch_peer_at_one_step_is_snnkit_bptt():
    """At T = 1 from rest the snnTorch membrane is the input current: its reset, one step late,
    has not acted yet, so its gradients are snnkit's (they differ from T = 2 on)."""
    pytest.importorskip("snntorch", reason="a peer of the bench extra: pip install -e '.[bench]'")
    from snntorch_float64 import in_float64

    net = tiny(dtype=torch.float64)
    method = peers.SnntorchBPTT(1, net)
    for lif in (m for m in net.modules() if isinstance(m, peers.SnntorchLeaky)):
        in_float64(lif.leaky)  # its surrogate's spikes are float32 for any input: judged by the float64 rule
    reference = grads_of(tiny(dtype=torch.float64), build_method("bptt", 1, {"layout": "single"}), T=1)
    got = grads_of(net, method, T=1)
    assert_float64_grads_agree(got, reference)
    again = grads_of(net, method, T=1)  # the membrane was cleared: the second iteration starts from rest
    assert all(torch.equal(again[name], g) for name, g in got.items())


def test_peer_rows_are_skipped_with_a_note_when_not_installed(monkeypatch):
    monkeypatch.setattr(train_cost.importlib.util, "find_spec", lambda name: None)
    base = train_cost.Setting("", 1.0, 0, 0, "", "", warmup=0, iters=1)
    (row,) = train_cost.sweep([("digits_convnet", 0.25, 4)], [1], ["snntorch"], base)
    assert row["error"] == "snntorch is not installed (pip install -e '.[bench]')"


def test_lif_inputs_are_the_currents_of_every_layer():
    net, x = tiny(), torch.rand(2, 4, 1, 8, 8)
    currents = common.lif_inputs(net, x)
    assert [lif for lif, _ in currents] == spiking.spiking_layers(net.body)
    assert [tuple(c.shape[:2]) for _, c in currents] == [(2, 4)] * 3


def test_onnx_latency_times_a_trained_run_per_step_and_per_sequence_in_every_onnx_form(tmp_path):
    _, ckpt = model_and_checkpoint("digits_convnet")
    run = write_run(tmp_path, "tiny", ckpt)
    out = tmp_path / "latency.json"
    onnx_latency.main(["--checkpoint", str(run), "--repeats", "1", "--batches", "3", "--out", str(out)])
    [row] = json.loads(out.read_text())["results"]
    assert (row["model"], row["T"], row["batch"], row["checkpoint"]) == ("digits_convnet", ckpt["T"], 3, str(run))
    timed = ("torch_step", "torch_sequence", "onnx_step", "onnx_sequence", "int8_sequence", "streaming_step",
             "streaming_sequence")
    assert all(row[f"{label}_ms"] > 0 for label in timed)
    assert row["onnx_sequence_over_T_steps"] == pytest.approx(row["onnx_sequence_ms"] / (4 * row["onnx_step_ms"]))
    assert row["int8_speedup"] == pytest.approx(row["onnx_sequence_ms"] / row["int8_sequence_ms"])
    assert row["streaming_over_sequence"] == pytest.approx(row["streaming_sequence_ms"] / row["onnx_sequence_ms"])
    assert 0 < row["int8_size_ratio"] < 1


def test_one_step_graph_is_the_first_step_of_the_network(tmp_path):
    net, ckpt = model_and_checkpoint("digits_convnet")
    step = load_onnx(onnx_latency.one_step_graph(ckpt, tmp_path))
    x = exact_input(5, (1, 8, 8))
    logits, counts = step.run(x.numpy())
    with torch.no_grad():
        ref = net(x.unsqueeze(0))
    assert step.meta["T"] == 1
    np.testing.assert_array_equal(counts, ref.spike_counts.numpy())
    np.testing.assert_array_equal(logits, ref.logits.numpy())  # dyadic weights and input: every sum exact


def agreement(labels, T):
    torch.manual_seed(5)
    batches = [(torch.randn(8, 1, 8, 8, dtype=torch.float64) * 1.5, torch.randint(0, 10, (8,))) for _ in range(2)]
    methods = {label: grad_agreement.method_for("digits", f"{label}@method.T={T}") for label in labels}
    return grad_agreement.agreement(tiny(dtype=torch.float64).train(), methods, batches, T, "static")


def test_gradient_agreement_is_exact_where_the_identities_say():
    """In float64 an identity holds to the rounding of the two backward passes (~1e-12 relative,
    see assert_float64_grads_agree), so cosines and norm ratios are checked to 1e-9."""
    at_T1 = agreement(["rate_m"], 1)["rate_m"]  # rate_M = BPTT at T = 1, every parameter
    assert all(cos == pytest.approx(1, abs=1e-9) and ratio == pytest.approx(1, abs=1e-9)
               for cos, ratio in at_T1.values())
    at_T4 = agreement(["rate_m@method.divide_grad_by_T=true", "rate_s"], 4)
    head = "body.6.weight"  # the classifier: BPTT's gradient, × 1/T with the option; rate_S against bptt[single]
    assert at_T4["rate_m@method.divide_grad_by_T=true"][head] == pytest.approx([1, 1 / 4], abs=1e-9)
    assert at_T4["rate_s"][head] == pytest.approx([1, 1], abs=1e-9)


def test_gpu_check_stops_with_one_line_without_cuda():
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py")], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "gpu_check needs a CUDA device and torch.cuda.is_available() is False; run it on a GPU machine"]


def test_gpu_check_steps_and_report_run_on_any_device():
    """Its measurements and report, at a tiny size on CPU: what a GPU run goes through."""
    base = train_cost.Setting("digits_convnet", 0.25, 4, 1, "", "", warmup=0, iters=1, amp="bf16",
                              channels_last=True)
    result = {"machine": common.machine(), "seconds": 1.0, "tests": {"passed": True, "summary": "2 passed"},
              "training": gpu_check.training(base, [2]), "spike_pass": gpu_check.spike_pass(base, [2]),
              "torchrun": gpu_check.torchrun_step()}
    assert [r["row"] for r in result["training"]] == ["bptt", "rate_m", "rate_s"]
    assert all(r["images_per_second"] == pytest.approx(4 / r["seconds"]) for r in result["training"])
    md = gpu_check.report(result)
    assert "| rate_s | 2 |" in md and "torchrun, 2 processes: not run" in md


@pytest.mark.slow
def test_convert_cost_rows_save_what_they_claim():
    """SpikingJelly's SEW-ResNet-18 at 16×16, batch 2, in this process: rate_m and memopt save less for
    backward than SpikingJelly's BPTT, whose saved bytes grow with T; every row times."""
    args = {"name": "sew_resnet18", "side": 16, "batch": 2, "compile_rate": "off"}
    saved = {T: {row: convert_cost.memory(T=T, row=row, **args)["saved_bytes"] for row in convert_cost.ROWS}
             for T in (2, 4)}
    for rows in saved.values():
        assert rows["rate_m"] < rows["sj_bptt"] and rows["sj_memopt"] < rows["sj_bptt"]
    assert saved[4]["sj_bptt"] > saved[2]["sj_bptt"]
    seconds = convert_cost.timing(T=2, iters=1, **args)
    assert list(seconds) == list(convert_cost.ROWS) and all(t > 0 for t in seconds.values())


@pytest.mark.slow
def test_convert_cost_writes_its_table_and_json(tmp_path):
    convert_cost.main(["--T", "2", "--side", "16", "--batch", "2", "--iters", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "convert_cost.json").read_text())
    [result] = report["results"]
    assert (result["model"], result["T"], list(result["rows"])) == ("sew_resnet18", 2, list(convert_cost.ROWS))
    assert all(m["peak_rss_bytes"] > 0 and m["seconds"] > 0 for m in result["rows"].values())
    assert "| sew_resnet18 | 2 | rate_m |" in (tmp_path / "convert_cost.md").read_text()
