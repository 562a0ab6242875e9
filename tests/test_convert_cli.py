"""A model of your own through the CLI and the config: ``model.name`` as ``file.py:function``,
``package.module:function`` or ``spikingjelly:NAME`` with ``model.kwargs``; train, export every form
that applies and ``eval --onnx`` PASS; every refusal one line, exit 2, nothing written; and a
checkpoint never imports code unless ``--model`` names it."""
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import convert_models as cm
import snnkit
from snnkit.checkpoint import atomic_save, make_checkpoint
from snnkit.cli.main import app
from snnkit.errors import ConfigError, ConversionError
from snnkit.models import ModelSpec, build_model
from test_convert import REFUSALS, assert_same_spikes

runner = CliRunner()
MODELS_FILE = Path(__file__).with_name("convert_models.py")


def user(function: str) -> str:
    return f"{MODELS_FILE}:{function}"


def cifar_data(side: int) -> str:
    """A CIFAR-10-shaped dataset at 3×side×side (8 training, 4 test samples), found by its name."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 3, side, side, generator=g) * 2, torch.arange(12) % 10
    name = f"convert_test_data_{side}"
    snnkit.tensor_data(name, train=(x[:8], y[:8]), test=(x[8:], y[8:]), classes=10)
    return name


@pytest.fixture
def data():
    return cifar_data(16)


def train_args(out: Path, name: str, data: str, *extra: str) -> list[str]:
    return ["train", "--epochs", "1", "--method", "rate_m", "--T", "2", "--name", "run", "--device", "cpu",
            "--set", f"run.out_dir={out}", "--set", f"model.name={name}", "--set", f"data.name={data}",
            "--set", "data.batch_size=4", *extra]


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", REFUSALS)
def test_refusals_through_the_cli(name, tmp_path, data):
    result = runner.invoke(app, train_args(tmp_path, user(name), data))
    one_line_error(result, REFUSALS[name])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", REFUSALS)
def test_refusals_through_the_python_api(name, tmp_path, data):
    """snnkit.train refuses before the run directory exists; snnkit.convert with the same sentence."""
    config = snnkit.configure(method={"name": "rate_m", "T": 2}, model={"name": user(name)},
                              data={"name": data, "batch_size": 4}, optim={"epochs": 1},
                              run={"out_dir": str(tmp_path), "name": "run", "device": "cpu"})
    for call in (lambda: snnkit.train(config, progress=False), lambda: snnkit.convert(getattr(cm, name)())):
        with pytest.raises(ConversionError) as e:
            call()
        assert str(e.value).startswith(REFUSALS[name]) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,kwargs,message", [
    ("digits_convnet", {"depth": 3}, "model digits_convnet takes no keyword argument depth; model.kwargs are for "
                                     "models of your own"),
    ("spikingjelly:no_such_net", {}, "spikingjelly:no_such_net is not in SpikingJelly's model zoo"),
    ("spikingjelly:sew_resnet18", {}, "spikingjelly:sew_resnet18 needs its neuron: set model.kwargs.spiking_neuron"),
    ("spikingjelly:sew_resnet18", {"spiking_neuron": "QIFNode"}, "spiking_neuron 'QIFNode' must be one of LIFNode, "
                                                                  "IFNode, ParametricLIFNode"),
    (user("sj_avgpool_net"), {"num_classes": 4}, "gives 4 outputs per sample, the data has 10 classes; build it "
                                                  "for 10"),
    (user("sj_avgpool_net"), {"depth": 4}, "model.kwargs do not fit"),
    (user("not_a_module"), {}, "returned a int, not an nn.Module"),
    (user("no_such_function"), {}, "has no function no_such_function"),
    ("no_such_package.models:net", {}, "cannot import no_such_package.models for model no_such_package.models:net "
                                       "(ModuleNotFoundError: No module named 'no_such_package')"),
    ("/no/such/file.py:net", {}, "/no/such/file.py does not exist"),
])
def test_model_name_mistakes_are_one_line(name, kwargs, message, tmp_path, data):
    result = runner.invoke(app, train_args(tmp_path, name, data, "--set", f"model.kwargs={json.dumps(kwargs)}"))
    one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []


def test_width_is_for_snnkits_own_models():
    with pytest.raises(ConfigError, match="model.width scales snnkit's own models"):
        build_model(ModelSpec(user("sj_avgpool_net"), 10, 3, width=0.5))


def test_zoo_kwargs_name_the_neuron_and_its_surrogate():
    net = build_model(ModelSpec("spikingjelly:sew_resnet18", 10, 3, kwargs={
        "cnf": "ADD", "num_classes": 10, "spiking_neuron": {"type": "LIFNode", "tau": 2, "detach_reset": True,
                                                            "surrogate_function": {"name": "ATan", "alpha": 3.0}}}))
    neurons = {m.neuron for m in net.body.modules() if hasattr(m, "neuron")}
    assert len(neurons) == 1
    (p,) = neurons
    assert (p.decay, p.v_threshold, p.detach_reset, p.surrogate, p.alpha) == (0.5, 2.0, True, "atan", 1.5)


def checkpoint_naming(tmp_path: Path, name: str, data: str, **kwargs) -> Path:
    spec = ModelSpec(name, 10, 3, kwargs=kwargs)
    net = build_model(spec)
    bundle = snnkit.api._TENSOR_DATA[data]
    run = tmp_path / "run"
    run.mkdir()
    atomic_save(make_checkpoint(net, spec, 2, {"name": data, **bundle.describe()}, {}), run / "checkpoint.pt")
    return run


GUARD = ("names the model {name}, code outside snnkit that a checkpoint must not run by itself; import it by "
         "naming it yourself: --model {name}")


@pytest.mark.parametrize("command", [["export"], ["eval"], ["export", "--form", "streaming"]])
def test_a_checkpoint_never_imports_code_unless_named(command, tmp_path, data):
    name = user("sj_avgpool_net")
    run = checkpoint_naming(tmp_path, name, data)
    before = sorted(p.name for p in run.iterdir())
    for extra in ([], ["--model", user("snntorch_convnet")]):
        one_line_error(runner.invoke(app, [*command, str(run), *extra]), GUARD.format(name=name))
        assert sorted(p.name for p in run.iterdir()) == before
    result = runner.invoke(app, [*command, str(run), "--model", name])
    assert result.exit_code == 0, result.output


def test_resume_never_imports_code_unless_named(tmp_path, data):
    name = user("sj_avgpool_net")
    assert runner.invoke(app, train_args(tmp_path, name, data)).exit_code == 0
    run = tmp_path / "run"
    one_line_error(runner.invoke(app, ["train", "--resume", str(run)]), GUARD.format(name=name))
    result = runner.invoke(app, ["train", "--resume", str(run), "--model", name])
    assert result.exit_code == 0 and "already finished" in result.output, result.output
    one_line_error(runner.invoke(app, ["train", "--model", name]), "--model is for --resume")


def test_the_zoo_needs_no_model_option(tmp_path, data):
    """spikingjelly:NAME runs only SpikingJelly's own code, so its checkpoints load without --model."""
    run = checkpoint_naming(tmp_path, "spikingjelly:spiking_resnet18", data, num_classes=10, spiking_neuron="IFNode")
    assert isinstance(snnkit.load(run), snnkit.spiking.SpikingNet)


