"""The README's usage examples, run as written: each one must lower its training loss.

The code blocks are read from README.md itself, so an edit there is tested here.  The
examples are not seeded (a user's first run is not); the test seeds the global generators
only so that CI is reproducible, and runs two seeds.
"""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

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


@pytest.mark.parametrize("seed", [0, 1])
def test_the_nevergrad_problem_example_lowers_its_loss(seed):
    np.random.seed(seed)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(python_blocks()["Any Nevergrad problem"], namespace)
    rec = namespace["rec"].value
    assert np.sum((rec - 1) ** 2) < 0.1 * 100  # from 100 at the origin


@pytest.mark.parametrize("seed", [0, 1])
def test_the_pytorch_model_example_and_the_vectorized_path_lower_the_training_loss(seed, capsys):
    np.random.seed(seed)
    torch.manual_seed(seed)
    blocks = python_blocks()
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(blocks["A PyTorch model"], namespace)
        adapter = namespace["adapter"]
        initial = adapter.evaluate(adapter.theta0)["loss"]
        after_minimize = adapter.evaluate(namespace["rec"])["loss"]
        exec(blocks["The vectorized path (one batched forward per iteration)"], namespace)
        after_vectorized = adapter.evaluate(namespace["rec"])["loss"]
    assert "loss" in capsys.readouterr().out  # the example prints its result
    assert after_minimize < initial - 0.02
    assert after_vectorized < initial - 0.02


def test_the_ask_tell_block_runs_on_the_examples_optimizer():
    np.random.seed(0)
    torch.manual_seed(0)
    blocks = python_blocks()
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(blocks["A PyTorch model"].replace("budget=5_000", "budget=200"), namespace)
        exec(blocks["Ask/tell and executors"], namespace)
    assert namespace["opt"].num_tell == 201


def test_the_learned_optimizer_example_lowers_the_attack_loss(capsys):
    np.random.seed(0)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(python_blocks()["The learned optimizer (ZO-L2L)"], namespace)
    problem, adapter = namespace["problem"], namespace["adapter"]
    before = problem.report(adapter.theta0)["loss"]
    after = problem.report(namespace["recommendation"].value)["loss"]
    assert after < 0.5 * before
    assert "->" in capsys.readouterr().out
