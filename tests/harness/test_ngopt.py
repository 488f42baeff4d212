"""NGOpt in the harness: Nevergrad's default optimizer, no step size, so no tuning; runs stored, reused and reported."""

import dataclasses
import json
import math
import shutil

import nevergrad as ng
import pandas as pd
import pytest

from comparisons import storage
from comparisons.execution import MACHINE_COLUMNS, RunSpec, execute_run
from comparisons.methods import METHODS, ngopt_selector
from comparisons.report import write_report
from comparisons.runner import run_suite
from comparisons.suites import Suite, TaskSpec
from nevergrad_zonp import ModelAdapter
from nevergrad_zonp.tasks.images import digits_task
from nevergrad_zonp.vectorized import iteration_size, uses_fast_path

# ZOI tuned on a 2-point grid with one tuning seed, NGOpt beside it; 150 queries a run.
SUITE = Suite(
    name="tiny-ngopt",
    tasks=(TaskSpec("digits", digits_task, batch_size=20, num_directions=4),),
    methods=("ZOI", "NGOpt"),
    budget=150,
    seeds=(0, 1),
    tuning_seeds=(1000,),
    grid_size=2,
    checkpoints=3,
    max_extensions=0,
)
NOTE = f"NGOpt: no step size, Nevergrad's defaults (nevergrad {ng.__version__}), not tuned"


def _algorithmic(row):
    return {key: value for key, value in row.items() if key not in MACHINE_COLUMNS}


@pytest.fixture(scope="module")
def ngopt_results(tmp_path_factory):
    """The suite run once (the specs it executed recorded), and its report written."""
    from comparisons import dispatch

    folder = tmp_path_factory.mktemp("ngopt")
    executed = []
    real = dispatch.execute_run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "execute_run", lambda spec: executed.append(spec) or real(spec))
        results = run_suite(SUITE, folder)
    write_report(folder)
    return folder, results, executed


def test_ngopt_runs_the_suites_budget_on_the_reported_seeds_only(ngopt_results):
    folder, results, executed = ngopt_results
    ngopt = [spec for spec in executed if spec.method == "NGOpt"]
    assert sorted(spec.seed for spec in ngopt) == [0, 1] and {spec.phase for spec in ngopt} == {"final"}
    assert all(spec.step_size is None for spec in ngopt)
    stored = pd.read_csv(folder / "results.csv")
    rows = stored[stored.optimizer_name == "NGOpt"]
    assert sorted(rows.seed) == [0, 1] and set(rows.phase) == {"final"}
    assert (rows.queries == SUITE.budget).all() and (rows.elapsed_budget == SUITE.budget).all()
    assert (rows.sample_forwards == 20 * SUITE.budget).all() and (rows.fisher_queries == 0).all()
    assert rows.step_name.isna().all() and rows.step_size.isna().all()
    others = stored[(stored.optimizer_name == "ZOI") & (stored.phase == "final")]
    assert (others.queries == SUITE.budget).all()  # the same budget as a tuned method
    curves = pd.read_csv(folder / "curves.csv")
    ngopt_curves = curves[curves.optimizer_name == "NGOpt"]
    assert (ngopt_curves.groupby("seed").size() == SUITE.checkpoints + 1).all()
    assert (ngopt_curves.groupby("seed").queries.max() == SUITE.budget).all()
    assert sorted(path.name for path in (folder / "runs").glob("digits_NGOpt_*.json")) == [
        "digits_NGOpt_seed0_budget150.json", "digits_NGOpt_seed1_budget150.json"]


def test_ngopt_is_not_tuned_and_tuning_json_says_so(ngopt_results):
    folder, _, executed = ngopt_results
    assert not [spec for spec in executed if spec.method == "NGOpt" and spec.phase == "tuning"]
    assert {spec.phase for spec in executed if spec.method == "ZOI"} == {"tuning", "final"}
    tuning = json.loads((folder / "tuning.json").read_text())["digits"]
    assert tuning["NGOpt"] == {"step_name": None, "chosen": None, "tuned": False, "note": NOTE}
    assert tuning["ZOI"]["grid"] == [0.001, 0.1]


def test_ngopt_asks_and_tells_one_candidate_per_query():
    adapter = ModelAdapter.from_task(digits_task(seed=0), on="model", batch_size=20, seed=0)
    optimizer = METHODS["NGOpt"].build(4, None, adapter.dimension)(parametrization=adapter.parametrization, budget=150)
    assert iteration_size(optimizer) == 1 and not uses_fast_path(optimizer, adapter)


