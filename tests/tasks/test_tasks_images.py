"""Image tasks: model sizes, data-file formats and their errors, vmapped evaluation, backprop sanity."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from nevergrad_zonp.tasks.base import pretrain
from nevergrad_zonp.tasks.cifar import (
    MIXER_SIZES,
    cifar10_task,
    load_cifar10,
    mixer,
    mixer_parameter_count,
    mixer_task,
    read_cifar_batch,
    synthetic_cifar10,
)
from nevergrad_zonp.tasks.images import (
    SmallCNN,
    digits_task,
    load_digits_28,
    load_mnist,
    max_pool_2x2,
    mnist_task,
    read_idx,
)
from support import write_idx, write_mnist




def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def write_cifar(folder: Path, rng: np.random.Generator, n: int = 3) -> dict[str, dict[bytes, object]]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


# --- model sizes -----------------------------------------------------------------------


def test_cnn_has_the_papers_size() -> None:
    assert n_params(SmallCNN()) == 2654
    assert 2500 <= n_params(SmallCNN()) <= 2700
    assert SmallCNN()(torch.zeros(4, 1, 28, 28)).shape == (4, 10)


def test_max_pool_2x2_equals_max_pool2d_under_vmap_and_with_nan() -> None:
    x = torch.randn(3, 5, 4, 24, 24)
    x[0, 1, 2, 3, 4] = float("nan")
    expected = torch.stack([F.max_pool2d(row, 2) for row in x])
    torch.testing.assert_close(max_pool_2x2(x), expected, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(torch.vmap(max_pool_2x2)(x), expected, equal_nan=True, rtol=0, atol=0)
    assert torch.isnan(max_pool_2x2(x)[0, 1, 2, 1, 2])
    with pytest.raises(ValueError, match="even spatial sizes"):
        max_pool_2x2(torch.zeros(1, 1, 5, 4))


@pytest.mark.parametrize("size,expected", [("small", 33_642), ("large", 1_706_762)])
def test_mixer_parameter_counts(size: str, expected: int) -> None:
    assert mixer_parameter_count(**MIXER_SIZES[size]) == expected
    assert n_params(mixer(size)) == expected


def test_mixer_patches_are_the_strided_convolution() -> None:
    model = mixer("small")
    images = torch.rand(2, 3, 32, 32)
    weight = model.embedding.weight.reshape(32, 3, 4, 4)
    conv = F.conv2d(images, weight, model.embedding.bias, stride=4).flatten(2).transpose(1, 2)
    captured = []
    handle = model.embedding.register_forward_hook(lambda _m, _i, out: captured.append(out))
    model(images)
    handle.remove()
    torch.testing.assert_close(captured[0], conv, rtol=1e-5, atol=1e-5)


# --- vmapped evaluation of several parameter settings ------------------------------------


@pytest.mark.parametrize(
    "build,shape", [(SmallCNN, (4, 1, 28, 28)), (lambda: mixer("small"), (4, 3, 32, 32))], ids=["cnn", "mixer"]
)
def test_vmapped_functional_call_equals_loop(build, shape) -> None:
    torch.manual_seed(0)
    model = build()
    settings = {
        name: p.detach() + 0.1 * torch.randn(3, *p.shape) for name, p in model.named_parameters()
    }
    inputs = torch.rand(shape)
    batched = torch.vmap(lambda params, x: functional_call(model, params, (x,)), in_dims=(0, None))(settings, inputs)
    loop = torch.stack(
        [functional_call(model, {k: v[i] for k, v in settings.items()}, (inputs,)) for i in range(3)]
    )
    assert batched.shape == (3, 4, 10)
    torch.testing.assert_close(batched, loop, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(loop[0], loop[1])


@pytest.mark.parametrize(
    "build,shape", [(SmallCNN, (4, 1, 28, 28)), (lambda: mixer("small"), (4, 3, 32, 32))], ids=["cnn", "mixer"]
)
def test_vmap_with_only_some_parameters_varied(build, shape) -> None:
    """A block perturbation varies a few tensors and passes the rest unbatched (``in_dims`` None)."""
    torch.manual_seed(0)
    model = build()
    names = [name for name, _ in model.named_parameters()]
    varied = set(names[len(names) // 2 : len(names) // 2 + 2])
    settings = {
        name: p.detach() + 0.1 * torch.randn(3, *p.shape) if name in varied else p.detach()
        for name, p in model.named_parameters()
    }
    in_dims = {name: 0 if name in varied else None for name in names}
    inputs = torch.rand(shape)
    call = torch.vmap(lambda params, x: functional_call(model, params, (x,)), in_dims=(in_dims, None))
    loop = torch.stack(
        [functional_call(model, {k: v[i] if k in varied else v for k, v in settings.items()}, (inputs,)) for i in range(3)]
    )
    torch.testing.assert_close(call(settings, inputs), loop, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(loop[0], loop[1])


# --- MNIST idx files ----------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_load_exactly(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, np.random.default_rng(0), gz=gz)
    (x_train, y_train), (x_test, y_test) = load_mnist(tmp_path)
    assert x_train.shape == (5, 1, 28, 28) and x_train.dtype == torch.float32
    assert y_test.dtype == torch.int64
    np.testing.assert_array_equal(x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"].astype(np.float32) / 255)
    np.testing.assert_array_equal(x_test[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"].astype(np.float32) / 255)
    np.testing.assert_array_equal(y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_fashion_mnist_in_torchvision_layout(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(1), gz=True)
    task = mnist_task(tmp_path, fashion=True, n_train=2, seed=3)
    assert task.name == "fashion_mnist" and isinstance(task.model, SmallCNN)
    assert len(task.train[0]) == 2 and len(task.test[0]) == 3
    train_labels = arrays["train-labels-idx1-ubyte"]
    assert all(int(y) in train_labels for y in task.train[1])
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    "array,code", [(np.arange(-6, 6, dtype=np.int16).reshape(3, 4), 0x0B), (np.linspace(0, 1, 7).astype(np.float32), 0x0D)]
)
def test_read_idx_other_dtypes(tmp_path: Path, array: np.ndarray, code: int) -> None:
    write_idx(tmp_path / "a.idx", array, code)
    out = read_idx(tmp_path / "a.idx")
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)


def test_mnist_missing_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(0), gz=False)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_mnist_wrong_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(0), gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: expected magic 2051 .* got 2049"):
        load_mnist(tmp_path)


def test_mnist_truncated_pixels(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(0), gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: expected 2352 bytes .* found 2351"):
        load_mnist(tmp_path)


def test_an_idx_header_too_large_to_multiply_in_64_bits_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "forged-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", 0x803, 2**22, 2**21, 2**21))  # 2^64 bytes: 0 once wrapped in int64
    with pytest.raises(ValueError, match=r"forged-idx3-ubyte: expected 18446744073709551616 bytes .* found 0"):
        read_idx(path)


def test_mnist_corrupt_gzip(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(0), gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:12])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: corrupt gzip"):
        load_mnist(tmp_path)


def test_mnist_label_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.random.default_rng(0), gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte: expected 5 labels"):
        load_mnist(tmp_path)


# --- CIFAR-10 batch files ------------------------------------------------------------------


@pytest.mark.parametrize("inner", [False, True])
def test_cifar_batches_load_exactly(tmp_path: Path, inner: bool) -> None:
    batches = write_cifar(tmp_path / "cifar-10-batches-py" if inner else tmp_path, np.random.default_rng(0))
    (x_train, y_train), (x_test, y_test) = load_cifar10(tmp_path)
    assert x_train.shape == (15, 3, 32, 32) and x_test.shape == (3, 3, 32, 32)
    first = batches["data_batch_1"][b"data"]
    # Red plane of image 0, then green: the file stores each image as three 1024-byte planes.
    np.testing.assert_array_equal(x_train[0, 0].numpy(), first[0, :1024].reshape(32, 32).astype(np.float32) / 255)
    np.testing.assert_array_equal(x_train[0, 1].numpy(), first[0, 1024:2048].reshape(32, 32).astype(np.float32) / 255)
    np.testing.assert_array_equal(x_train[12:].reshape(3, -1).numpy() * 255, batches["data_batch_5"][b"data"])
    np.testing.assert_array_equal(y_train[3:6].numpy(), batches["data_batch_2"][b"labels"])
    np.testing.assert_array_equal(y_test.numpy(), batches["test_batch"][b"labels"])
    assert y_train.dtype == torch.int64


def test_cifar_normalisation_uses_training_statistics(tmp_path: Path) -> None:
    write_cifar(tmp_path, np.random.default_rng(0))
    (raw_train, _), (raw_test, _) = load_cifar10(tmp_path)
    (x_train, _), (x_test, _) = load_cifar10(tmp_path, normalize=True)
    torch.testing.assert_close(x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    mean, std = raw_train.mean(dim=(0, 2, 3)), raw_train.std(dim=(0, 2, 3))
    torch.testing.assert_close(x_test, (raw_test - mean[:, None, None]) / std[:, None, None])


def test_cifar_missing_batch(tmp_path: Path) -> None:
    write_cifar(tmp_path, np.random.default_rng(0))
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    "content,message",
    [
        (pickle.dumps({b"images": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}), "keys b'data' and b'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}), r"shape \(N, 3072\)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "expected 2 integer labels"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), r"labels in 0\.\.9"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})[:-20], "could not unpickle"),
    ],
    ids=["keys", "shape", "label-count", "label-range", "truncated"],
)
def test_cifar_corrupt_batch(tmp_path: Path, content: bytes, message: str) -> None:
    write_cifar(tmp_path, np.random.default_rng(0))
    (tmp_path / "data_batch_4").write_bytes(content)
    with pytest.raises(ValueError, match=f"data_batch_4: .*{message}") as error:
        load_cifar10(tmp_path)
    assert "expected" in str(error.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_pickled_with_any_protocol_load(tmp_path: Path, protocol: int) -> None:
    batches = write_cifar(tmp_path, np.random.default_rng(0))
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(batches["data_batch_2"], protocol=protocol))
    empty = {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}
    (tmp_path / "empty").write_bytes(pickle.dumps(empty, protocol=protocol))
    (x_train, y_train), _ = load_cifar10(tmp_path)
    np.testing.assert_array_equal(x_train[3:6].reshape(3, -1).numpy() * 255, batches["data_batch_2"][b"data"])
    images, labels = read_cifar_batch(tmp_path / "empty")
    assert images.shape == (0, 3072) and labels.shape == (0,)


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, ("pwned",))


def test_cifar_reader_runs_no_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load"):
        read_cifar_batch(tmp_path / "evil")
    assert not (tmp_path / "pwned").exists()


def test_cifar10_task_from_files(tmp_path: Path) -> None:
    write_cifar(tmp_path, np.random.default_rng(0))
    task = cifar10_task(tmp_path, n_train=4)
    assert task.name == "cifar10_small" and task.output == "categorical"
    assert len(task.train[0]) == 4 and len(task.test[0]) == 3
    assert n_params(task.model) == 33_642
    result = task.evaluate()
    assert set(result) == {"loss", "accuracy"} and np.isfinite(result["loss"])


# --- tasks and backprop sanity -------------------------------------------------------------


def test_digits_preparation_and_split() -> None:
    (x_train, y_train), (x_test, y_test) = load_digits_28(seed=0)
    assert x_train.shape == (1347, 1, 28, 28) and x_test.shape == (450, 1, 28, 28)
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    assert float(x_train[..., :4, :].abs().max()) == 0.0 and float(x_train[..., 24:].abs().max()) == 0.0
    counts = torch.bincount(y_test, minlength=10)
    assert int(counts.min()) >= 43 and int(counts.max()) <= 47
    (x_again, _), _ = load_digits_28(seed=0)
    assert torch.equal(x_train, x_again)


def test_task_model_seeding_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    train, test = synthetic_cifar10(n_train=4, n_test=4)
    first = mixer_task(train, test, seed=5)
    assert torch.equal(torch.rand(1), expected)
    second = mixer_task(train, test, seed=5)
    other = mixer_task(train, test, seed=6)
    assert torch.equal(first.model.head.weight, second.model.head.weight)
    assert not torch.equal(first.model.head.weight, other.model.head.weight)


def test_digits_cnn_backprop_reaches_90_percent() -> None:
    task = digits_task(seed=0)
    assert task.evaluate()["accuracy"] < 0.3
    losses = pretrain(task, epochs=4, lr=1e-2, batch_size=50)
    assert losses[-1] < losses[0]
    assert task.evaluate()["accuracy"] >= 0.9
