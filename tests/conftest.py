"""Shared test set-up: deterministic CPU runs; CUDA-only tests skip without CUDA; the runs the deployment tests use."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)  # a bench's main() sets it; float sums in later tests depend on it


@pytest.fixture(autouse=True)
def _wide_console():
    """The CLI in-process prints each message on one line, as on a wide terminal, so that tests can
    look for a sentence; test_terminal_output.py runs it at 80 columns."""
    from snnkit.cli.common import console

    width = console._width
    console.width = 1000
    yield
    console._width = width


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
    """``get(reset="soft")``: the run directory of the digits recipe trained for 2 epochs with that
    reset, a real model's weights and statistics; trained once per session, read only."""
    runs = {}

    def get(reset: str = "soft"):
        if reset not in runs:
            from snnkit.config import resolve_config
            from snnkit.training import train

            out = tmp_path_factory.mktemp(f"trained-{reset}")
            cfg = resolve_config(None, ["optim.epochs=2", f"neuron.reset={reset}", f"run.out_dir={out}",
                                        "run.name=digits"])
            runs[reset] = train(cfg).run_dir
        return runs[reset]

    return get


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A digits_convnet run at tmp_path/runs/tiny (and runs/latest), with cwd = tmp_path."""
    from deploy_helpers import model_and_checkpoint, write_run

    monkeypatch.chdir(tmp_path)
    _, ckpt = model_and_checkpoint("digits_convnet", width=0.25)
    return write_run(tmp_path, "tiny", ckpt)