def test_the_chosen_sub_optimizer_nevergrads_version_and_ngopts_class_are_recorded(ngopt_results):
    folder, results, _ = ngopt_results
    rows = results[results.optimizer_name == "NGOpt"]
    dimension = int(rows.dimension.iloc[0])
    expected = ng.optimizers.NGOpt(parametrization=dimension, budget=SUITE.budget).optim.name
    assert list(rows.sub_optimizer) == [expected, expected]
    assert results[results.optimizer_name == "ZOI"].sub_optimizer.isna().all()
    record = json.loads((folder / "runs" / "digits_NGOpt_seed0_budget150.json").read_text())
    settings = record["settings"]
    assert settings["optimizer_settings"] == {"class": "nevergrad.optimization.optimizerlib.NGOpt", "config": {}}
    assert settings["fingerprint"] == {"nevergrad": ng.__version__, "selector": ngopt_selector()}
    assert settings["step_name"] is None and settings["step_size"] is None and settings["optimizer"] == "NGOpt"
    assert record["row"]["sub_optimizer"] == expected


def test_ngopt_runs_are_stored_and_reused_and_redone_under_another_nevergrad(ngopt_results, tmp_path, executed_runs):
    source, expected, _ = ngopt_results
    folder = tmp_path / "again"
    shutil.copytree(source / "runs", folder / "runs")
    executed = executed_runs()
    results = run_suite(SUITE, folder)
    assert executed == []
    pd.testing.assert_frame_equal(results, expected)
    lost = folder / "runs" / "digits_NGOpt_seed1_budget150.json"
    lost.unlink()
    run_suite(SUITE, folder)
    assert [spec.key for spec in executed] == [lost.stem] and lost.exists()
    record = json.loads((folder / "runs" / "digits_NGOpt_seed0_budget150.json").read_text())
    spec = RunSpec(SUITE.tasks[0], "NGOpt", 0, None, SUITE.budget, SUITE.checkpoints, "final")
    assert storage.same_run(record, spec)
    older = dict(record, settings=dict(record["settings"], fingerprint={**record["settings"]["fingerprint"], "nevergrad": "0.4.0"}))
    assert not storage.same_run(older, spec)  # NGOpt may choose otherwise under another Nevergrad


def test_an_ngopt_run_is_deterministic_given_its_seed():
    spec = RunSpec(SUITE.tasks[0], "NGOpt", 3, None, 100, 2, "final")
    first, second = execute_run(spec), execute_run(spec)
    assert _algorithmic(first["row"]) == _algorithmic(second["row"])
    assert [_algorithmic(point) for point in first["curve"]] == [_algorithmic(point) for point in second["curve"]]
    assert math.isfinite(first["row"]["loss"]) and first["row"]["queries"] == 100


def test_the_report_says_ngopt_is_untuned_and_names_its_choice(ngopt_results):
    folder, results, _ = ngopt_results
    report = (folder / "report.md").read_text()
    (row,) = [line for line in report.splitlines() if line.startswith("| NGOpt |")]
    assert row.startswith("| NGOpt | none (not tuned) | 2 |") and "| 150 (0.0 %) |" in row
    assert f"{NOTE}." in report.split("## digits")[1]  # in place of a tuning row
    assert f"run on the reported seeds as they are: {NOTE}." in report
    tuning_rows = [line for line in report.split("Step-size tuning:")[1].splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in tuning_rows[1:]] == ["ZOI"]  # (after the header)
    choice = results[results.optimizer_name == "NGOpt"].sub_optimizer.iloc[0]
    assert f"NGOpt chose {choice} in all 2 reported run(s)." in report


def test_ngopt_has_no_step_size_to_give_or_fix(tmp_path):
    method = METHODS["NGOpt"]
    assert not method.tuned and method.step_name is None and METHODS["ZOI"].tuned
    with pytest.raises(ValueError, match="no step size"):
        method.build(4, 0.01, 10)
    with pytest.raises(ValueError, match="needs its step size"):
        METHODS["ZOI"].build(4, None, 10)
    assert RunSpec(SUITE.tasks[0], "NGOpt", 0, None, 150, 3, "final").key == "digits_NGOpt_seed0_budget150"
    fixed = dataclasses.replace(SUITE, fixed_steps={"digits": {"NGOpt": 0.1}}, steps_rule="by hand.")
    with pytest.raises(ValueError, match="fixed_steps gives a step size to \\['NGOpt'\\]"):
        run_suite(fixed, tmp_path)
