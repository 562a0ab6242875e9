"""The README's Python API example, run as written: the same block is in docs/api.md, and running it
trains SpikingJelly's SEW-ResNet-18 for a step with rate_m, exports it and prints a parity PASS."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def readme_example() -> str:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    (block,) = PYTHON_BLOCK.findall(section)
    return block


def test_the_api_page_shows_the_readme_example():
    assert readme_example() in python_blocks(ROOT / "docs" / "api.md")


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "parity PASS"
    assert (tmp_path / "runs" / "sew" / "model.onnx").is_file()