EVERY_ONNX_FORM = [[], ["--form", "streaming"], ["--form", "int8"]]


@pytest.mark.slow
@pytest.mark.parametrize("function,kwargs,side,forms", [
    ("spiking_resnet18", {}, 16, EVERY_ONNX_FORM),
    ("sew_resnet18", {}, 16, EVERY_ONNX_FORM),
    ("plif_net", {"net": "CIFAR10Net"}, 32, EVERY_ONNX_FORM),
    ("snntorch_convnet", {}, 16, [*EVERY_ONNX_FORM, ["--form", "nir"]]),
    ("snntorch_convnet", {"reset_mechanism": "subtract"}, 16, EVERY_ONNX_FORM),
    ("sj_avgpool_net", {}, 16, [*EVERY_ONNX_FORM, ["--form", "nir"]]),
    ("spiking_vgg11_bn", {}, 32, EVERY_ONNX_FORM),  # its AdaptiveAvgPool2d replicates the 1×1 map to 7×7
    ("upsampling_pool_net", {}, 16, EVERY_ONNX_FORM),  # 2×2 replicated to 6×6
])
def test_train_export_every_form_and_eval_pass(function, kwargs, side, forms, tmp_path):
    """Every ONNX form for each family; NIR where it applies (no max pooling: the avg-pool nets, of
    which snnTorch's and SpikingJelly's IF net reset hard)."""
    name = user(function)
    result = runner.invoke(app, train_args(tmp_path, name, cifar_data(side), "--set",
                                           f"model.kwargs={json.dumps(kwargs)}"))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for form in forms:
        result = runner.invoke(app, ["export", str(run), "--model", name, *form])
        assert result.exit_code == 0, result.output
    graphs = [p for p in run.iterdir() if p.suffix == ".onnx"]
    assert len(graphs) == len(EVERY_ONNX_FORM)
    for graph in graphs:
        # int8's gate is its accuracy drop; on these 4 test samples one sample is 25 pp, the gate's
        # resolution here (the 0.5 pp default is tested on a trained model in test_edge_cli)
        gate = ["--max-accuracy-drop", "0.25"] if "int8" in graph.name else []
        result = runner.invoke(app, ["eval", "--onnx", str(graph), "--model", name, *gate])
        assert result.exit_code == 0 and "PASS" in result.output, result.output
    # the trained weights go back into the user's own model, which then computes the same spikes (with
    # batch statistics, where these tiny runs' neurons fire; snnTorch's BN sees one step per call, so
    # it is compared with the running statistics the run learnt)
    net = snnkit.load(run, model=name)
    original = getattr(cm, function)(**kwargs)
    original.load_state_dict(snnkit.to_original_state_dict(net, original))
    train = function != "snntorch_convnet"
    with torch.no_grad():
        assert_same_spikes(original.train(train), net.train(train), torch.rand(2, 2, 3, side, side) * 4)


@pytest.mark.slow
@pytest.mark.parametrize("form", EVERY_ONNX_FORM)
def test_what_the_exporter_cannot_express_is_one_line(form, tmp_path):
    """An AdaptiveAvgPool2d from 4×4 to 7×7 neither divides its input nor replicates it, so torch's
    ONNX exporter cannot write it: one line, exit 2, no file."""
    name = user("upsampling_pool_net")
    assert runner.invoke(app, train_args(tmp_path, name, cifar_data(16), "--set",
                                         'model.kwargs={"window": 4, "out": 7}')).exit_code == 0
    run = tmp_path / "run"
    before = sorted(p.name for p in run.iterdir())
    result = runner.invoke(app, ["export", str(run), "--model", name, *form])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    *notes, error = result.output.strip().splitlines()  # int8 logs its opset first
    assert ("torch's ONNX exporter cannot express a layer of this network at its input size (Unsupported: ONNX "
            "export of operator adaptive_avg_pool2d") in error and all("INFO" in n for n in notes[:1])
    assert sorted(p.name for p in run.iterdir()) == before
