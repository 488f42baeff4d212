"""The comparison harness end to end on a tiny digits suite: files, tuning, report, resume, determinism, Dask."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from comparisons import execution, storage
from comparisons.dispatch import Runs
from comparisons.execution import MACHINE_COLUMNS, RunSpec, execute_run
from comparisons.report import write_report
from comparisons.runner import run_suite
from comparisons.tuning import choose_step, extend_grid, step_score
from comparisons.suites import Suite, TaskSpec, paper_suite, quick_suite, standard_suite
from nevergrad_zonp.tasks.images import digits_task
from support import write_mnist

# Q = 4 on mini-batches of 20: one ZONP Fisher refresh (a block of 442-443 parameters, + 1) and ~30 iterations.
TINY = Suite(
    name="tiny",
    tasks=(TaskSpec("digits", digits_task, batch_size=20, num_directions=4),),
    methods=("ZONP", "ZOI"),
    budget=1000,
    seeds=(0, 1),
    tuning_seeds=(1000, 1001),
    grid_size=2,
    step_ranges={"lr": (1e-3, 1e-1), "sigma0": (1e-3, 1e-1)},
    checkpoints=4,
    max_extensions=1,
)
NEVERGRAD_COLUMNS = ["optimizer_name", "budget", "loss", "seed", "elapsed_time", "elapsed_budget", "dimension", "num_workers"]
OUR_COLUMNS = ["task", "phase", "queries", "fisher_queries", "sample_forwards", "step_name", "step_size", "test_accuracy",
               "test_loss", "peak_memory_mb", "trained_on"]


def _algorithmic(row):
    """``row`` without the columns that measure the machine (wall time, memory)."""
    return {key: value for key, value in row.items() if key not in MACHINE_COLUMNS}


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    results = run_suite(TINY, folder)
    write_report(folder)
    return folder, results


def test_results_csv_has_benchmark_and_own_columns_and_one_row_per_run(tiny_results):
    folder, results = tiny_results
    stored = pd.read_csv(folder / "results.csv")
    assert set(NEVERGRAD_COLUMNS + OUR_COLUMNS) <= set(stored.columns)
    tuning = json.loads((folder / "tuning.json").read_text())["digits"]
    extra_points = sum(entry["extensions"] for entry in tuning.values())
    assert len(stored) == TINY.num_runs + 2 * extra_points == 2 * (2 * 2 + 2) + 2 * extra_points
    final = stored[stored.phase == "final"]
    assert sorted(final.seed.unique()) == [0, 1] and set(stored[stored.phase == "tuning"].seed) == set(TINY.tuning_seeds)
    assert (stored.queries <= TINY.budget).all() and (stored.queries > 0).all()
    assert (stored.sample_forwards == 20 * stored.queries).all()
    assert stored.loc[stored.optimizer_name == "ZONP", "fisher_queries"].between(443, 444).all()  # one block + 1
    curves = pd.read_csv(folder / "curves.csv")
    assert (curves.groupby(["optimizer_name", "seed", "step_size"]).size() == TINY.checkpoints + 1).all()
    assert json.loads((folder / "settings.json").read_text())["budget"] == TINY.budget


def test_tuning_is_recorded_and_its_choice_is_used(tiny_results):
    folder, results = tiny_results
    tuning = json.loads((folder / "tuning.json").read_text())["digits"]
    for name in TINY.methods:
        entry = tuning[name]
        assert {0.001, 0.1} <= set(entry["grid"]) and entry["step_name"] == "lr" and entry["seeds"] == [1000, 1001]
        assert len(entry["grid"]) == 2 + entry["extensions"] and entry["extensions"] <= TINY.max_extensions
        assert entry["scores"] == [step_score(losses) for losses in entry["losses"]]
        best = min(range(len(entry["grid"])), key=lambda i: entry["scores"][i])
        assert entry["chosen"] == entry["grid"][best]
        assert entry["at_edge"] == (best in (0, len(entry["grid"]) - 1))
        final = results[(results.phase == "final") & (results.optimizer_name == name)]
        assert (final.step_size == entry["chosen"]).all()
        tuned = results[(results.phase == "tuning") & (results.optimizer_name == name)]
        assert sorted(tuned.step_size.unique()) == entry["grid"]


def test_report_has_a_table_with_formatted_numbers_p_values_and_plots(tiny_results):
    folder, results = tiny_results
    report = (folder / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ZO") and "±" in line}
    assert set(rows) == {"ZONP", "ZOI"}
    zoi = [cell.strip() for cell in rows["ZOI"].split("|")[1:-1]]
    final = results[(results.phase == "final") & (results.optimizer_name == "ZOI")]
    assert zoi[3] == f"{final.test_accuracy.mean():.4g} ± {final.test_accuracy.std():.2g}"
    assert 0 < float(zoi[7]) <= 1 and 0 < float(zoi[8]) <= 1
    curves = pd.read_csv(folder / "curves.csv")
    best = curves[(curves.phase == "final") & (curves.optimizer_name == "ZOI")].groupby("seed").train_loss.min()
    diverged = sum(int(row.loss > 1.5 * best[row.seed]) for row in final.itertuples())
    assert zoi[6] == f"{diverged} of 2"
    winners = [line for line in report.splitlines() if line.startswith("- **digits**")]
    assert len(winners) == 1 and "on training loss" in winners[0] and "on test accuracy" in winners[0]
    assert "p accuracy vs ZONP" in report and "| ZONP | lr |" in report
    hours = results.elapsed_time.sum() / 3600
    tuning = int((results.phase == "tuning").sum())
    assert f"Runs: {len(results)} ({tuning} tuning, {len(results) - tuning} reported); summed run time {hours:.2f} h" in report
    png = folder / "digits_curves.png"
    assert "(digits_curves.png)" in report and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_suite_resumes_without_redoing_completed_runs(tiny_results, tmp_path, monkeypatch, executed_runs):
    source, _ = tiny_results
    folder = tmp_path / "resumed"
    shutil.copytree(source / "runs", folder / "runs")
    (lost,) = (folder / "runs").glob("digits_ZOI_seed1_step*.json")  # the reported run of seed 1
    lost.unlink()
    kept = {path: path.stat().st_mtime_ns for path in (folder / "runs").iterdir()}
    executed = executed_runs()
    results = run_suite(TINY, folder)
    assert [spec.key for spec in executed] == [lost.stem] and lost.exists()
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())
    assert len(results) == len(pd.read_csv(source / "results.csv"))


def test_two_runs_with_the_same_seed_give_identical_rows_apart_from_time_and_memory():
    spec = RunSpec(TINY.tasks[0], "ZONP", 3, 0.01, TINY.budget, 4, "final")
    first, second = execute_run(spec), execute_run(spec)
    assert _algorithmic(first["row"]) == _algorithmic(second["row"])
    assert [_algorithmic(point) for point in first["curve"]] == [_algorithmic(point) for point in second["curve"]]
    other = execute_run(RunSpec(TINY.tasks[0], "ZONP", 4, 0.01, TINY.budget, 4, "final"))
    assert other["row"]["loss"] != first["row"]["loss"]


def test_the_suite_runs_on_a_local_dask_cluster_with_the_same_results(tiny_results, tmp_path):
    distributed = pytest.importorskip("distributed")
    _, expected = tiny_results
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            results = run_suite(TINY, tmp_path / "dask", client=client)
    machine = list(MACHINE_COLUMNS)
    pd.testing.assert_frame_equal(results.drop(columns=machine), expected.drop(columns=machine))


def test_tuning_rule_prefers_low_finite_losses_and_the_smaller_step_on_ties():
    assert choose_step([0.1, 1.0, 10.0], [2.0, 1.0, 1.0]) == 1.0
    assert choose_step([0.1, 1.0], [math.nan, 5.0]) == 1.0
    # the median over tuning seeds: one lucky seed does not choose a step that fails on the others
    assert step_score([0.05, 3.0, math.nan]) == 3.0 and step_score([0.2, 0.3, 0.25]) == 0.25


def test_a_grid_is_extended_beyond_the_edge_its_best_point_is_on():
    grid = [0.001, 0.01, 0.1]
    assert extend_grid(grid, 0.1) == 1.0 and extend_grid(grid, 0.001) == 0.0001
    assert extend_grid(grid, 0.01) is None


def test_built_in_suites_are_defined_as_specified():
    quick = quick_suite()
    assert set(quick.methods) == {"ZONP", "ZOI", "ZOco", "SNES", "CMA-ES"}
    assert [task.name for task in quick.tasks] == ["equalization"]
    assert quick.num_runs == 5 * 3  # no tuning runs: the standard suite's choices
    paper = paper_suite(fashion_mnist="/data/fashion", cifar10="/data/cifar")
    assert [task.name for task in paper.tasks] == ["fashion_mnist", "equalization", "copying", "cifar10"]
    assert len(paper.seeds) == 8 and not set(paper.tuning_seeds) & set(paper.seeds) and len(paper.tuning_seeds) >= 3
    assert {task.name: task.num_directions for task in paper.tasks}["fashion_mnist"] == 100
    assert {task.name: task.num_directions for task in paper.tasks}["cifar10"] == 100
    standard = standard_suite()
    assert [task.name for task in standard.tasks] == ["equalization", "copying", "digits"]
    assert len(standard.seeds) >= 5 and len(standard.tuning_seeds) >= 3
    assert set(standard.methods) == set(quick.methods) | {"ZOL2L", "ZOL2L-attack", "ZOL2L-equalization"}
    assert standard.seeds == tuple(range(10)) and set(standard.seed_groups["held out from every choice of the suite"]) == {5, 6, 7, 8, 9}
    digits = standard.tasks[2]
    assert (digits.num_directions, digits.budget) == (100, 200_000)


def test_a_suite_restricted_to_some_tasks_keeps_its_protocol_and_refuses_unknown_names():
    paper = paper_suite()
    copying = paper.restricted_to(["copying"])
    assert [task.name for task in copying.tasks] == ["copying"]
    assert (copying.seeds, copying.tuning_seeds, copying.budget) == (paper.seeds, paper.tuning_seeds, paper.budget)
    with pytest.raises(ValueError, match="no task.*'digits'"):
        paper.restricted_to(["copying", "digits"])
    zo = paper.restricted_to(methods=["ZOI", "ZONP"])
    assert zo.methods == ("ZONP", "ZOI") and zo.tasks == paper.tasks
    both = paper.restricted_to(["copying"], ["ZONP"])
    assert both.methods == ("ZONP",) and [task.name for task in both.tasks] == ["copying"]
    with pytest.raises(ValueError, match="no method.*'NES'"):
        paper.restricted_to(methods=["NES"])


def test_stored_runs_with_other_task_settings_are_rerun_for_the_methods_they_change(tiny_results, tmp_path, monkeypatch, executed_runs):
    """A run file is named by task, method, seed, step and budget; its task settings are checked on resume."""
    source, _ = tiny_results
    folder = tmp_path / "changed"
    shutil.copytree(source / "runs", folder / "runs")
    task = dataclasses.replace(TINY.tasks[0], zo_settings={"fisher_period": 7})  # read only by ZONP's Fisher
    executed = executed_runs()
    run_suite(dataclasses.replace(TINY, tasks=(task,)), folder)
    assert executed and {spec.method for spec in executed} == {"ZONP"}


def test_ablation_runs_are_distinct_files_and_its_table_counts_late_divergences():
    from comparisons import ablation

    pairs = ablation.specs("equalization")
    assert len({spec.key for _, spec in pairs}) == len(pairs) == len(ablation.SETTINGS) * 5
    records = {}
    for index, (setting, spec) in enumerate(pairs):
        final = 3.0 if index == 0 else 0.1  # the first run ends far above its best checkpoint
        curve = [{"train_loss": 0.5}, {"train_loss": 0.09}, {"train_loss": final}]
        records[spec.key] = {"row": {"loss": final, "queries": 100, "fisher_queries": 10 * (setting.method == "ZONP")}, "curve": curve}
    rows = ablation.table(pairs, records).splitlines()[2:]
    assert len(rows) == len(ablation.SETTINGS)
    assert "| 1 of 5 |" in rows[0] and all("| 0 of 5 |" in row for row in rows[1:])
    assert rows[0].endswith("| 10.0 % |") and rows[-1].endswith("| 0.0 % |")


def test_a_seeds_pretrained_model_is_stored_once_and_gives_the_same_run(tmp_path, monkeypatch):
    from nevergrad_zonp.tasks import base

    task = TaskSpec("equalization", standard_suite().tasks[0].build, kwargs={"n_train": 200, "n_test": 100},
                    metric="ser", maximize=False, pretrain_epochs=2)
    trained = []
    real = base.pretrain
    monkeypatch.setattr(execution, "pretrain", lambda *args, **kwargs: trained.append(1) or real(*args, **kwargs))
    uncached = execute_run(RunSpec(task, "ZOI", 0, 0.01, 300, 2, "final"))
    cache = str(tmp_path / "pretrained")
    first = execute_run(RunSpec(task, "ZOI", 0, 0.01, 300, 2, "final", pretrained_cache=cache))
    second = execute_run(RunSpec(task, "ZONP", 0, 0.03, 300, 2, "final", pretrained_cache=cache))
    again = execute_run(RunSpec(task, "ZOI", 0, 0.01, 300, 2, "final", pretrained_cache=cache))
    assert len(trained) == 2  # without the cache, then once for seed 0
    assert len(list((tmp_path / "pretrained").iterdir())) == 1
    assert _algorithmic(first["row"]) == _algorithmic(uncached["row"]) == _algorithmic(again["row"])
    assert second["row"]["initial_loss"] == first["row"]["initial_loss"]
    other_seed = execute_run(RunSpec(task, "ZOI", 1, 0.01, 300, 2, "final", pretrained_cache=cache))
    assert len(trained) == 3 and other_seed["row"]["initial_loss"] != first["row"]["initial_loss"]
    changed = dataclasses.replace(task, pretrain_epochs=1)
    execute_run(RunSpec(changed, "ZOI", 0, 0.01, 300, 2, "final", pretrained_cache=cache))
    assert len(trained) == 4  # other pretraining settings: another file


def test_a_suite_run_in_parts_reports_all_of_them(tiny_results, tmp_path):
    source, expected = tiny_results
    folder = tmp_path / "parts"
    shutil.copytree(source / "runs", folder / "runs")
    run_suite(TINY.restricted_to(methods=["ZOI"]), folder)
    results = run_suite(TINY.restricted_to(methods=["ZONP"]), folder)
    assert set(results["optimizer_name"]) == {"ZONP"}
    merged = pd.read_csv(folder / "results.csv")
    machine = list(MACHINE_COLUMNS)
    key = ["optimizer_name", "phase", "seed", "step_size"]
    pd.testing.assert_frame_equal(
        merged.drop(columns=machine).sort_values(key).reset_index(drop=True),
        expected.drop(columns=machine).sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )
    tuning = json.loads((folder / "tuning.json").read_text())
    assert set(tuning["digits"]) == {"ZONP", "ZOI"}
    assert json.loads((folder / "settings.json").read_text())["methods"] == ["ZOI", "ZONP"]
    assert "ZOI" in write_report(folder).read_text()
    # another suite run into the same folder (as update-rule into standard's) keeps this suite's record
    other = dataclasses.replace(TINY.restricted_to(methods=["ZOI"]), name="tiny-other")
    run_suite(other, folder)
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["name"] == "tiny-other" and settings["methods"] == ["ZOI"]
    assert settings["other_suites"][TINY.name]["methods"] == ["ZOI", "ZONP"]
    run_suite(TINY.restricted_to(methods=["ZONP"]), folder)  # back to the first suite: its parts merged again
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["name"] == TINY.name and settings["methods"] == ["ZOI", "ZONP"]
    assert list(settings["other_suites"]) == ["tiny-other"]


def test_the_compact_fisher_study_runs_the_same_protocol_with_the_rank_and_storage_overrides():
    from comparisons import ablation

    pairs = ablation.specs("equalization", study="compact")
    assert len({spec.key for _, spec in pairs}) == len(pairs) == len(ablation.COMPACT_SETTINGS["equalization"]) * 5
    overrides = [spec.task.zo_settings for _, spec in pairs]
    legacy = {"direction_stream": "legacy"}  # the stream the studies' stored runs were drawn with
    sampled = {"fisher_refresh": "sampled"}  # the studies' base rule on equalization
    assert {"fisher_period": 160, "fisher_rank": 16, **sampled, **legacy} in overrides
    assert {"fisher_period": 160, "fisher_storage": "float16", **sampled, **legacy} in overrides
    assert {"fisher_period": 160, "fisher_rank": 64, "fisher_refresh": "per_block", **legacy} in overrides
    assert all(spec.method == "ZONP" for _, spec in pairs)


def test_a_stored_learned_run_is_reused_only_with_the_weights_it_was_made_with(monkeypatch):
    from comparisons import methods

    suite = standard_suite().restricted_to(["equalization"], ["ZOL2L"])
    spec = RunSpec(task=suite.tasks[0], method="ZOL2L", seed=0, step_size=0.03, budget=30_000, checkpoints=10,
                   phase="final")
    folder = Path(__file__).resolve().parents[2] / "comparisons" / "reported" / "standard" / "runs"
    stored = json.loads((folder / f"{spec.key}.json").read_text())
    assert storage.same_run(stored, spec)  # made with the shipped weights
    retrained = dataclasses.replace(methods.METHODS["ZOL2L"], fingerprint=lambda: {"weights_sha256": "0" * 16})
    monkeypatch.setitem(methods.METHODS, "ZOL2L", retrained)
    monkeypatch.setitem(storage.METHODS, "ZOL2L", retrained)
    assert not storage.same_run(stored, spec)


@pytest.mark.parametrize("method", ["ZONP", "ZOI", "ZOco"])
def test_a_stored_run_is_reused_only_with_the_direction_stream_it_was_drawn_with(method):
    suite = standard_suite().restricted_to(["equalization"], [method])
    task = suite.tasks[0]
    assert task.zo_settings["direction_stream"] == "legacy"  # the reported runs' stream, pinned
    folder = Path(__file__).resolve().parents[2] / "comparisons" / "reported" / "standard" / "runs"
    tuning = json.loads((folder.parent / "tuning.json").read_text())["equalization"][method]
    spec = RunSpec(task=task, method=method, seed=0, step_size=tuning["chosen"], budget=30_000, checkpoints=10,
                   phase="final")
    stored = json.loads((folder / f"{spec.key}.json").read_text())
    assert "direction_stream" not in stored["settings"]  # made before the setting: legacy
    assert storage.same_run(stored, spec)
    on_default = dataclasses.replace(
        spec, task=dataclasses.replace(task, zo_settings={k: v for k, v in task.zo_settings.items() if k != "direction_stream"})
    )
    # ZO-co draws coordinates, not Gaussians: the same run on either stream
    assert storage.same_run(stored, on_default) == (method == "ZOco")
    redrawn = dict(stored, settings=dict(stored["settings"], direction_stream="torch"))  # as a run on the default records it
    assert storage.same_run(redrawn, on_default)
    assert storage.same_run(redrawn, spec) == (method == "ZOco")


def test_runs_are_submitted_longest_first_by_the_times_seen_for_their_task_and_method(tmp_path):
    import concurrent.futures

    class Recording(concurrent.futures.Executor):
        def __init__(self):
            self.order = []

        def submit(self, fn, spec):
            self.order.append((spec.method, spec.seed))
            future = concurrent.futures.Future()
            future.set_result({"key": spec.key, "row": {"elapsed_time": {"ZOI": 1.0, "ZONP": 3.0, "SNES": 9.0}[spec.method]}})
            return future

    task = TINY.tasks[0]
    specs = [RunSpec(task, method, seed, 0.01, 100, 2, "final") for method in ("ZOI", "ZONP", "SNES") for seed in (0, 1)]
    executor = Recording()
    runs = Runs(tmp_path, executor, None, None)
    (tmp_path / storage.RUNS_DIR).mkdir()
    runs.run(specs[:3])  # nothing seen yet: the given order
    assert executor.order == [("ZOI", 0), ("ZOI", 1), ("ZONP", 0)]
    executor.order.clear()
    later = [dataclasses.replace(spec, seed=spec.seed + 10) for spec in specs[:4]]  # ZOI 10, 11 and ZONP 10, 11
    runs.run(later + specs[4:] + specs[3:4])  # seen: ZOI 1 s, ZONP 3 s; SNES never seen
    assert executor.order == [("SNES", 0), ("SNES", 1), ("ZONP", 10), ("ZONP", 11), ("ZONP", 1), ("ZOI", 10), ("ZOI", 11)]


def test_the_update_rule_suite_reuses_the_standard_suites_adam_runs_and_runs_natural_directions_with_sgd():
    from comparisons.methods import METHODS
    from comparisons.suites import SUITES

    suite = SUITES["update-rule"]()
    standard = standard_suite()
    assert [task.name for task in suite.tasks] == ["equalization", "copying"]
    assert suite.methods == ("ZONP", "ZOI", "ZONPSGD", "ZOSGD")
    assert (suite.tuning_seeds, suite.step_ranges) == (standard.tuning_seeds, standard.step_ranges)
    assert suite.seeds == (0, 1, 2, 3, 4)
    folder = Path(__file__).resolve().parents[2] / "comparisons" / "reported" / "standard" / "runs"
    for task in suite.tasks:
        for method, step in (("ZONP", 0.0173), ("ZOI", 0.0173 if task.name == "copying" else 0.003)):
            spec = RunSpec(task=task, method=method, seed=0, step_size=step, budget=task.budget or suite.budget,
                           checkpoints=suite.checkpoints, phase="final")
            assert storage.same_run(json.loads((folder / f"{spec.key}.json").read_text()), spec), spec.key
    optimizer = METHODS["ZONPSGD"].build(10, 0.003, 50)(parametrization=50, budget=100)
    assert (optimizer._config.sampler, optimizer._config.update, optimizer._config.lr) == ("natural", "sgd", 0.003)


def test_the_fisher_line_gives_the_share_over_the_runs_and_its_range_per_run():
    from comparisons.report import fisher_line

    runs = pd.DataFrame(
        {
            "optimizer_name": ["ZONP"] * 3 + ["ZOI"],
            "blocks": [2] * 4,
            "blocks_with_fisher": [2, 2, 2, 0],
            "fisher_queries": [4230, 4380, 4528, 0],
            "queries": [30000] * 4,
        }
    )
    line = fisher_line(runs)
    assert "2 of 2 blocks estimated" in line and "14.6 % of the queries (14.1-15.1 % per run)." in line
    assert "not the regime" not in line  # the limit applies to the share over the runs
    same = fisher_line(runs.assign(fisher_queries=[3960, 3960, 3960, 0]))
    assert "13.2 % of the queries (13.2 % in every run)." in same
    over = fisher_line(runs.assign(fisher_queries=[6000, 6000, 6000, 0]))
    assert "more than 15 % of the queries" in over


def test_the_run_command_counts_every_run_grid_extensions_and_reused_ones_included(tiny_results, tmp_path, monkeypatch, capsys):
    from comparisons import __main__ as cli
    from comparisons import suites

    source, results = tiny_results
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    monkeypatch.setitem(suites.SUITES, "quick", lambda: TINY)
    monkeypatch.setattr(cli, "SUITES", suites.SUITES)
    cli.main(["run", "--suite", "quick", "--out", str(folder), "--workers", "1"])
    extensions = len(results) - TINY.num_runs
    expected = f"{len(results)} runs ({TINY.num_runs} planned, {extensions} for grid extensions; {len(results)} already in {folder})"
    assert expected in capsys.readouterr().out


def test_the_registrys_zonp_is_the_standard_suites_zonp_up_to_the_tasks_own_settings():
    import nevergrad as ng

    from comparisons.methods import METHODS

    for task in standard_suite().tasks:
        suite_settings = METHODS["ZONP"].effective_settings(task.num_directions, 0.0173, 564, task.zo_settings)["config"]
        registry = dict(ng.optimizers.registry["ZONP"].config())
        own = {"num_directions": task.num_directions, "lr": 0.0173, **task.zo_settings}  # what a task sets
        registry.update(own)
        registry.pop("direction_stream")  # (compared on its own)
        assert registry == suite_settings, task.name
    paper = ng.optimizers.registry["ZONPPaper"].config()
    assert (paper["fisher_refresh"], paper["lr_schedule"]) == ("sampled", "constant")


@pytest.mark.parametrize("dimension, budget, rule", [(564, 30_000, "per_block"), (3169, 24_000, "per_block"),
                                                     (2654, 200_000, "per_block"), (2654, 5_000, "sampled")])
def test_the_registrys_automatic_refresh_rule_is_per_block_on_the_standard_suites_budgets(dimension, budget, rule):
    import nevergrad as ng

    optimizer = ng.optimizers.registry["ZONP"](parametrization=dimension, budget=budget)
    assert optimizer.fisher_refresh == rule


def test_a_stored_run_made_before_a_default_changed_is_not_reused():
    suite = standard_suite().restricted_to(["equalization"], ["ZONP"])
    spec = RunSpec(task=suite.tasks[0], method="ZONP", seed=0, step_size=0.0173, budget=30_000, checkpoints=10,
                   phase="final")
    folder = Path(__file__).resolve().parents[2] / "comparisons" / "reported" / "standard" / "runs"
    stored = json.loads((folder / f"{spec.key}.json").read_text())
    assert storage.same_run(stored, spec)
    config = stored["settings"]["optimizer_settings"]["config"]
    older = dict(stored, settings=dict(stored["settings"], optimizer_settings={
        **stored["settings"]["optimizer_settings"], "config": {**config, "rho": 0.2}}))  # made when rho's default was 0.2
    assert not storage.same_run(older, spec)
    unrecorded = dict(stored, settings={k: v for k, v in stored["settings"].items() if k != "optimizer_settings"})
    assert not storage.same_run(unrecorded, spec)  # nothing says which defaults it was made with


def test_the_quick_suite_runs_the_standard_suites_equalization_chip_with_its_tuned_step_sizes():
    quick, standard = quick_suite(), standard_suite()
    tuned = json.loads((Path(__file__).resolve().parents[2] / "comparisons" / "reported" / "standard"
                        / "tuning.json").read_text())["equalization"]
    (task,) = quick.tasks
    assert {name: quick.fixed_step(task, name) for name in quick.methods} == {name: tuned[name]["chosen"] for name in quick.methods}
    (reference,) = (t for t in standard.tasks if t.name == "equalization")
    assert task.zo_settings == {"fisher_period": 200, "fisher_refresh": "per_block"}  # the default stream, not legacy
    assert (task.num_directions, task.pretrain_epochs, task.kwargs) == (
        reference.num_directions, reference.pretrain_epochs, reference.kwargs)
    assert (task.budget, quick.budget, standard.budget) == (None, 15_000, 30_000)


def test_fixed_step_sizes_skip_tuning_and_the_report_states_their_rule_and_the_seed_groups(tmp_path, monkeypatch, executed_runs):
    import dataclasses as dc

    suite = dc.replace(TINY, name="fixed", methods=("ZOI",), seeds=(0, 1, 2), fixed_steps={"digits": {"ZOI": 0.02}},
                       steps_rule="chosen by hand for this test.", seed_groups={"the first two": (0, 1)}, budget=200)
    assert suite.num_runs == 3
    executed = executed_runs()
    results = run_suite(suite, tmp_path)
    assert [spec.phase for spec in executed] == ["final"] * 3 and set(results.step_size) == {0.02}
    report = write_report(tmp_path).read_text()
    assert "Step sizes not tuned here: chosen by hand for this test." in report
    assert "Not tuned here: ZOI (lr = 0.02)" in report
    assert "Seeds 0, 1 alone (the first two):" in report
    with pytest.raises(ValueError, match="steps_rule"):
        dc.replace(suite, steps_rule="")
    with pytest.raises(ValueError, match="seed group"):
        dc.replace(suite, seed_groups={"other": (7,)})


def test_the_frontier_suite_runs_the_optical_classifier_at_k_16_and_32_and_on_the_mnist_folders_given(tmp_path):
    from comparisons.suites import ONN_METHODS, frontier_suite

    digits_only = frontier_suite()
    assert [task.name for task in digits_only.tasks] == ["equalization", "copying", "digits", "onn16", "onn32"]
    write_mnist(tmp_path / "mnist", np.random.default_rng(0), n_train=12, n_test=6)
    write_mnist(tmp_path / "fashion", np.random.default_rng(1), n_train=12, n_test=6)
    suite = frontier_suite(mnist=tmp_path / "mnist", fashion_mnist=tmp_path / "fashion")
    onn = [task for task in suite.tasks if task.name.startswith("onn")]
    assert [task.name for task in onn] == ["onn16", "onn32", "onn16_mnist", "onn32_mnist", "onn16_fashion_mnist", "onn32_fashion_mnist"]
    assert all(task.methods == ONN_METHODS and task.budget == 15_000 and task.pretrain_epochs == 10 for task in onn)
    for spec in onn[2:]:  # the data sets' tasks read the folders given, and carry the spec's name into the results
        task = spec.build(seed=0, **spec.kwargs)
        assert task.name == spec.name and len(task.train[0]) == 12 and len(task.test[0]) == 6
    # the standard tasks are unchanged by the data folders
    assert suite.tasks[:3] == digits_only.tasks[:3] and suite.seeds == (5, 6, 7, 8, 9)


def test_a_data_folder_for_a_suite_that_does_not_read_it_is_refused_naming_the_option(tmp_path):
    from comparisons import __main__ as cli

    with pytest.raises(SystemExit, match="--mnist is read by the frontier suite"):
        cli.main(["run", "--suite", "standard", "--mnist", str(tmp_path), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="--cifar10 is read by the paper suite"):
        cli.main(["run", "--suite", "frontier", "--cifar10", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
