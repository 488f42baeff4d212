"""LPP's layered Fisher: per-module F_u = E_x E_r[g g'] on the ideal model, through ModelAdapter."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from nevergrad_zonp import LayeredPerturbation, ModelAdapter
from nevergrad_zonp.adapters.layered import LayeredModel
from nevergrad_zonp.photonics.mesh import ClementsMesh, clements_phase_count
from nevergrad_zonp.tasks.onn import onn_classifier_task

from support import classification_data, small_classifier


def classifier_adapter(**kwargs) -> ModelAdapter:
    return ModelAdapter(small_classifier(), classification_data(), output="categorical", batch_size=20, **kwargs)


def assert_symmetric_psd(matrix: np.ndarray, size: int) -> None:
    assert matrix.shape == (size, size) and matrix.dtype == np.float64
    assert np.all(np.isfinite(matrix))
    np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-6 * np.abs(matrix).max())  # (float32 products)
    assert np.linalg.eigvalsh(matrix).min() > -1e-5 * np.abs(matrix).max()  # float32 gradients


def linear_fisher_by_hand(out_features: int, in_features: int, inputs: int, draws: int, seed: int) -> np.ndarray:
    """F of y = W x + b from the same random numbers: inputs N(0, I) rescaled to norm sqrt(m), then r ~ N(0, I).

    g = d Re<r, W x + b> / d(W, b) = (r x' flattened row-major, r): computed with plain numpy here.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(inputs, in_features, generator=generator)
    x = (x * (math.sqrt(in_features) / x.norm(dim=1, keepdim=True))).double().numpy()
    r = torch.randn(inputs, draws, out_features, generator=generator).double().numpy()
    grads = np.concatenate([np.einsum("kdi,kj->kdij", r, x).reshape(inputs, draws, -1), r], axis=2)
    grads = grads.reshape(inputs * draws, -1)
    return grads.T @ grads / (inputs * draws)


# ----- (a) real layers ---------------------------------------------------------------------
def test_linear_layers_are_the_layers_of_a_network_without_meshes():
    adapter = classifier_adapter()
    assert adapter.layer_spans() == [(0, 25), (25, 43)]  # Linear(4, 5): 20 + 5, Linear(5, 3): 15 + 3
    layers = adapter.layered_model().layers
    assert [layer.name for layer in layers] == ["0", "2"]  # Tanh has no parameter
    assert [layer.input_shape for layer in layers] == [(4,), (5,)]
    assert not any(layer.input_complex for layer in layers)
    assert adapter.layered_model() is adapter.layered_model()  # built once


def test_a_linear_layers_fisher_is_the_average_of_g_g_over_the_same_draws():
    adapter = classifier_adapter()
    theta = adapter.theta0.copy()
    for layer, (out_features, in_features) in enumerate([(5, 4), (3, 5)]):
        fisher = adapter.layer_fisher(theta, layer, inputs=6, draws=4, seed=3)
        size = out_features * (in_features + 1)
        assert_symmetric_psd(fisher, size)
        np.testing.assert_allclose(fisher, linear_fisher_by_hand(out_features, in_features, 6, 4, 3), rtol=1e-5, atol=1e-6)


def test_a_linear_layers_fisher_does_not_depend_on_its_weights_and_tends_to_the_identity():
    """For y = W x + b: E_r[g g'] = J'J with J independent of (W, b), and E_x[x x'] = I, E_x[x] = 0 on the sphere."""
    adapter = classifier_adapter()
    theta = adapter.theta0.copy()
    fisher = adapter.layer_fisher(theta, 0, inputs=400, draws=50, seed=0)
    moved = theta + np.random.RandomState(0).normal(size=theta.shape)
    np.testing.assert_allclose(adapter.layer_fisher(moved, 0, inputs=400, draws=50, seed=0), fisher, rtol=1e-5, atol=1e-6)
    # the trace: E|r|^2 (|x|^2 + 1) = 5 (4 + 1)
    assert abs(np.trace(fisher) - 25.0) < 0.5
    np.testing.assert_allclose(np.diag(fisher), 1.0, atol=0.25)
    assert np.abs(fisher - np.eye(25)).max() < 0.3
    other = adapter.layer_fisher(theta, 0, inputs=400, draws=50, seed=1)
    assert not np.allclose(other, fisher)  # the seed picks the random inputs and perturbations


def test_a_tanh_layers_fisher_depends_on_the_point():
    """A module with its own nonlinearity: J depends on theta, and so does the Fisher."""

    class Saturating(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(2, 3))

        def forward(self, x):
            return torch.tanh(x @ self.weight.T)

    model = nn.Sequential(Saturating())
    adapter = ModelAdapter(model, (torch.randn(10, 3), torch.randn(10, 2)), output="gaussian", batch_size=5)
    assert adapter.layer_spans() == [(0, 6)]
    small = adapter.layer_fisher(np.zeros(6), 0, inputs=50, draws=20, seed=0)
    large = adapter.layer_fisher(np.full(6, 5.0), 0, inputs=50, draws=20, seed=0)
    assert_symmetric_psd(small, 6) and assert_symmetric_psd(large, 6)
    assert np.trace(large) < 0.1 * np.trace(small)  # saturated: tanh' ~ 0


def test_the_fisher_follows_the_flat_order_of_the_parameters():
    default = classifier_adapter()
    reordered = classifier_adapter(parameters=["0.bias", "0.weight", "2.weight", "2.bias"])
    assert reordered.layer_spans() == [(0, 25), (25, 43)]
    fisher = default.layer_fisher(default.theta0, 0, inputs=5, draws=3, seed=0)
    theta = np.concatenate([default.theta0[20:25], default.theta0[:20], default.theta0[25:]])
    permuted = reordered.layer_fisher(theta, 0, inputs=5, draws=3, seed=0)
    order = np.r_[20:25, 0:20]  # the reordered vector's entries in the default order
    np.testing.assert_allclose(permuted, fisher[np.ix_(order, order)], rtol=1e-6, atol=1e-7)


def test_a_module_whose_parameters_are_not_all_optimized_gets_no_fisher():
    adapter = classifier_adapter(parameters=["0.weight", "2.weight", "2.bias"])
    assert adapter.layer_spans() == [(20, 38)]
    assert_symmetric_psd(adapter.layer_fisher(adapter.theta0, 0, inputs=3, draws=3), 18)


def test_layer_types_choose_the_modules():
    model = small_classifier()
    names = [name for name, _ in model.named_parameters()]
    offsets = [0, 20, 25, 40, 43]
    inputs = classification_data()[0][:2]
    assert LayeredModel(model, names, offsets, inputs).spans == [(0, 25), (25, 43)]
    assert LayeredModel(model, names, offsets, inputs, layer_types=(nn.Tanh,)).spans == []


# ----- (b) photonic layers ------------------------------------------------------------------
class MeshReadout(nn.Module):
    """Real inputs as fields, a Clements mesh, detected powers."""

    def __init__(self, ports: int = 4) -> None:
        super().__init__()
        self.mesh = ClementsMesh(ports, generator=torch.Generator().manual_seed(0))
        self.scale = nn.Parameter(torch.ones(ports))

    def forward(self, x):
        out = self.mesh(torch.complex(x, torch.zeros_like(x)))
        return self.scale * (out.real**2 + out.imag**2)


def test_only_the_mesh_of_a_mesh_model_is_a_layer_and_its_input_is_complex():
    adapter = ModelAdapter(MeshReadout(), (torch.randn(12, 4), torch.randn(12, 4)), output="gaussian", batch_size=6)
    phases = clements_phase_count(4, 4)
    assert adapter.names == ["scale", "mesh.phases"]  # the module's own parameter first
    assert adapter.layer_spans() == [(4, 4 + phases)]  # the readout scale is no layer: a mesh model has meshes only
    (layer,) = adapter.layered_model().layers
    assert layer.name == "mesh" and layer.input_complex and layer.input_shape == (4,)


def test_a_lossless_meshs_fisher_has_diagonal_one_half():
    """|d y / d theta_k| = |z_k| (the field at the phase shifter, unitary after it), E_x |z_k|^2 = 1, r ~ CN(0, 1)."""
    adapter = ModelAdapter(MeshReadout(), (torch.randn(12, 4), torch.randn(12, 4)), output="gaussian", batch_size=6)
    phases = clements_phase_count(4, 4)
    fisher = adapter.layer_fisher(adapter.theta0, 0, inputs=300, draws=40, seed=0)
    assert_symmetric_psd(fisher, phases)
    np.testing.assert_allclose(np.mean(np.diag(fisher)), 0.5, rtol=0.05)
    np.testing.assert_allclose(np.diag(fisher), 0.5, atol=0.15)


@pytest.fixture(scope="module")
def onn_task():
    return onn_classifier_task(seed=0, k=10, n_train=50, n_test=20)


def test_the_optical_classifiers_layers_are_its_three_meshes(onn_task):
    adapter = ModelAdapter.from_task(onn_task, on="model", batch_size=25)
    assert adapter.names[-2:] == ["activations.0.bias", "activations.1.bias"]
    assert adapter.layer_spans() == [(0, 90), (90, 180), (180, 270)]  # the modReLU biases (270..290) are not layers
    layers = adapter.layered_model().layers
    assert [layer.name for layer in layers] == ["meshes.0", "meshes.1", "meshes.2"]
    assert all(layer.input_complex and layer.input_shape == (10,) for layer in layers)
    for index in range(3):
        fisher = adapter.layer_fisher(adapter.theta0, index, inputs=8, draws=4, seed=index)
        assert_symmetric_psd(fisher, 90)
        assert np.trace(fisher) > 0


# ----- (c) the ideal model ----------------------------------------------------------------
def test_an_ideal_model_must_be_a_module_with_the_same_parameters():
    data = classification_data()
    with pytest.raises(ValueError, match="ideal"):
        ModelAdapter(small_classifier(), data, output="categorical", ideal=nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)))
    with pytest.raises(ValueError, match="ideal"):
        ModelAdapter(small_classifier(), data, output="categorical", ideal=nn.Sequential(nn.Linear(4, 5)))
    with pytest.raises(TypeError, match="ideal"):
        ModelAdapter(small_classifier(), data, output="categorical", ideal="model")
    with pytest.raises(TypeError, match="ideal"):
        ModelAdapter(small_classifier(), data, output="categorical", ideal=small_classifier().state_dict())
    twin = small_classifier(seed=1)
    adapter = ModelAdapter(small_classifier(), data, output="categorical", ideal=twin)
    assert adapter.ideal is twin and not twin.training
    plain = classifier_adapter()
    assert plain.ideal is plain.model
    # only the optimized parameters need a twin
    partial = ModelAdapter(small_classifier(), data, output="categorical", parameters=["0.weight"], ideal=nn.Sequential(nn.Linear(4, 5)))
    assert partial.layer_spans() == []  # Linear's bias is not optimized: no layer


