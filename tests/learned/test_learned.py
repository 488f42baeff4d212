"""ZO-L2L: the coordinate-wise RNNs, the Nevergrad optimizer built on them, meta-training, weights files."""

import warnings

import numpy as np
import pytest
import torch

import nevergrad as ng
import nevergrad_zonp
from nevergrad_zonp.learned import (
    DEFAULT_WEIGHTS,
    SHIPPED_WEIGHTS,
    LearnedZO,
    load_weights,
    query_rnn,
    save_weights,
    update_rnn,
)
from nevergrad_zonp.learned.__main__ import main as cli
from nevergrad_zonp.learned.families import quadratic_family
from nevergrad_zonp.learned.meta import MetaConfig, _ZOValue, meta_train, unroll
from nevergrad_zonp.learned.rnn import query_std
from nevergrad_zonp.optimizers.estimator import zo_gradient

TINY = MetaConfig(epochs_update=12, epochs_query=3, optimizees_per_epoch=4, steps=40, truncation=10, num_directions=5, seed=0)


@pytest.fixture(scope="module")
def fresh_weights(tmp_path_factory):
    """Untrained networks with a visibly non-trivial query output, in a weights file."""
    update, query = update_rnn(0), query_rnn(0)
    with torch.no_grad():
        query.head.weight.mul_(100.0)
    path = tmp_path_factory.mktemp("weights") / "fresh.npz"
    return save_weights(path, update, query, {"made_by": "test"})


@pytest.mark.parametrize("count", [1, 7, 1000])
def test_the_rnns_run_on_any_dimension(count):
    update, query = update_rnn(0), query_rnn(0)
    out, (h, c) = update(torch.randn(count, 1, dtype=torch.float64), update.initial_state(count))
    assert out.shape == (count,) and h.shape == c.shape == (count, 10)
    out, _ = query(torch.randn(count, 2, dtype=torch.float64), query.initial_state(count))
    assert out.shape == (count,)
    std = query_std(out)
    assert torch.mean(std**2).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="features must have shape"):
        update(torch.randn(count, 2, dtype=torch.float64), update.initial_state(count))


