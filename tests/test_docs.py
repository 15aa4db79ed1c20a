"""The documentation builds without a warning, and its examples run as written.

* ``test_docs_build``: Sphinx (myst-parser for the Markdown pages, autodoc + napoleon for the
  API reference) builds ``docs/`` with ``-W --keep-going`` into a temporary directory.
* ``test_example``: every fenced ```python block of README.md and docs/**/*.md runs as a
  script, and every ```bash block that calls ``dsketch`` runs in bash (with ``dsketch``
  bound to this checkout's command line). The blocks of one page run in order, in one
  temporary directory per page, so a later block can read what an earlier one wrote.
* A block that cannot run here (a cluster address, a multi-hour benchmark) is preceded by
  ``<!-- not-run: REASON -->``; ``test_not_run_markers`` fails when the reason is missing
  or the marker is not followed by a code block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
SECONDS = 120  # per block; the examples use small problems and take a few seconds each


@dataclass
class Block:
    page: str  # path relative to the repository root
    index: int  # 1-based ordinal among the page's python and bash blocks
    lang: str
    code: str
    line: int
    not_run: str | None  # the reason, when marked not-run

    @property
    def id(self) -> str:
        return f"{self.page}::block{self.index}"

    @property
    def calls_cli(self) -> bool:
        return any(re.match(r"\s*dsketch(\s|$)", ln) for ln in self.code.splitlines())


def parse(path: Path, rel: str | None = None) -> tuple[list[Block], list[str]]:
    """The python / bash blocks of a Markdown page, and the problems with its markers."""
    rel = path.relative_to(ROOT).as_posix() if rel is None else rel
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending: tuple[int, str] | None = None  # (line, reason) of the last marker
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        fence = FENCE.match(lines[i])
        if marker:
            if pending is not None:
                problems.append(f"{rel}:{pending[0]}: not-run marker without a code block after it")
            reason = marker.group(1).strip()
            if not reason:
                problems.append(f"{rel}:{i + 1}: not-run marker without a reason")
            pending = (i + 1, reason)
        elif fence:
            lang = fence.group(1).lower()
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if lang in ("python", "bash"):
                blocks.append(Block(rel, len(blocks) + 1, lang, "\n".join(body) + "\n",
                                    start + 1, pending[1] if pending else None))
            elif pending is not None:
                problems.append(f"{rel}:{pending[0]}: not-run marker before a ```{lang} block")
            pending = None
        elif lines[i].strip() and pending is not None:
            problems.append(f"{rel}:{pending[0]}: not-run marker not followed by a code block")
            pending = None
        i += 1
    if pending is not None:
        problems.append(f"{rel}:{pending[0]}: not-run marker at the end of the page")
    return blocks, problems


def runnable(block: Block) -> bool:
    """Python blocks, and bash blocks that call the command line, unless marked not-run."""
    if block.not_run is not None:
        return False
    return block.lang == "python" or block.calls_cli


ALL_BLOCKS = [b for page in PAGES for b in parse(page)[0]]


def _params():
    for block in ALL_BLOCKS:
        if not runnable(block):
            continue
        yield pytest.param(block, id=block.id)


def test_not_run_markers():
    problems = [p for page in PAGES for p in parse(page)[1]]
    assert not problems, "\n".join(problems)


def test_marker_rules_are_enforced(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not-run: needs a cluster -->\n```bash\ndsketch fit --scheduler tcp://h:8786\n```\n\n"
        "<!-- not-run: -->\n```python\nprint(1)\n```\n\n"
        "<!-- not-run: dangling -->\nSome prose.\n\n"
        "```bash\ndsketch info x.zarr\n```\n```bash\npip install dsketch\n```\n",
        encoding="utf-8",
    )
    blocks, problems = parse(page, "page.md")
    assert [b.not_run for b in blocks] == ["needs a cluster", "", None, None]
    assert [runnable(b) for b in blocks] == [False, False, True, False]
    assert problems == ["page.md:6: not-run marker without a reason",
                        "page.md:11: not-run marker not followed by a code block"]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """One working directory per page, shared by its blocks in order."""
    return {}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    env.pop("DSKETCH_SCHEDULER", None)  # the examples start their own (or no) cluster
    return env


def _run(block: Block, cwd: Path) -> subprocess.CompletedProcess:
    if block.lang == "python":
        script = cwd / f"block{block.index}.py"
        script.write_text(block.code, encoding="utf-8")
        cmd = [sys.executable, str(script)]
    else:
        prelude = f'set -euo pipefail\ndsketch() {{ "{sys.executable}" -m dsketch.cli "$@"; }}\n'
        cmd = ["bash", "-c", prelude + block.code]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=SECONDS)


@pytest.mark.parametrize("block", list(_params()))
def test_example(block: Block, workdirs, tmp_path_factory):
    if block.page not in workdirs:
        workdirs[block.page] = (tmp_path_factory.mktemp(block.page.replace("/", "_")), set())
    cwd, done = workdirs[block.page]
    # A block may read what the page's earlier blocks wrote: run those first when they were
    # not selected (pytest -k), as a reader following the page would.
    for earlier in ALL_BLOCKS:
        if (earlier.page == block.page and earlier.index < block.index and runnable(earlier)
                and earlier.index not in done):
            _run(earlier, cwd)
            done.add(earlier.index)
    proc = _run(block, cwd)
    done.add(block.index)
    assert proc.returncode == 0, (
        f"{block.id} (line {block.line}) failed with status {proc.returncode}\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )


def test_docs_build(tmp_path):
    """Sphinx builds docs/ with warnings as errors."""
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           str(ROOT / "docs"), str(tmp_path / "html")]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx failed\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
