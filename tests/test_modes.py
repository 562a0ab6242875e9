"""One way to change a layer at run time (snnkit.spiking.layer_modes): a mode holds for its block
only, every method's modes leave copies, pickles and state_dict round-trips working while they are
active, and no code assigns ``module.forward``."""
import copy
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from snnkit.methods import METHODS, build_method
from snnkit.models import ModelSpec, build_model
from snnkit.spiking import SpikingNet, has_mode, layer_modes, plain_forward, spiking_layers

ROOT = Path(__file__).resolve().parents[1]


def tiny_net() -> SpikingNet:
    torch.manual_seed(0)
    return build_model(ModelSpec("digits_convnet", 10, 1, width=0.25)).train()


def module_types(net: nn.Module) -> list[type]:
    return [type(m) for m in net.modules()]


@pytest.mark.parametrize("name", METHODS.names())
def test_copies_and_state_dicts_round_trip_while_a_methods_modes_are_active(name):
    net = tiny_net()
    x_seq, y = torch.rand(3, 4, 1, 8, 8), torch.arange(4)
    taken = {}

    def inside(module, args, out):  # the readout runs inside every mode block of an iteration
        if taken:
            return
        handle.remove()  # the copies must not carry this test's hook
        taken["moded"] = [m for m in net.modules() if has_mode(m)]
        taken["twin"] = copy.deepcopy(net)
        taken["pickled"] = pickle.loads(pickle.dumps(net))
        state = pickle.loads(pickle.dumps(net.state_dict()))
        taken["fresh"] = tiny_net()
        taken["fresh"].load_state_dict(state)
        taken["keys"] = list(state)

    handle = list(net.body.modules())[-1].register_forward_hook(inside)
    build_method(name, 3).train_step(net, x_seq, y, lambda: net.zero_grad(set_to_none=True))
    assert set(spiking_layers(net)) <= set(taken["moded"])  # the copies were taken inside the modes
    assert taken["keys"] == list(tiny_net().state_dict())
    plain = taken["fresh"].eval().run_multistep(x_seq)[0]
    for copied in (taken["twin"], taken["pickled"]):  # the plain network, as it was at that moment
        assert module_types(copied) == module_types(net) == module_types(tiny_net())
        assert not any(has_mode(m) for m in copied.modules())
        assert torch.equal(copied.eval().run_multistep(x_seq)[0], plain)


def test_a_layer_mode_holds_for_its_block_only():
    layer, x = nn.Linear(3, 2), torch.randn(4, 3)
    plain = layer(x)
    with layer_modes({layer: lambda m, a: 2 * plain_forward(m, a)}):
        assert isinstance(layer, nn.Linear) and type(layer) is not nn.Linear
        assert torch.equal(layer(x), 2 * plain)
        with pytest.raises(RuntimeError, match="cannot be nested"), layer_modes({layer: lambda m, a: a}):
            pass
        assert torch.equal(layer(x), 2 * plain)
    assert type(layer) is nn.Linear and not has_mode(layer) and torch.equal(layer(x), plain)

    def broken(m, a):
        raise ValueError("inside the mode")

    with pytest.raises(ValueError, match="inside the mode"), layer_modes({layer: broken}):
        layer(x)
    assert type(layer) is nn.Linear and not has_mode(layer) and torch.equal(layer(x), plain)


def test_no_code_assigns_a_modules_forward():
    pattern = re.compile(r"\.forward\s*=[^=]|setattr\([^,]+,\s*['\"]forward['\"]")
    hits = [f"{path.relative_to(ROOT)}:{number}"
            for folder in ("toolkit", "deploy", "cli") for path in sorted((ROOT / folder).rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
