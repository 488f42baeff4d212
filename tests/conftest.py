"""Test-wide settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """One intra-op thread: on a 2-core CI box, OpenMP spin-waits make tiny ops 100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def executed_runs(monkeypatch):
    """Call it to count the specs the harness executes from then on (stored runs it reuses are not counted).

    Returns the list the specs are appended to; runs in worker processes are not seen (the
    one-thread executor runs them in this process).
    """

    def start() -> list:
        from comparisons import dispatch

        executed = []
        real = dispatch.execute_run

        def counting(spec):
            executed.append(spec)
            return real(spec)

        monkeypatch.setattr(dispatch, "execute_run", counting)
        return executed

    return start
