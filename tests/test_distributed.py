"""torchrun training on CPU: 2 gloo processes equal 1 process fed the same global batch, and a
resumed 2-process run equals an uninterrupted one. The workers go through ``train``/``resume``
exactly as under torchrun (same environment variables)."""
import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Subset

from snnkit.checkpoint import load_checkpoint
from snnkit.config import resolve_config
from snnkit.data import load_dataset
from snnkit.errors import ConfigError
from snnkit.training import Trainer, resume, train
from snnkit.training.distributed import World, buckets, resolve_device
from snnkit.training.progress import EpochProgress
from training_helpers import raise_on_call

QUIET = EpochProgress(enabled=False)


class Interrupted(Exception):
    pass


def small_digits():
    """142 training samples, of which 14 (10 %) are held out for validation and 128 train (4 global
    batches of 32, so that two processes take equal shards), and 64 test samples."""
    data = load_dataset("digits")
    return dataclasses.replace(data, train=Subset(data.train, range(142)), test=Subset(data.test, range(64)))


def config(out_dir, method, name):
    return resolve_config(None, [f"method.name={method}", "method.T=2", "model.width=0.25", "optim.epochs=2",
                                 "data.batch_size=32", "run.sync_bn=true", "run.device=cpu", "run.dtype=float64",
                                 f"run.out_dir={out_dir}", f"run.name={name}"])


def worker(rank, out_dir, method, ports, with_resume):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    os.environ["MASTER_PORT"] = str(ports[0])
    train(config(out_dir, method, "ddp"), QUIET, small_digits())
    if not with_resume:
        return
    os.environ["MASTER_PORT"] = str(ports[1])
    step = Trainer.step
    Trainer.step = raise_on_call(step, 6, Interrupted)  # the second step of epoch 2
    try:
        train(config(out_dir, method, "stopped"), QUIET, small_digits())
    except Interrupted:
        pass
    Trainer.step = step
    os.environ["MASTER_PORT"] = str(ports[2])
    resume(out_dir / "stopped", QUIET, small_digits())


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def untimed(line: dict) -> dict:
    return {k: v for k, v in line.items() if k not in ("train_seconds", "train_it_per_s")}


def metrics(run):
    return [untimed(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bptt", "rate_m", "rate_s"])
def test_two_processes_equal_one_fed_the_global_batch(tmp_path, monkeypatch, method):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with_resume = method == "rate_m"
    mp.start_processes(worker, args=(tmp_path, method, free_ports(3), with_resume), nprocs=2,
                       start_method="spawn")
    train(config(tmp_path, method, "single"), QUIET, small_digits())

    single, ddp = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "ddp")
    assert ddp["train_state"]["epoch"] == 2
    # float64 (run.dtype): the runs differ by the order of the all-reduce's sums, ~1e-16 of each
    # step's update, which 8 steps of training may grow by their dynamics' gain; 1e-9 of a tensor's
    # largest entry leaves 10⁷ for that, and a spike differs only at a membrane within ~1e-15 of V_th
    for name, p in single["state_dict"].items():
        assert p.dtype != torch.float32, name
        torch.testing.assert_close(ddp["state_dict"][name], p, rtol=0, atol=1e-9 * max(float(p.abs().max()), 1),
                                   msg=name)
    for a, b in zip(metrics(tmp_path / "single"), metrics(tmp_path / "ddp"), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    if with_resume:
        resumed = load_checkpoint(tmp_path / "stopped")
        for name, p in ddp["state_dict"].items():
            assert torch.equal(resumed["state_dict"][name], p), name
        assert metrics(tmp_path / "stopped") == metrics(tmp_path / "ddp")


def test_global_batch_must_split_evenly_over_the_processes():
    assert World(rank=1, size=4).per_rank_batch(512) == 128
    with pytest.raises(ConfigError, match=r"^data.batch_size=30 is the global batch and must split evenly "
                                          r"over 4 processes; use a multiple of 4$"):
        World(size=4).per_rank_batch(30)


def test_a_pinned_gpu_is_refused_under_torchrun(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda", local_rank=3, world_size=8) == torch.device("cuda:3")
    with pytest.raises(ConfigError, match="pins every process to one GPU"):
        resolve_device("cuda:1", local_rank=0, world_size=2)


def test_a_single_process_world_shards_nothing_and_seeds_as_before():
    data = list(range(10))
    assert World().shard(data) is data
    assert World().seed(7) == 7
    assert list(World(rank=1, size=3).shard(data)) == [1, 4, 7]
    assert len({World(rank=r, size=3).seed(s) for r in range(3) for s in range(5)}) == 15


def test_buckets_split_by_size_and_dtype(monkeypatch):
    monkeypatch.setattr("snnkit.training.distributed.BUCKET_BYTES", 64)
    ts = [torch.zeros(8), torch.zeros(8), torch.zeros(20), torch.zeros(2, dtype=torch.int64), torch.zeros(1)]
    assert [[t.numel() for t in b] for b in buckets(ts)] == [[8, 8], [20], [2], [1]]


@pytest.mark.slow
def test_torchrun_launches_the_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "snnkit.cli", "train", "--epochs", "1", "-T", "2", "--device", "cpu", "--name", "cli",
           "--set", "model.width=0.125", "--set", "data.batch_size=256", "--set", f"run.out_dir={tmp_path}"]
    done = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)  # 1 epoch
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("final test accuracy") == 1  # rank 0 only
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["processes"] == 2