def test_the_chip_adapter_takes_its_layer_fisher_from_the_ideal_model_without_queries(onn_task):
    chip = ModelAdapter.from_task(onn_task, on="chip", batch_size=25)
    assert chip.ideal is onn_task.model and chip.model is onn_task.chip
    ideal = ModelAdapter.from_task(onn_task, on="model", batch_size=25)
    on_chip = ModelAdapter(onn_task.chip, onn_task.train, output=onn_task.output, loss=onn_task.loss, batch_size=25, ideal=onn_task.chip)
    theta = chip.theta0 + 0.1 * np.random.RandomState(0).normal(size=chip.dimension)
    before = chip.queries
    fisher = chip.layer_fisher(theta, 1, inputs=10, draws=5, seed=2)
    assert chip.queries == before and chip.sample_forwards == 0
    np.testing.assert_allclose(fisher, ideal.layer_fisher(theta, 1, inputs=10, draws=5, seed=2), rtol=1e-6, atol=1e-9)
    chip_fisher = on_chip.layer_fisher(theta, 1, inputs=10, draws=5, seed=2)
    assert_symmetric_psd(chip_fisher, 90)
    assert np.abs(chip_fisher - fisher).max() > 1e-4 * np.abs(fisher).max()  # the chip's fabrication errors show
    # the chip's mesh really has errors, the ideal one none
    assert not torch.allclose(onn_task.chip.meshes[1].splitter_angles, onn_task.model.meshes[1].splitter_angles)


