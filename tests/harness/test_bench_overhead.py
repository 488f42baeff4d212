"""comparisons/bench_overhead.py: the timing harness of the fast path's overhead (a smoke test, no timing assert)."""

import pytest

from comparisons.bench_overhead import measure


@pytest.mark.parametrize(
    "stand_in, label",
    [({}, "real"), ({"waiting_ms": 2.0}, "waiting 2 ms"), ({"busy_ms": 2.0}, "busy-wait 2 ms")],
)
def test_measure_times_the_forward_apart_with_or_without_a_stand_in(stand_in, label):
    run = measure("digits-q10", "isotropic", fast=True, iterations=3, **stand_in)
    assert run["forward"] == label and run["iterations"] == 3 and run["queries"] == 3 * 11
    assert run["forward_ms"] > 0 and run["overhead_ms"] > 0 and run["loss_ms"] > 0
    if stand_in:  # the stand-in's time is the forward's: at least the 2 ms it waits
        assert run["forward_ms"] >= 2.0


@pytest.mark.parametrize("steady_state", [True, False])
def test_zonp_is_timed_with_a_fisher_factor_on_every_block_unless_asked_for_its_first_period(steady_state):
    run = measure("digits-q10", "natural", fast=True, iterations=2, steady_state=steady_state)
    assert run["blocks"] == 6
    if steady_state:  # every draw of the window solves with a factor, as in a run past its first periods
        assert run["blocks_with_fisher_at_start"] == 6
    else:  # a fresh start (the one-iteration warm-up's budget leaves no room for a refresh)
        assert run["blocks_with_fisher_at_start"] == 0


def test_the_draw_benchmark_runs_and_checks_the_direct_call_against_scipy(monkeypatch, capsys):
    import sys

    from comparisons import bench_natural_draw

    monkeypatch.setattr(sys, "argv", ["bench_natural_draw", "--size", "12", "--directions", "5", "--repeats", "1", "--number", "1"])
    bench_natural_draw.main()
    out = capsys.readouterr().out
    assert "| trtrs |" in out and "| trmm |" in out and "n = 12, Q = 5" in out
