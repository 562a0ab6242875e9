"""The Triton spike-pass kernel against the reference, on CPU under Triton's interpreter, and on
CUDA where there is one."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snnkit.methods.rate import fast
from snnkit.neuron import NeuronParams

from spike_pass_bound import assert_spike_pass
from test_fast import NEURONS, Triangle, currents, neuron_id

pytest.importorskip("triton", reason="the kernel needs Triton (it ships with CUDA builds of torch)")


HERE = Path(__file__).resolve().parent


def cases() -> dict:
    torch.manual_seed(5)
    out = {f"T{T}-{neuron_id(p)}": (currents(T), p) for p in NEURONS for T in (1, 3, 8)}  # 105 neurons
    x = torch.randn(4, 2, 3, 20, 20) * 0.8 + 0.6  # 2400 neurons per step: three blocks
    out["channels_last"] = (x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2)),
                            NeuronParams())
    return out


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """The kernel's outputs for every case, from one interpreter process: {name: (s, r, g)}."""
    tmp = tmp_path_factory.mktemp("triton")
    torch.save({name: (x, p.as_dict()) for name, (x, p) in cases().items()}, tmp / "cases.pt")
    proc = subprocess.run([sys.executable, str(HERE / "triton_interpret.py"), tmp / "cases.pt", tmp / "out.pt"],
                          env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp / "out.pt", weights_only=True)


@pytest.mark.parametrize("name", list(cases()))
def test_kernel_matches_reference_in_interpreter(interpreted, name):
    x, p = cases()[name]
    out = interpreted[name]
    assert 0 < float(out[0].mean()) < 1
    assert out[0].stride() == x.stride()
    assert_spike_pass(out, x, p, p.make_surrogate())  # g within its rounding bound of float64


def test_kernel_serves_fp32_sigmoid_layers_on_cuda_only():
    x, sigmoid = currents(2), NeuronParams().make_surrogate()
    assert not fast.triton_applies(x, sigmoid)
    if torch.cuda.is_available():
        assert fast.triton_applies(x.cuda(), sigmoid)
        assert not fast.triton_applies(x.cuda().double(), sigmoid)
        assert not fast.triton_applies(x.cuda(), Triangle(1.0))


@pytest.mark.cuda
@pytest.mark.parametrize("p", NEURONS, ids=neuron_id)
def test_kernel_matches_reference_on_cuda(p):
    from snnkit.methods.rate.triton_lif import triton_multistep_record

    x = (torch.randn(8, 64, 32, 16, 16) * 0.8 + 0.6).cuda()
    out = triton_multistep_record(x, p, p.make_surrogate())
    assert_spike_pass(out, x, p, p.make_surrogate())  # g within its rounding bound of float64
    again = fast.MultistepRecorder()(x, p, p.make_surrogate())  # the same kernel on the same data
    assert all(torch.equal(a, b) for a, b in zip(again, out))
