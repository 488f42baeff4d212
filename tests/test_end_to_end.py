"""End to end: ZONP trains a classifier on scikit-learn's digits through the model adapter."""

import nevergrad as ng
import torch
from sklearn.datasets import load_digits

import nevergrad_zonp


def digits_split():
    inputs, labels = load_digits(return_X_y=True)
    inputs = torch.tensor(inputs / 16.0, dtype=torch.float32)
    labels = torch.tensor(labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    return (inputs[train], labels[train]), (inputs[test], labels[test])


def test_zonp_trains_a_digits_classifier_and_counts_every_query(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))
    train, test = digits_split()
    adapter = nevergrad_zonp.ModelAdapter(model, train, output="categorical", batch_size=100)
    made = []
    original = nevergrad_zonp.ModelAdapter._call

    def spy(self, params, in_dims, count, inputs):
        made.append(count)
        return original(self, params, in_dims, count, inputs)

    monkeypatch.setattr(nevergrad_zonp.ModelAdapter, "_call", spy)
    before = adapter.evaluate(data=test)["accuracy"]
    made.clear()  # evaluate() is reporting, not training: it is not counted
    opt = ng.optimizers.registry["ZONP"](parametrization=adapter.parametrization, budget=8000)
    opt.parametrization.random_state.seed(0)
    rec = opt.minimize(adapter)
    adapter.load(rec)
    with torch.no_grad():
        after = float((model(test[0]).argmax(1) == test[1]).double().mean())
    assert before < 0.2 and after > 0.5  # chance is 0.1
    assert opt.num_fisher_updates > 0
    assert adapter.queries == sum(made) == opt.num_queries <= 8000
    assert adapter.sample_forwards == 100 * adapter.queries
