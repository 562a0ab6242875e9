"""Checkpoints round-trip with weights_only=True, are written atomically, and bad files are named."""
import pytest
import torch

from snnkit.checkpoint import atomic_save, load_checkpoint, make_checkpoint, model_from_checkpoint
from snnkit.errors import CheckpointError
from snnkit.models import ModelSpec, build_model
from snnkit.neuron import NeuronParams


def saved(tmp_path):
    spec = ModelSpec("digits_convnet", 10, 1, NeuronParams(decay=0.3, reset="hard"), width=0.25)
    net = build_model(spec)
    net.train()(torch.randn(2, 4, 1, 8, 8))  # move BN running statistics off their defaults
    data = {"name": "digits", "input_shape": [1, 8, 8], "class_names": [str(i) for i in range(10)],
            "kind": "static", "normalization": {}}
    ckpt = make_checkpoint(net, spec, 2, data, {"recipe": "digits"})
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    return net.eval(), tmp_path / "checkpoint.pt"


def test_round_trip_rebuilds_the_same_model(tmp_path):
    net, path = saved(tmp_path)
    ckpt = torch.load(path, weights_only=True)  # a plain dict, no pickled objects
    rebuilt = model_from_checkpoint(load_checkpoint(tmp_path))  # a run directory works too
    assert rebuilt.body[0][2].neuron == NeuronParams(decay=0.3, reset="hard")
    x = torch.randn(2, 3, 1, 8, 8)
    with torch.no_grad():
        a, b = net(x), rebuilt(x)
    assert torch.equal(a.logits_seq, b.logits_seq) and torch.equal(a.spike_counts, b.spike_counts)
    assert ckpt["T"] == 2 and ckpt["format"] == "snnkit.checkpoint"


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    _, path = saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        atomic_save({"fn": lambda: None}, path)  # cannot be pickled
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_bad_files_get_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*give a run directory"):
        load_checkpoint(tmp_path / "missing")
    _, path = saved(tmp_path)
    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable snnkit checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an snnkit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
