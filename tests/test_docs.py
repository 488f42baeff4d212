"""The documentation: the site builds without a warning, and its examples run as written.

Every ```python block of ``docs/index.md`` and ``docs/guides/*.md`` is executed, the blocks
of a page in order in one namespace (a page reads as one script), in a temporary working
directory.  Code that must not run here (it needs data files or a cluster) is fenced as
```text or ```bash instead.  A few pages' results are checked beyond running.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Headings of the method page that docstrings across the code point to.
METHOD_SECTIONS = [
    "The problem and the protocol",
    "The zeroth-order estimate",
    "Blocks and the black-box Fisher",
    "Baselines",
    "Photonic networks",
    "Tasks",
    "The learned optimizer (ZO-L2L)",
    "Nevergrad integration",
]


def python_blocks(page: Path) -> list[str]:
    """The page's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.M | re.S)


#: The pages whose examples run: the home page and the guides that have ```python blocks.
EXECUTED_PAGES = [page for page in [DOCS / "index.md", *sorted((DOCS / "guides").glob("*.md"))] if python_blocks(page)]


def run_page(page: Path) -> dict:
    """Executes the page's python blocks in order in one namespace; returns the namespace."""
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in python_blocks(page):
            exec(compile(block, str(page), "exec"), namespace)
    return namespace


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A temporary working directory, seeded generators, one thread, the harness's method table restored.

    One torch thread and one BLAS thread, as the harness runs: on a small busy CPU, idle
    OpenMP and BLAS threads spin against the many small forwards of ZO training and make the
    examples many times slower.
    """
    from threadpoolctl import threadpool_limits

    from comparisons import methods

    monkeypatch.chdir(tmp_path)
    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    table = dict(methods.METHODS)
    with threadpool_limits(limits=1):
        yield tmp_path
    methods.METHODS.clear()
    methods.METHODS.update(table)
    torch.set_num_threads(threads)


def test_the_site_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr}"
    assert (tmp_path / "site" / "reference" / "index.html").exists()


def test_every_page_is_in_the_navigation():
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert pages == set(re.findall(r"^\s*- [^:\n]+: (\S+\.md)$", config, flags=re.M))


def test_the_method_page_has_the_sections_the_code_points_to():
    headings = re.findall(r"^## (.+)$", (DOCS / "method.md").read_text(), flags=re.M)
    assert headings == METHOD_SECTIONS


def test_the_code_points_only_to_sections_the_method_page_has():
    pointers = set()
    for folder in ("nevergrad_zonp", "comparisons"):
        for path in (ROOT / folder).rglob("*.py"):
            for pointer in re.findall(r'docs/method\.md, "([^"]+)"', path.read_text()):
                pointers.add(" ".join(re.sub(r"\n\s*#?", " ", pointer).split()))  # wrapped over lines
    assert pointers <= set(METHOD_SECTIONS), sorted(pointers - set(METHOD_SECTIONS))


def test_every_results_page_says_when_where_and_how_it_was_measured():
    for page in sorted((DOCS / "results").glob("*.md")):
        head = page.read_text()[:1500]
        assert "Date" in head and "Machine" in head and "Command" in head, page.name


@pytest.mark.parametrize("page", EXECUTED_PAGES, ids=lambda page: page.stem)
def test_the_page_examples_run(page, isolated):
    namespace = run_page(page)
    checks = {
        "index": _index_trains,
        "adapters": _adapters_train,
        "chip-training": _chip_training_resumes,
        "fast-path": _fast_path_counts,
        "harness": _harness_reports,
    }
    if page.stem in checks:
        checks[page.stem](namespace, isolated)


def _index_trains(namespace: dict, folder: Path) -> None:
    assert namespace["after"] < namespace["before"] - 0.05
    assert namespace["adapter"].queries == 3_000


def _adapters_train(namespace: dict, folder: Path) -> None:
    chip = namespace["chip"]
    assert chip.evaluate(namespace["recommendation"])["loss"] < 0.5 * chip.evaluate()["loss"]


def _chip_training_resumes(namespace: dict, folder: Path) -> None:
    assert (folder / "checkpoint.pkl").exists()
    assert namespace["resumed"].num_queries == namespace["resumed"].budget
    assert namespace["curve"][-1]["train_loss"] < namespace["curve"][0]["train_loss"]


def _fast_path_counts(namespace: dict, folder: Path) -> None:
    assert namespace["optimizer"].num_tell == namespace["optimizer"].num_ask


def _harness_reports(namespace: dict, folder: Path) -> None:
    assert (folder / "results" / "mine" / "report.md").exists()
