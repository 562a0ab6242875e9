"""Mixed precision: the membrane stays fp32 under autocast, autocast covers the body only, and
fp16 loss scaling at the body output equals scaling the loss."""
import pytest
import torch
from torch import nn

from snnkit.config import resolve_config
from snnkit.errors import ConfigError
from snnkit.methods import build_method
from snnkit.training.distributed import SyncBatchNorm, convert_sync_batchnorm
from snnkit.models import ModelSpec, build_model
from snnkit.neuron import NeuronParams, lif_multistep
from snnkit.spiking import LIF, SpikingNet
from snnkit.training.precision import Precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("layout", ["run_multistep", "run_singlestep"])
def test_spikes_under_bf16_autocast_equal_the_fp32_neuron(layout):
    p = NeuronParams()
    current = (torch.randn(8, 4, 256) * 0.8 + 0.5).bfloat16()  # [T, B, N] as a bf16 conv would give
    reference = lif_multistep(current.float(), p)
    assert not torch.equal(lif_multistep(current, p).float(), reference)  # a bf16 membrane flips spikes
    net = SpikingNet(nn.Sequential(LIF(p)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spikes, _ = getattr(net, layout)(current)
    assert spikes.dtype == torch.float32
    assert torch.equal(spikes, reference)


def tiny_net():
    torch.manual_seed(0)
    return build_model(ModelSpec("digits_convnet", 10, 1, NeuronParams(), 0.25))


def test_autocast_covers_the_body_and_hands_back_fp32():
    net = tiny_net()
    conv_dtypes = []
    net.body[0][0].register_forward_hook(lambda m, i, o: conv_dtypes.append(o.dtype))
    with Precision("bf16", CPU).applied(net):
        logits, _ = net.run_multistep(torch.randn(2, 3, 1, 8, 8))
        assert not torch.is_autocast_enabled("cpu")
    assert conv_dtypes == [torch.bfloat16] and logits.dtype == torch.float32
    net.run_multistep(torch.randn(2, 3, 1, 8, 8))  # after the block: fp32 again
    assert conv_dtypes[-1] == torch.float32


def test_a_body_that_raises_under_autocast_leaves_autocast_off():
    net = tiny_net()
    with Precision("bf16", CPU).applied(net), pytest.raises(RuntimeError):
        net.body(torch.randn(2, 5, 8, 8))  # 5 channels into a 1-channel conv
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_a_network_under_every_precision_copies_pickles_and_round_trips(amp):
    import copy
    import pickle

    net, precision = tiny_net(), Precision(amp, CPU)
    cfg = resolve_config(None, [f"run.amp={amp}"])
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    x = torch.randn(2, 3, 1, 8, 8)
    with precision.applied(net):
        twin = copy.deepcopy(net)  # e.g. an EMA or teacher model, taken mid-training
        pickled = pickle.loads(pickle.dumps(net))
        keys = list(net.state_dict())
        pickle.loads(pickle.dumps(net.state_dict()))
        fresh = tiny_net()
        fresh.load_state_dict(net.state_dict())
        out = net.run_multistep(x)[0]
        plain = fresh.run_multistep(x)[0]  # copies taken inside the block are the plain network
        assert torch.equal(twin.run_multistep(x)[0], plain) and torch.equal(pickled.run_multistep(x)[0], plain)
        assert (out.dtype, torch.equal(out, plain)) == (torch.float32, amp == "none")
    assert keys == list(tiny_net().state_dict()) == list(twin.state_dict())
    assert [type(m) for m in twin.modules()] == [type(m) for m in net.modules()] == [type(m) for m in fresh.modules()]
    assert torch.equal(net.run_multistep(x)[0], plain)


@pytest.mark.parametrize("method", ["bptt", "rate_m"])
def test_fp16_scaling_at_the_body_output_scales_every_gradient(method):
    x, y = torch.randn(2, 8, 1, 8, 8), torch.randint(0, 10, (8,))
    grads = []
    for init_scale in (2.0**12, 2.0**14):  # both lift the fp16 backward clear of underflow
        net, precision = tiny_net(), Precision("fp16", CPU)
        precision.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        with precision.applied(net):
            build_method(method, 2).train_step(
                net, x, y, lambda: grads.append([p.grad.clone() for p in net.parameters()]))
    for plain, scaled in zip(*grads):
        torch.testing.assert_close(scaled, plain * 4)


def test_fp16_step_unscales_and_skips_a_step_with_inf():
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.5)
    precision = Precision("fp16", CPU)
    scale = precision.scaler.scale(torch.ones(())).item()
    w.grad = torch.full((3,), 2.0 * scale)
    precision.step(opt)
    assert torch.equal(w.detach(), torch.zeros(3))  # 1 - 0.5 * 2
    w.grad = torch.tensor([1.0, float("inf"), 1.0])
    precision.step(opt)
    assert torch.equal(w.detach(), torch.zeros(3)) and precision.scaler.get_scale() == scale / 2


def test_run_amp_lists_its_choices():
    with pytest.raises(ConfigError, match=r"^run.amp must be one of none, bf16, fp16, got 'fp8'$"):
        resolve_config(None, ["run.amp=fp8"])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_float64_training_refuses_autocast(amp):
    with pytest.raises(ConfigError, match=r"^run.dtype must be float32 when run.amp is bf16 or fp16 "):
        resolve_config(None, ["run.dtype=float64", f"run.amp={amp}"])


def test_sync_batchnorm_in_one_process_is_batchnorm():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5)
    body = convert_sync_batchnorm(nn.Sequential(nn.Sequential(bn)))
    sync = body[0][0]
    assert type(sync) is SyncBatchNorm and torch.equal(sync.running_mean, torch.full((3,), 0.5))
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(sync(x), nn.BatchNorm2d(3)(x), rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_run_is_channels_last_bf16_and_benchmarks_unless_deterministic(tmp_path, deterministic):
    from snnkit.training import Trainer
    from snnkit.training.progress import EpochProgress

    cfg = resolve_config(None, ["optim.epochs=1", "model.width=0.25", "method.T=2", "run.device=cuda",
                                "run.amp=bf16", f"run.deterministic={str(deterministic).lower()}",
                                f"run.out_dir={tmp_path}"])
    trainer = Trainer(cfg, tmp_path)
    conv = trainer.net.body[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.backends.cudnn.benchmark is not deterministic
    assert trainer.fit(EpochProgress(enabled=False)).final_acc > 0.1


@pytest.fixture
def cuda_flags():
    """Restore the process-wide switches configure_backends sets."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved


def test_tf32_and_benchmark_are_set_for_cuda_runs_only(cuda_flags):
    from snnkit.training.precision import configure_backends

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.benchmark = False
    configure_backends(resolve_config(None, []).run, CPU)
    assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.benchmark is False
    configure_backends(resolve_config(None, []).run, torch.device("cuda"))
    assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.benchmark is True
    configure_backends(resolve_config(None, ["run.tf32=false", "run.deterministic=true"]).run,
                       torch.device("cuda"))
    assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    torch.use_deterministic_algorithms(False)
