"""Every part of the ZO loop against its contract, in one parametrized table (optimizers/parts.py).

Samplers: ``draw`` gives ``(num, n)`` finite directions (none for ``num = 0``) from the random
state it is given, reproducibly; ``restricted`` zeroes the coordinates it is told are
discrete; ``reset`` and ``covariance`` work on any block; the part pickles with its state.
Update rules: ``step`` moves only its block, ``reset`` makes the next step a first step,
the attributes the loop reads exist; the part pickles with its state.
"""

import pickle

import numpy as np
import pytest

from nevergrad_zonp.learned.parts import LearnedHistory, QueryRNNSampler, UpdateRNNRule
from nevergrad_zonp.learned.rnn import query_rnn, update_rnn
from nevergrad_zonp.optimizers.estimator import BlockAdam, BlockSGD, BlockSignSGD
from nevergrad_zonp.optimizers.parts import Sampler, UpdateRule
from nevergrad_zonp.optimizers.hessian import HessianSampler
from nevergrad_zonp.optimizers.layered import LayeredSampler
from nevergrad_zonp.optimizers.samplers import CoordinateSampler, IsotropicSampler, NaturalSampler

BOUNDS = np.array([0, 5, 12])  # two blocks, of 5 and 7
DIMENSION = int(BOUNDS[-1])


def natural(**settings):
    sampler = NaturalSampler(damping=0.1, smoothing=1.0, **settings)
    rng = np.random.RandomState(0)
    jacobian = rng.normal(size=(7, 3))
    assert sampler.update(1, jacobian @ jacobian.T)  # block 1 has a Fisher, block 0 not
    return sampler


def hessian():
    sampler = HessianSampler(BOUNDS, smoothing=0.1, normalize=False)
    sampler.curvature[:] = np.linspace(0.5, 2.0, DIMENSION)  # a curvature learned on the way
    return sampler


def layered():
    sampler = LayeredSampler(BOUNDS, damping=0.1, smoothing=0.5)
    sampler.set_layers([(3, 10)])  # one layer across the two blocks
    jacobian = np.random.RandomState(1).normal(size=(7, 4))
    assert sampler.update(0, jacobian @ jacobian.T)
    return sampler


SAMPLERS = {
    "isotropic": lambda: IsotropicSampler(),
    "isotropic-legacy-raw": lambda: IsotropicSampler(normalize=False, stream="legacy"),
    "coordinate": lambda: CoordinateSampler(),
    "natural": lambda: natural(),
    "natural-compact-float16": lambda: natural(rank=2, storage="float16"),
    "natural-legacy": lambda: natural(stream="legacy"),
    "hessian": hessian,
    "layered": layered,
    "query-rnn": lambda: QueryRNNSampler(query_rnn(0), LearnedHistory(DIMENSION), BOUNDS, use=True, probability=0.5),
    "query-rnn-off": lambda: QueryRNNSampler(query_rnn(0), LearnedHistory(DIMENSION), BOUNDS, use=False, probability=0.5),
}

RULES = {
    "adam": lambda: BlockAdam(DIMENSION, 2, lr=0.1),
    "sgd": lambda: BlockSGD(DIMENSION, 2, lr=0.1),
    "sign": lambda: BlockSignSGD(DIMENSION, 2, lr=0.1),
    "update-rnn": lambda: UpdateRNNRule(update_rnn(0), LearnedHistory(DIMENSION), DIMENSION, 1.0, {}),
}


def draws(sampler, seed, block=1, num=4):
    start, stop = int(BOUNDS[block]), int(BOUNDS[block + 1])
    return sampler.draw(np.random.RandomState(seed), block, start, stop, num)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_keeps_the_sampler_contract(name):
    sampler = SAMPLERS[name]()
    assert isinstance(sampler, Sampler)
    for block in (0, 1):
        size = int(BOUNDS[block + 1] - BOUNDS[block])
        directions = draws(sampler, seed=3, block=block)
        assert directions.shape == (4, size) and np.all(np.isfinite(directions)) and np.any(directions != 0)
        assert draws(sampler, seed=3, block=block, num=0).shape == (0, size)
        if getattr(sampler, "normalize", False):
            np.testing.assert_allclose(np.linalg.norm(directions, axis=1), np.sqrt(size), rtol=1e-6)
        covariance = sampler.covariance(block, size)
        assert covariance.shape == (size, size)
        np.testing.assert_allclose(covariance, covariance.T, atol=1e-9)
        assert np.linalg.eigvalsh(covariance).min() > -1e-9
        sampler.reset(block, int(BOUNDS[block]), int(BOUNDS[block + 1]))
    # the same state and the same random numbers give the same draws, also after a pickle round trip
    first, copy = SAMPLERS[name](), pickle.loads(pickle.dumps(SAMPLERS[name]()))
    np.testing.assert_array_equal(draws(first, seed=5), draws(copy, seed=5))
    np.testing.assert_array_equal(draws(first, seed=6), draws(copy, seed=6))
    discrete = np.array([True, False, True, True, False, True, True])
    restricted = sampler.restricted(draws(sampler, seed=7), discrete)
    if name != "coordinate":  # a coordinate direction touches one coordinate and is left as it is
        assert np.all(restricted[:, ~discrete] == 0)


@pytest.mark.parametrize("name", RULES)
def test_every_update_rule_keeps_the_update_rule_contract(name):
    rule = RULES[name]()
    assert isinstance(rule, UpdateRule)
    assert isinstance(rule.unbiased_estimate, bool) and isinstance(rule.stale_estimates, bool)
    assert rule.lr is None or rule.lr > 0
    params = np.zeros(DIMENSION)
    grad = np.linspace(-1.0, 1.0, 7)
    rule.step(params, grad, 1, 5, 12, scale=1.0)
    assert np.all(params[:5] == 0) and np.any(params[5:] != 0) and np.all(np.isfinite(params))
    first_step = params[5:].copy()
    restored = pickle.loads(pickle.dumps(rule))
    again, again_restored = params.copy(), params.copy()
    rule.step(again, grad, 1, 5, 12)
    restored.step(again_restored, grad, 1, 5, 12)
    np.testing.assert_array_equal(again, again_restored)  # the state pickles
    rule.reset(1, 5, 12)
    fresh = np.zeros(DIMENSION)
    rule.step(fresh, grad, 1, 5, 12)
    np.testing.assert_allclose(fresh[5:], first_step, rtol=1e-12)  # after a reset, a first step again
    zero = np.zeros(DIMENSION)
    rule.step(zero, grad, 1, 5, 12, scale=0.0)
    assert np.all(zero == 0)  # the scale multiplies the step
