"""The README's usage examples, run as written: each one must lower its training loss.

The code blocks are read from README.md itself, so an edit there is tested here.  The
examples are not seeded (a user's first run is not); the test seeds the global generators
only so that CI is reproducible, and runs two seeds.  The documentation's examples are run
by ``test_docs.py``.
"""

import re
import warnings
from pathlib import Path

import nevergrad as ng
import numpy as np
import pytest
import torch

import nevergrad_zonp

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> dict[str, str]:
    """The README's ```python blocks, by the heading above them (the first block under each)."""
    blocks: dict[str, str] = {}
    heading = ""
    for part in re.split(r"(^#+ [^\n]*$|```python\n.*?```)", README.read_text(), flags=re.M | re.S):
        if part.startswith("#"):
            heading = part.lstrip("#").strip()
        elif part.startswith("```python") and heading not in blocks:
            blocks[heading] = part[len("```python\n") : -3]
    return blocks


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread, as the harness runs: on a small busy CPU idle OpenMP threads spin against ZO's many small forwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_block(heading: str) -> dict:
    """Executes the README's block under ``heading`` in a fresh namespace, warnings silenced."""
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(python_blocks()[heading], namespace)
    return namespace


def test_the_usage_headings_are_there():
    assert {"Any Nevergrad problem", "A PyTorch model", "A chip behind a callable"} <= set(python_blocks())


@pytest.mark.parametrize("seed", [0, 1])
def test_the_nevergrad_problem_example_lowers_its_loss(seed):
    np.random.seed(seed)
    rec = run_block("Any Nevergrad problem")["rec"].value
    assert np.sum((rec - 1) ** 2) < 0.1 * 100  # from 100 at the origin


@pytest.mark.parametrize("seed", [0, 1])
def test_the_pytorch_model_example_lowers_the_training_loss(seed, capsys):
    np.random.seed(seed)
    torch.manual_seed(seed)
    namespace = run_block("A PyTorch model")
    adapter = namespace["adapter"]
    initial = adapter.evaluate(adapter.theta0)["loss"]
    final = adapter.evaluate(namespace["rec"])["loss"]
    assert "loss" in capsys.readouterr().out  # the example prints its result
    assert final < initial - 0.02
    assert adapter.queries == 5_000  # the budget, Fisher queries included


@pytest.mark.parametrize("seed", [0, 1])
def test_the_chip_example_lowers_the_training_loss(seed, capsys):
    np.random.seed(seed)
    namespace = run_block("A chip behind a callable")
    adapter = namespace["adapter"]
    initial = adapter.evaluate()["loss"]
    final = adapter.evaluate(namespace["rec"])["loss"]
    assert "->" in capsys.readouterr().out
    assert final < 0.7 * initial
    assert namespace["opt"].num_fisher_queries > 0  # the callable's outputs gave ZONP its Fisher


def test_every_registered_name_is_in_the_names_table():
    text = README.read_text()
    table = text[text.index("## Registered names") : text.index("## Tests")]
    listed = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M))
    assert set(nevergrad_zonp.NAMES) <= listed
    assert all(name in ng.optimizers.registry for name in nevergrad_zonp.NAMES)


def test_the_main_command_is_the_one_line_to_run():
    command = (
        'pip install torch==2.13.0 && pip install -e ".[comparisons]" && '
        "python -m comparisons run --suite quick --out results/quick --workers 2"
    )
    assert command in README.read_text()
