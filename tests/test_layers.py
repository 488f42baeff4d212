"""The package's layers import only downward: a contract checked on every module's imports.

Every ``import`` and ``from ... import`` of every module of ``nevergrad_zonp`` is read with
``ast``: top-level and nested ones (an import inside a function is a dependency all the
same, so a lazy import cannot hide an upward one), relative and absolute, and those under
``if TYPE_CHECKING:`` too (a type-only import upward is still a cycle in the design).
``docs/architecture.md`` draws the layers.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import typing as tp
from pathlib import Path

import pytest

PACKAGE = "nevergrad_zonp"
SOURCE = Path(__file__).resolve().parent.parent / PACKAGE

#: The layers, bottom to top, each with its parts: the top-level modules or subpackages of
#: the package ("" is the package's own ``__init__``).  A module may import modules of its
#: own layer and of the layers below it, never of a layer above.
LAYERS: tp.Tuple[tp.Tuple[str, tp.Tuple[str, ...]], ...] = (
    ("checks, losses and metrics", ("_checks", "losses")),
    ("photonic networks", ("photonics",)),
    ("the output-oracle contract and the black-box Fisher", ("fisher", "oracle")),
    ("optimizers", ("optimizers",)),
    ("adapters", ("adapters",)),
    ("tasks", ("tasks",)),
    ("the learned optimizer", ("learned",)),
    ("the vectorized loop, the test functions and Nevergrad's benchmark", ("vectorized", "functions", "ngbench", "ngbench_experiments")),
    ("the package's front (its __init__)", ("",)),
)
#: Parts that may import only these modules of the optimizers package: its shared parts, not
#: the module of one method or baseline (the ZO loop, NES, the CMA-ES presets).
OPTIMIZERS_SHARED = {
    "vectorized": ("optimizers", "optimizers.iterations", "optimizers.settings", "optimizers.registration"),
    "functions": ("optimizers", "optimizers.iterations", "optimizers.settings", "optimizers.registration"),
}
#: Packages no module of nevergrad_zonp may import (the harness sits on top of the package).
FORBIDDEN = ("comparisons", "tests")


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. nevergrad_zonp.adapters.model
    imported: str  # the imported module, resolved and absolute
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """Whether ``name`` (absolute, in the package) is a module or subpackage of it."""
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (SOURCE / relative).with_suffix(".py").is_file() or (SOURCE / relative / "__init__.py").is_file()


def imports_of(path: Path) -> tp.List[Import]:
    """Every import in the module at ``path``, at any depth, resolved to absolute module names."""
    return imports_in(path.read_text(), module_name(path), package=path.name == "__init__.py")


def imports_in(code: str, module: str, package: bool = False) -> tp.List[Import]:
    """Every import in ``code``, the source of ``module`` (a package's ``__init__`` if ``package``)."""
    package_name = module if package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_name.split(".")[: len(package_name.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # ``from package import module`` imports that module
                submodule = f"{source}.{alias.name}"
                inside = source.split(".")[0] == PACKAGE
                found.append(Import(module, submodule if inside and _is_module(submodule) else source, node.lineno))
    return list(dict.fromkeys(found))  # one per imported module and line


def part_of(name: str) -> str:
    """The top-level part of the package ``name`` belongs to ("" for the package itself)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(part: str) -> int:
    for index, (_, parts) in enumerate(LAYERS):
        if part in parts:
            return index
    raise AssertionError(f"the part {part or '__init__'!r} of {PACKAGE} is in no layer of tests/test_layers.py's LAYERS")


def broken_rules(found: tp.Iterable[Import]) -> tp.List[str]:
    """One message per import that breaks the contract: the importing module, the imported one, the rule."""
    broken = []
    for item in found:
        where = f"{item.module} (line {item.line}) imports {item.imported}"
        top = item.imported.split(".")[0]
        if top in FORBIDDEN:
            broken.append(f"{where}: no module of {PACKAGE} may import {top!r}")
            continue
        if top != PACKAGE:
            continue
        importing, imported = part_of(item.module), part_of(item.imported)
        low, high = layer_of(imported), layer_of(importing)
        if low > high:
            broken.append(
                f"{where}: layer {high} ({LAYERS[high][0]}) may import only its own layer and the layers below it, "
                f"not layer {low} ({LAYERS[low][0]})"
            )
        shared = OPTIMIZERS_SHARED.get(importing)
        if shared is not None and imported == "optimizers":
            within = item.imported.split(".", 1)[1]
            if within not in shared:
                broken.append(
                    f"{where}: {importing} may import from the optimizers package only {', '.join(shared)} "
                    "(its shared parts), not the module of one method or baseline"
                )
    return broken


MODULES = sorted(SOURCE.rglob("*.py"))


def test_every_part_of_the_package_is_in_a_layer():
    for path in MODULES:
        layer_of(part_of(module_name(path)))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(path) for path in MODULES])
def test_imports_go_down_the_layers(path):
    broken = broken_rules(imports_of(path))
    assert not broken, "the layering contract is broken:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    "code, module, message",
    [
        ("from ..tasks.base import Task", "adapters.model",
         r"nevergrad_zonp.adapters.model \(line 1\) imports nevergrad_zonp.tasks.base: layer 4 \(adapters\) may import "
         r"only its own layer and the layers below it, not layer 5 \(tasks\)"),
        ("def f():\n    from nevergrad_zonp import adapters", "losses",
         r"nevergrad_zonp.losses \(line 2\) imports nevergrad_zonp.adapters: layer 0 .* not layer 4 \(adapters\)"),
        ("import typing\nif typing.TYPE_CHECKING:\n    from ..learned import ZOL2L", "tasks.attack",
         r"nevergrad_zonp.tasks.attack \(line 3\) imports nevergrad_zonp.learned: layer 5 \(tasks\) .* not layer 6"),
        ("from .optimizers.cma_presets import cma_es", "vectorized",
         r"nevergrad_zonp.vectorized \(line 1\) imports nevergrad_zonp.optimizers.cma_presets: vectorized may import "
         r"from the optimizers package only"),
        ("import comparisons.runner", "tasks.base",
         r"nevergrad_zonp.tasks.base \(line 1\) imports comparisons.runner: no module of nevergrad_zonp may import 'comparisons'"),
        ("from . import vectorized\nfrom .optimizers import iterations", "functions", None),
        ("from ..losses import accuracy\nfrom ..fisher import OUTPUT_MODELS\nimport torch", "adapters.hardware", None),
    ],
    ids=["upward", "nested", "type-only", "a-baseline's-module", "comparisons", "same-layer", "downward"],
)
def test_the_contract_names_the_import_and_the_rule_it_breaks(code, module, message):
    broken = broken_rules(imports_in(code, f"{PACKAGE}.{module}"))
    if message is None:
        assert not broken
    else:
        assert len(broken) == 1 and re.search(message, broken[0]), broken
