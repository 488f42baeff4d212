"""The attack suite of comparisons/attack.py, on a few tiny attacks (the real one: README)."""

import json

import pandas as pd
import pytest

from comparisons import attack


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("attack")
    args = ["--out", str(out), "--methods", "ZOL2L-attack", "ZOI", "ZOSGD", "--images", "2", "--tuning-images", "1",
            "--iterations", "4", "--max-extensions", "1", "--quality-images", "1"]
    attack.main(args)
    return out, args


def test_the_attack_suite_tunes_reports_and_measures_the_estimator(tiny_suite):
    out, _ = tiny_suite
    tuning = json.loads((out / "tuning.json").read_text())
    assert set(tuning) == {"ZOL2L-attack", "ZOI", "ZOSGD"}
    for tuned in tuning.values():
        assert tuned["chosen"] in tuned["grid"] and len(tuned["grid"]) in (3, 4)
        assert tuned["extensions"] <= 1
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 3 * 2 and set(results.split) == {"test"}
    assert (results.queries == 4 * 21).all()  # equal budgets
    report = (out / "report.md").read_text()
    for method in ("ZOL2L-attack", "ZOI", "ZOSGD"):
        assert f"| {method} |" in report
    assert "QueryRNN" in report and (out / "attack_curves.png").stat().st_size > 1000
    quality = pd.read_csv(out / "estimator_quality.csv")
    assert {"cosine_query", "cosine_isotropic"} <= set(quality.columns) and (quality.cosine_query.abs() <= 1).all()


def test_a_folder_is_resumed_and_other_settings_are_refused(tiny_suite, monkeypatch):
    out, args = tiny_suite
    calls = []
    monkeypatch.setattr(attack, "run_attack", lambda *a, **k: calls.append(a))
    attack.main(args)  # every attack is on disk: nothing runs again
    assert not calls
    other = list(args)
    other[other.index("--iterations") + 1] = "5"
    with pytest.raises(SystemExit, match="holds runs made with"):
        attack.main(other)


def test_one_attack_spends_its_budget_and_reports_its_result():
    record = attack.run_attack("ZONP", 0.01, "train", 0, iterations=80)
    assert record["queries"] == 80 * 21 and record["fisher_queries"] == 785  # one refresh of the 784-pixel block
    assert record["curve"][0][0] == 0 and record["curve"][-1][0] == record["queries"]
    assert set(record) >= {"loss", "success", "l1", "l2", "margin"}
