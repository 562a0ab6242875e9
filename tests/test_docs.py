"""The README and docs/ point at things that exist: every relative link resolves to a file (and its
``#anchor`` to one of that file's headings), and every repository path named in backticks exists.

Which backticked text is a repository path: one word containing ``/`` whose first component is a
folder at the top of the repository (``toolkit/``, ``bench/``, ``docs/``, ...), checked as a glob
when it holds ``*``. Run outputs are not repository paths: a path under a folder that
``.gitignore`` lists (``runs/``, ``bench/results/``) is skipped, and so is a template holding ``<``
(``runs/<name>/``). A test named as ``tests/test_x.py::test_name`` must be defined in that file.
A path starting ``snnkit/`` names the installed package, which the repository
lays out as ``toolkit/``, ``cli/``, ``deploy/`` and ``configs/``; it is an error. docs/_incoming/
(text waiting to be folded in) is not checked. Fenced code blocks are not read.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md")
                                      if "_incoming" not in p.relative_to(ROOT / "docs").parts)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def prose(page: Path) -> str:
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(page)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def ignored_folders() -> list[str]:
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip().endswith("/")]


def top_folders() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page)) if not re.match(r"^[a-z]+:", t)]


def repository_paths(page: Path) -> list[str]:
    ignored, tops = ignored_folders(), top_folders()
    found = []
    for code in CODE.findall(prose(page)):
        word = code.strip().rstrip(".,;:")
        if " " in word or "/" not in word or "<" in word or any(word.startswith(f) for f in ignored):
            continue
        if word.startswith("snnkit/") or word.split("/")[0] in tops:
            found.append(word)
    return found


def exists(path: str) -> bool:
    path, _, test = path.partition("::")
    if test:
        source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
        return re.search(rf"^def {re.escape(test)}\(", source, re.M) is not None
    return any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_pages_are_found():
    names = {page_id(p) for p in PAGES}
    assert {"README.md", "docs/methods.md", "docs/deploy.md", "docs/spec/rate_backprop.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {page_id(dest)}")
    assert not broken, f"{page_id(page)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_named_exists(page):
    installed = [p for p in repository_paths(page) if p.startswith("snnkit/")]
    assert not installed, f"{page_id(page)} names the installed layout; use the repository's: {installed}"
    missing = [p for p in repository_paths(page) if not exists(p)]
    assert not missing, f"{page_id(page)} names paths the repository does not hold: {missing}"


def test_the_checks_catch_what_they_are_for(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n## Second `part`\n\n[a](page.md#second-part) [b](gone.md) [c](#nowhere)\n"
                    "`toolkit/neuron.py` `toolkit/nothing.py` `runs/latest/model.onnx` `bench/results/x.json`\n"
                    "`runs/<name>/` `snnkit/deploy/costs.py` `configs/*.yaml` `u_t = λ·v`\n"
                    "`tests/test_docs.py::test_the_pages_are_found` `tests/test_docs.py::test_gone`\n"
                    "```\n`toolkit/in_a_fence.py` [d](fenced.md)\n```\n")
    assert anchors(page) == {"a-title", "second-part"}
    assert links(page) == ["page.md#second-part", "gone.md", "#nowhere"]
    assert repository_paths(page) == ["toolkit/neuron.py", "toolkit/nothing.py", "snnkit/deploy/costs.py",
                                      "configs/*.yaml", "tests/test_docs.py::test_the_pages_are_found",
                                      "tests/test_docs.py::test_gone"]
    assert [exists(p) for p in repository_paths(page)] == [True, False, False, True, True, False]