def test_weights_files_round_trip_and_bad_files_are_named(tmp_path, fresh_weights):
    update, query, meta = load_weights(fresh_weights)
    assert meta == {"made_by": "test"}
    for loaded, fresh in ((update, update_rnn(0)), (query, query_rnn(0))):
        assert not any(p.requires_grad for p in loaded.parameters())
        assert loaded.cell.weight_ih.shape == fresh.cell.weight_ih.shape
    with pytest.raises(FileNotFoundError, match="no ZO-L2L weights"):
        load_weights(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a ZO-L2L weights file"):
        load_weights(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="shipped weights"):
        LearnedZO(weights=tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        LearnedZO(weights="attack_mnist")
    # broken files: named, with what is wrong, at load time (not a raw zip, pickle or index error)
    good = dict(np.load(fresh_weights))
    (tmp_path / "half.npz").write_bytes(fresh_weights.read_bytes()[: fresh_weights.stat().st_size // 2])
    (tmp_path / "text.npz").write_text("not weights")
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("half.npz", "text.npz", "empty.npz"):
        with pytest.raises(ValueError, match=f"{name} is not a readable ZO-L2L weights file"):
            load_weights(tmp_path / name)
    broken = {
        "nan.npz": {"update.cell.weight_hh": np.full_like(good["update.cell.weight_hh"], np.nan)},
        "vector.npz": {"update.cell.weight_hh": good["update.cell.weight_hh"].ravel()},
        "scale.npz": {"query.input_scale": np.array(-1.0)},
        "metadata.npz": {"metadata": np.frombuffer(b"\xff\xfe", dtype=np.uint8)},
    }
    messages = {
        "nan.npz": "update.cell.weight_hh must hold finite real numbers",
        "vector.npz": "update.cell.weight_hh must be a matrix",
        "scale.npz": "query.input_scale must be positive",
        "metadata.npz": "its metadata entry is not UTF-8 JSON",
    }
    for name, change in broken.items():
        np.savez(tmp_path / name, **{**good, **change})
        with pytest.raises(ValueError, match=f"{name}: {messages[name]}"):
            load_weights(tmp_path / name)


@pytest.mark.parametrize(
    "name, family", [("generic", "quadratic"), ("attack_digits", "attack"), ("equalization", "equalization")]
)
def test_shipped_weights_load_and_say_how_they_were_made(name, family):
    update, query, meta = load_weights(name)
    assert SHIPPED_WEIGHTS[name].is_file() and SHIPPED_WEIGHTS[name].stat().st_size < 20_000
    assert meta["command"].startswith("python -m nevergrad_zonp.learned train")
    assert meta["family"] == family and meta["config"]["seed"] == 0
    assert update.inputs == 1 and query.inputs == 2
    assert DEFAULT_WEIGHTS == SHIPPED_WEIGHTS["generic"]
    optimizer = LearnedZO(weights=name)(parametrization=3, budget=50)
    assert optimizer.update_rule.weights_metadata["family"] == family


def test_a_step_is_the_update_rnn_applied_to_the_unbiased_estimate(fresh_weights):
    dimension = 5
    slope = np.linspace(-1.0, 1.0, dimension)
    optimizer = LearnedZO(weights=fresh_weights, query=False, num_directions=4)(parametrization=dimension, budget=100)
    request = optimizer.ask_iteration()
    losses = (request.theta[None] + request.deltas) @ slope
    optimizer.tell_iteration(request, losses)
    step = 1e-3 / np.sqrt(dimension)
    grad = zo_gradient(float(losses[0]), losses[1:], request.deltas[1:] / step, step, 1.0)
    update, _, _ = load_weights(fresh_weights)
    with torch.no_grad():
        expected, _ = update(torch.from_numpy(grad)[:, None], update.initial_state(dimension))
    np.testing.assert_allclose(optimizer._x, expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_query_rnn_directions_are_used_with_their_probability(fresh_weights, probability):
    param = ng.p.Array(shape=(8,))
    param.random_state.seed(0)
    optimizer = LearnedZO(weights=fresh_weights, query_probability=probability, num_directions=3)(
        parametrization=param, budget=10_000
    )
    for _ in range(6):
        request = optimizer.ask_iteration()
        optimizer.tell_iteration(request, np.sum((request.theta[None] + request.deltas - 0.3) ** 2, axis=1))
    assert optimizer.sampler.num_learned_queries == (6 if probability else 0)
    std = optimizer.sampler.query_std(0)
    assert np.mean(std**2) == pytest.approx(1.0) and np.ptp(std) > 0.05  # a diagonal, not isotropic


def test_the_query_rnn_steps_once_per_learned_update_also_when_iterations_are_asked_ahead(fresh_weights, tmp_path):
    """As in meta-training: one QueryRNN step per UpdateRNN step of a block, however many iterations are asked ahead."""
    loss = lambda x: float(np.sum((x - 0.3) ** 2))  # noqa: E731

    def state_after(ahead: int) -> torch.Tensor:
        param = ng.p.Array(shape=(6,))
        param.random_state.seed(0)
        optimizer = LearnedZO(weights=fresh_weights, query_probability=1.0, num_directions=3)(
            parametrization=param, budget=10_000, num_workers=ahead
        )
        for _ in range(4):  # one iteration in sequence: a history for the QueryRNN to read (zeros leave it at 0)
            candidate = optimizer.ask()
            optimizer.tell(candidate, loss(candidate.value))
        asked = [optimizer.ask() for _ in range(4 * ahead)]  # `ahead` iterations, none told yet
        assert len({c.value.tobytes() for c in asked}) == 1 + 3 * ahead  # `ahead` iterations from one point
        state = optimizer.sampler.state[0].clone()
        for candidate in asked:
            optimizer.tell(candidate, loss(candidate.value))
        return state, optimizer

    state_one, one = state_after(1)
    state_ahead, ahead = state_after(3)
    # 1 iteration: one QueryRNN step; 3 iterations asked at the same point: still one step
    # (before, three steps on the same input), and all of them used the QueryRNN's output
    assert bool(state_one.abs().max() > 0)
    torch.testing.assert_close(state_ahead, state_one, rtol=0, atol=0)
    assert ahead.sampler.num_learned_queries == 4 and ahead.num_steps == 2  # the iterations asked ahead but one were dropped
    # the next iteration, after the update, reads the new history: a second step
    candidate = ahead.ask()
    assert not torch.equal(ahead.sampler.state[0], state_ahead)
    ahead.tell(candidate, loss(candidate.value))
    # dump/load keeps the bookkeeping
    ahead.dump(tmp_path / "l2l.pkl")
    loaded = type(ahead).load(tmp_path / "l2l.pkl")
    torch.testing.assert_close(loaded.sampler.history.outputs[0], ahead.sampler.history.outputs[0], rtol=0, atol=0)


def test_query_std_is_what_the_next_iteration_uses_and_a_recovery_reads_afresh(fresh_weights):
    loss = lambda values: np.sum((values - 0.3) ** 2, axis=1)  # noqa: E731
    param = ng.p.Array(shape=(4,))
    param.random_state.seed(0)
    optimizer = LearnedZO(weights=fresh_weights, query_probability=1.0, num_directions=3)(parametrization=param, budget=10**4)
    for _ in range(3):  # a history
        request = optimizer.ask_iteration()
        optimizer.tell_iteration(request, loss(request.theta[None] + request.deltas))
    # an iteration whose queries all fail: no update, so the block's QueryRNN output is kept
    request = optimizer.ask_iteration()
    optimizer.tell_iteration(request, np.r_[loss(request.theta[None])[:1], np.full(3, np.nan)])
    announced = optimizer.sampler.query_std(0)
    state = optimizer.sampler.state[0].clone()
    request = optimizer.ask_iteration()
    np.testing.assert_array_equal(request.deltas[1:] / (1e-3 / 2), optimizer._iterations[request.index].directions)
    torch.testing.assert_close(optimizer.sampler.state[0], state, rtol=0, atol=0)  # not stepped again
    np.testing.assert_allclose(announced, query_std(optimizer.sampler.history.outputs[0]).numpy(), rtol=0, atol=0)
    optimizer.tell_iteration(request, loss(request.theta[None] + request.deltas))  # a step: the next read is new
    assert 0 not in optimizer.sampler.history.outputs
    # a non-finite base loss sends the iterate back and resets the block stepped since: its next read starts from zeros
    request = optimizer.ask_iteration()
    assert 0 in optimizer.sampler.history.outputs
    optimizer.tell_iteration(request, np.full(request.size, np.nan))
    assert optimizer.num_recoveries == 1 and 0 not in optimizer.sampler.history.outputs
    optimizer.ask_iteration()
    update, query, _ = load_weights(fresh_weights)
    with torch.no_grad():
        _, (hidden, _) = query(torch.zeros(4, 2, dtype=torch.float64), query.initial_state(4))
    torch.testing.assert_close(optimizer.sampler.state[0], hidden, rtol=0, atol=0)


def test_the_learned_optimizer_on_a_model_adapter_and_minimize_vectorized():
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 4, generator=gen)
    targets = inputs @ torch.tensor([[0.5], [-0.3], [0.2], [0.1]])
    model = torch.nn.Linear(4, 1)
    adapter = nevergrad_zonp.ModelAdapter(model, (inputs, targets), output="gaussian", batch_size=32)
    optimizer = ng.optimizers.registry["ZOL2L"](parametrization=adapter.parametrization, budget=21 * 30)
    assert nevergrad_zonp.uses_fast_path(optimizer, adapter)
    recommendation = nevergrad_zonp.minimize_vectorized(optimizer, adapter)
    assert adapter.queries == 21 * 30
    assert np.isfinite(adapter.evaluate(recommendation)["loss"])


def test_meta_training_lowers_the_loss_of_unrolled_optimisations():
    family = quadratic_family(dimension=8)
    before, after = update_rnn(TINY.seed), meta_train(family, TINY).update

    def final_loss(update):
        generator = torch.Generator().manual_seed(123)
        return unroll(family(generator, 8), update, None, TINY, generator)["final_loss"]

    assert final_loss(after) < 0.7 * final_loss(before)


def test_meta_training_is_a_function_of_the_seed():
    family = quadratic_family(dimension=6)
    config = MetaConfig(epochs_update=2, epochs_query=2, optimizees_per_epoch=2, steps=20, truncation=10, num_directions=3)
    first, second = meta_train(family, config), meta_train(family, config)
    other = meta_train(family, MetaConfig(**{**config.__dict__, "seed": 1}))
    for a, b, c in zip(first.query.parameters(), second.query.parameters(), other.query.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, c) for a, c in zip(first.update.parameters(), other.update.parameters()))
    assert [r["meta_loss"] for r in first.history] == [r["meta_loss"] for r in second.history]


def test_zo_meta_gradient_estimates_the_autograd_gradient():
    optimizee = quadratic_family(dimension=6)(torch.Generator().manual_seed(0), 1)[0]
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    exact = torch.autograd.grad(optimizee.losses(x).sum(), x)[0]
    u = torch.randn(2, 4000, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    estimated = torch.autograd.grad(_ZOValue.apply(x, optimizee, u, 1e-6).sum(), x)[0]
    cosine = torch.nn.functional.cosine_similarity(exact, estimated, dim=1)
    assert torch.all(cosine > 0.97)
    config = MetaConfig(epochs_update=1, epochs_query=1, optimizees_per_epoch=2, steps=10, truncation=5,
                        num_directions=3, meta_gradient="zo")
    result = meta_train(quadratic_family(dimension=4), config)
    assert all(np.isfinite(r["meta_loss"]) for r in result.history)


def test_meta_settings_are_validated():
    for kwargs, word in [({"steps": 0}, "steps"), ({"meta_loss": "max"}, "meta_loss"), ({"lr_query": -1.0}, "lr_query"),
                         ({"meta_gradient": "fd"}, "meta_gradient")]:
        with pytest.raises(ValueError, match=word):
            MetaConfig(**kwargs)
    for kwargs, word in [({"steps": 4.5}, "steps must be a positive integer"), ({"seed": None}, "seed"),
                         ({"query_penalty": float("inf")}, "query_penalty must be non-negative and finite"),
                         ({"epochs_update": float("nan")}, "epochs_update must be a non-negative integer")]:
        with pytest.raises(ValueError, match=word):
            MetaConfig(**kwargs)
    assert MetaConfig(steps=4.0, optimizees_per_epoch=1.0).steps == 4 and type(MetaConfig(steps=4.0).steps) is int
    for kwargs, word in [({"query_probability": 2.0}, "query_probability"), ({"mu": 0.0}, "mu"),
                         ({"num_directions": 0}, "num_directions"), ({"block_selection": "x"}, "block_selection"),
                         ({"num_directions": float("nan")}, "num_directions must be a positive integer, got nan"),
                         ({"max_block_size": float("inf")}, "max_block_size must be a positive integer, got inf"),
                         ({"num_directions": None}, "num_directions"), ({"update_scale": None}, "update_scale"),
                         ({"update_scale": "1"}, "update_scale"), ({"query_probability": None}, "query_probability")]:
        with pytest.raises(ValueError, match=word):
            LearnedZO(**kwargs)
    with pytest.raises(TypeError, match="query must be True or False, got 'no'"):
        LearnedZO(query="no")


def test_settings_other_than_the_trained_ones_are_warned_of_and_a_relative_weights_path_survives_chdir(
    tmp_path, monkeypatch, fresh_weights
):
    from nevergrad_zonp.learned.optimizer import TrainedSettingsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainedSettingsWarning)
        LearnedZO(weights="generic")(parametrization=3, budget=42)  # trained with Q = 20, mu = 1e-3
    with pytest.warns(TrainedSettingsWarning, match=r"num_directions 20, 10, mu 0.001, 0.01"):
        LearnedZO(weights="generic", num_directions=10, mu=0.01)(parametrization=3, budget=42)
    monkeypatch.chdir(fresh_weights.parent)
    configured = LearnedZO(weights=fresh_weights.name)
    monkeypatch.chdir(tmp_path)
    configured(parametrization=3, budget=42)  # the file is found from anywhere


def test_the_training_command_writes_weights_and_a_plot(tmp_path, capsys):
    out, plot = tmp_path / "w.npz", tmp_path / "meta.png"
    args = ["train", "--family", "quadratic", "--dimension", "5", "--out", str(out), "--plot", str(plot),
            "--epochs-update", "2", "--epochs-query", "1", "--optimizees", "2", "--steps", "10", "--truncation", "5",
            "--no-progress"]
    cli(args)
    _, _, meta = load_weights(out)
    assert plot.stat().st_size > 1000 and len(meta["history"]) == 3 and meta["config"]["steps"] == 10
    cli(["compare", str(out), str(out)])
    assert "largest weight difference: 0" in capsys.readouterr().out
    assert meta["command"] == "python -m nevergrad_zonp.learned " + " ".join(args)  # the arguments given, not sys.argv
    for bad, message in [(["--dimension", "0"], "--dimension must be a positive integer"),
                         (["--threads", "0"], "--threads must be a positive integer"),
                         (["--out", str(tmp_path)], "is a directory"),
                         (["--plot", str(tmp_path / "nowhere" / "p.png")], "does not exist")]:
        with pytest.raises(SystemExit):
            cli(args + bad)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["compare", str(out), str(out), "--tolerance", "nan"])
    assert "--tolerance must be a non-negative number" in capsys.readouterr().err