def test_lpp_on_the_chip_refreshes_layers_and_lowers_the_training_loss(onn_task):
    adapter = ModelAdapter.from_task(onn_task, on="chip", batch_size=25)
    adapter.parametrization.random_state = np.random.RandomState(0)
    opt = LayeredPerturbation(num_directions=4, max_block_size=64, layer_period=10, layer_inputs=4, layer_draws=4)(
        adapter.parametrization, budget=200
    )
    start = adapter.evaluate()["loss"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no inactive-layers warning, nothing else
        recommendation = opt.minimize(adapter)
    schedule = opt._parts.curvature
    assert schedule.num_refreshes > 0 and schedule.num_rejected == 0
    assert set(opt.sampler.covariances) <= {0, 1, 2} and opt.sampler.covariances
    assert opt.num_ask == 200 == adapter.queries  # the Fishers cost no query
    assert adapter.evaluate(recommendation.value)["loss"] < start


def test_lpp_runs_on_a_model_with_an_embedding():
    class Embedded(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embedding = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 2)

        def forward(self, tokens):
            return self.head(self.embedding(tokens))

    gen = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 5, (20,), generator=gen), torch.randint(0, 2, (20,), generator=gen))
    adapter = ModelAdapter(Embedded(), data, output="categorical", batch_size=10)
    adapter.parametrization.random_state = np.random.RandomState(0)
    opt = LayeredPerturbation(num_directions=2, layer_inputs=3, layer_draws=3)(adapter.parametrization, budget=30)
    assert adapter.layer_spans() == [(15, 23)]  # the head; the embedding (fed indices) keeps isotropic directions
    opt.minimize(adapter)
    assert opt.num_ask == 30
