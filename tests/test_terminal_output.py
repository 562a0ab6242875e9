"""`snnkit eval` and `snnkit train` at 80 columns: every line fits, text wraps only between words
(never inside a word or a number), and eval's verdict is the last line. The same command at 1000
columns is the reference: each word of the narrow output must be a word of the wide one (numbers
masked, since a second run's timings differ)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from deploy_helpers import invoke

BORDERS = "│┃┏┓┗┛━─┡┩└┘┌┐├┤┼╇╈╋┳┻╭╮╰╯═║"


def snnkit(args: list[str], columns: int, cwd: Path) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "snnkit", *args], capture_output=True, text=True, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def words(text: str) -> list[str]:
    return re.sub(r"\d+", "0", text.translate({ord(c): " " for c in BORDERS})).split()


def assert_wraps_between_words(args: list[str], cwd: Callable[[int], Path]) -> list[str]:
    """``args`` run at 80 and at 1000 columns in the folder ``cwd(columns)``; the 80-column lines."""
    narrow, wide = snnkit(args, 80, cwd(80)), snnkit(args, 1000, cwd(1000))
    lines = narrow.rstrip("\n").splitlines()
    assert max(map(len, lines)) <= 80, max(lines, key=len)
    cut = [w for w in words(narrow) if w not in set(words(wide))]
    assert not cut, f"cut inside a word or number: {cut}\n{narrow}"
    return lines


def test_eval_at_80_columns_wraps_between_words_and_ends_with_its_verdict(run):
    assert invoke("export").exit_code == 0
    lines = assert_wraps_between_words(["eval", "--onnx", "runs/latest/model.onnx"], lambda _: Path.cwd())
    assert lines[-1] == "unrolled graph, ONNX parity at T = 4: PASS, 0 spikes unexplained"
    assert len(lines) > 20  # the tables and lines before it, each wrapped to fit


def test_train_at_80_columns_wraps_between_words(tmp_path):
    lines = assert_wraps_between_words(["train", "--epochs", "1", "--name", "one", "--set", "model.width=0.125",
                                        "--set", "data.batch_size=512", "-T", "1"],
                                       lambda columns: tmp_path / str(columns))  # each its own runs/one
    text = " ".join(lines)
    assert "train loss" in text and "val acc" in text and "test acc" in text and "final test accuracy" in text
