"""The tasks through the adapter: the papers' protocol (backprop on the ideal model, ZO on the chip)."""

import warnings

import numpy as np
import torch

import nevergrad_zonp
from nevergrad_zonp.photonics.chip import FabricationErrors, transfer_parameters
from nevergrad_zonp.tasks.base import pretrain
from nevergrad_zonp.tasks.copying import copying_task
from nevergrad_zonp.tasks.equalization import equalization_task
from nevergrad_zonp.tasks.images import digits_task


def zo_on_chip(task, budget: int, lr: float, seed: int = 0):
    adapter = nevergrad_zonp.ModelAdapter.from_task(task, on="chip", batch_size=100, seed=seed)
    before = adapter.evaluate(data=task.train)
    opt = nevergrad_zonp.ZerothOrder(num_directions=8, lr=lr, fisher_period=20)(
        parametrization=adapter.parametrization, budget=budget
    )
    opt.parametrization.random_state.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = nevergrad_zonp.minimize_vectorized(opt, adapter)
    return before, adapter.evaluate(rec, data=task.train), opt


def test_zonp_lowers_the_chip_loss_of_a_pretrained_equalizer():
    task = equalization_task(seed=0, n_train=1000, n_test=500, errors=FabricationErrors(beta=1.0))
    pretrain(task, epochs=8, lr=1e-2, batch_size=50)
    transfer_parameters(task.model, task.chip)
    ideal = task.evaluate(split="train")["loss"]
    before, after, opt = zo_on_chip(task, budget=2500, lr=3e-3)
    assert before["loss"] > ideal  # the hidden errors hurt the pretrained point
    assert after["loss"] < 0.8 * before["loss"]
    assert opt.num_fisher_updates > 0


def test_zonp_lowers_the_chip_loss_of_a_pretrained_copying_rnn():
    task = copying_task(delay=10, seed=0, n_train=600, n_test=200, ports=16)
    pretrain(task, epochs=4, lr=5e-3, batch_size=50)
    transfer_parameters(task.model, task.chip)
    before, after, opt = zo_on_chip(task, budget=2000, lr=3e-3)
    assert after["loss"] < before["loss"]
    assert opt.num_fisher_updates > 0


def test_zonp_improves_digits_accuracy_from_a_random_start():
    torch.manual_seed(0)
    task = digits_task(seed=0)
    adapter = nevergrad_zonp.ModelAdapter.from_task(task, on="model", batch_size=100)
    before = adapter.evaluate(data=task.test)["accuracy"]
    opt = nevergrad_zonp.ZerothOrder(num_directions=16, lr=0.01)(parametrization=adapter.parametrization, budget=5000)
    opt.parametrization.random_state.seed(0)
    rec = nevergrad_zonp.minimize_vectorized(opt, adapter)
    after = adapter.evaluate(rec, data=task.test)["accuracy"]
    assert before < 0.2 and after > 0.5
    assert np.isfinite(adapter.evaluate(rec)["loss"])
