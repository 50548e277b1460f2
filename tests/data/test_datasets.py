import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vizoo import data
from vizoo.data import tfds_source, write_idx


def as_array(dataset):
    return np.concatenate([np.asarray(batch) for batch in dataset])


@pytest.fixture
def idx_dir(tmp_path):
    """A small Fashion-MNIST-like directory of gzipped IDX files (60 train, 20 test)."""
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    return tmp_path


@pytest.fixture
def offline(monkeypatch):
    """No test reaches the network: the probe says there is none."""
    monkeypatch.setattr(tfds_source, "network_available", lambda: False)


# ------------------------------------------------------------------ digits


def test_digits_splits_are_fixed_and_disjoint():
    first, second = data.load("digits", seed=0), data.load("digits", seed=5, binarization="none")
    assert (first.num_train, first.num_validation, first.num_test) == (1297, 200, 300)
    assert first.input_dim == 64
    intensities = [as_array(s) for s in (second.train, second.validation, second.test)]
    assert [len(x) for x in intensities] == [1297, 200, 300]
    rows = {row.tobytes() for x in intensities for row in x}
    assert len(rows) > 1700  # a few digits images are exact duplicates in scikit-learn's set
    np.testing.assert_allclose(second.train_mean, intensities[0].mean(0), rtol=1e-5)
    # The same test images whatever the training seed.
    np.testing.assert_array_equal(as_array(second.test), as_array(data.load("digits", seed=0, binarization="none").test))


def test_dynamic_binarization_draws_afresh_each_epoch_and_keeps_the_mean():
    splits = data.load("digits", batch_size=1297, binarization="dynamic", seed=0)
    epoch_1, epoch_2 = as_array(splits.train), as_array(splits.train)
    assert set(np.unique(epoch_1)) == {0.0, 1.0}
    assert not np.array_equal(np.sort(epoch_1, axis=0), np.sort(epoch_2, axis=0))
    draws = np.mean([as_array(splits.train).mean() for _ in range(5)])
    assert draws == pytest.approx(splits.train_mean.mean(), abs=0.005)
    # Evaluation splits are drawn once: the same every pass.
    np.testing.assert_array_equal(as_array(splits.test), as_array(splits.test))


def test_binarizations_are_reproducible_by_seed():
    a = as_array(data.load("digits", batch_size=2000, binarization="dynamic", seed=3).train)
    b = as_array(data.load("digits", batch_size=2000, binarization="dynamic", seed=3).train)
    np.testing.assert_array_equal(a, b)
    static = data.load("digits", batch_size=2000, binarization="static", seed=3)
    x1, x2 = as_array(static.train), as_array(static.train)
    np.testing.assert_array_equal(np.sort(x1, axis=0), np.sort(x2, axis=0))  # same draw, reshuffled
    threshold = as_array(data.load("digits", binarization="threshold").test)
    raw = as_array(data.load("digits", binarization="none").test)
    np.testing.assert_array_equal(threshold, (raw > 0.5).astype("float32"))


# ----------------------------------------------------------- fashion_mnist


def test_fashion_mnist_from_an_idx_directory(idx_dir):
    splits = data.load("fashion_mnist", data_dir=str(idx_dir), binarization="none", batch_size=7)
    assert splits.source == str(idx_dir)
    assert (splits.num_train, splits.num_validation, splits.num_test, splits.input_dim) == (50, 10, 20, 784)
    test = as_array(splits.test)
    expected = data.read_idx(idx_dir / "t10k-images-idx3-ubyte.gz").reshape(20, -1) / 255.0
    np.testing.assert_allclose(test, expected, rtol=1e-6)
    train_and_validation = np.concatenate([as_array(splits.train), as_array(splits.validation)])
    all_train = data.read_idx(idx_dir / "train-images-idx3-ubyte.gz").reshape(60, -1) / 255.0
    assert sorted(map(bytes, train_and_validation.astype("float32"))) == sorted(map(bytes, all_train.astype("float32")))


def test_data_dir_may_start_with_a_tilde(idx_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(idx_dir.parent))
    splits = data.load("fashion_mnist", data_dir=f"~/{idx_dir.name}", binarization="none")
    assert splits.source == str(idx_dir) and splits.num_test == 20


def test_validation_split_is_reproducible_by_seed(idx_dir):
    def validation(seed):
        return as_array(data.load("fashion_mnist", data_dir=str(idx_dir), binarization="none", seed=seed).validation)

    np.testing.assert_array_equal(validation(1), validation(1))
    assert not np.array_equal(validation(1), validation(2))
    sized = data.load("fashion_mnist", data_dir=str(idx_dir), validation_size=25)
    assert (sized.num_train, sized.num_validation) == (35, 25)
    none = data.load("fashion_mnist", data_dir=str(idx_dir), validation_size=0)
    assert none.validation is None and none.num_train == 60


def test_fashion_mnist_uses_debians_files_when_installed():
    if data.idx.find_split_file(data.DEBIAN_FASHION_MNIST_DIR, "train") is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    splits = data.load("fashion_mnist", binarization="none")
    assert splits.source == data.DEBIAN_FASHION_MNIST_DIR
    assert (splits.num_train, splits.num_validation, splits.num_test) == (50000, 10000, 10000)
    assert 0.28 < float(splits.train_mean.mean()) < 0.29  # Fashion-MNIST's mean intensity


# ------------------------------------------------------------------- TFDS


@pytest.mark.parametrize(
    "name, input_dim, has_validation",
    [("mnist", 784, False), ("binarized_mnist", 784, True), ("omniglot", 784, False), ("cifar10", 3072, False)],
)
def test_tfds_names_through_mock_data(monkeypatch, name, input_dim, has_validation):
    monkeypatch.setattr(tfds_source, "network_available", lambda: True)
    with tfds.testing.mock_data(num_examples=24):
        splits = data.load(name, batch_size=8, binarization="static")
    assert splits.source == f"tfds:{name}" and splits.input_dim == input_dim
    assert splits.num_test == 24
    assert splits.num_validation == (24 if has_validation else 4)
    x = as_array(splits.train)
    assert x.shape[1] == input_dim and set(np.unique(x)) <= {0.0, 1.0}


def test_tfds_dataset_offline_fails_fast_and_says_how_to_get_it(offline, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="network cannot be reached") as error:
        data.load("mnist", data_dir=None)
    assert time.perf_counter() - start < 10
    assert "tfds.load('mnist')" in str(error.value) and "Received: dataset='mnist'" in str(error.value)


def test_fashion_mnist_offline_without_files_names_the_debian_package(offline, monkeypatch, tmp_path):
    monkeypatch.setattr(data.datasets, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist")


def test_store_idx_as_tfds_is_read_back_by_plain_tfds(idx_dir, tmp_path):
    builder = data.store_idx_as_tfds(idx_dir, tmp_path / "tfds", name="fmnist_local")
    images = tfds.as_numpy(tfds.builder_from_directory(builder.data_dir).as_dataset(split="test", batch_size=-1))
    np.testing.assert_array_equal(images["image"][..., 0], data.read_idx(idx_dir / "t10k-images-idx3-ubyte.gz"))
    # ... and by vizoo's loader through TFDS, by name.
    splits = data.load("fmnist_local", data_dir=str(tmp_path / "tfds"), binarization="none")
    assert (splits.num_train + splits.num_validation, splits.num_test, splits.source) == (60, 20, "tfds:fmnist_local")


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "no_such_dataset"}, "Received: dataset='no_such_dataset'"),
        ({"name": "fashion-mnist"}, "Unknown dataset: not a vizoo or TFDS dataset name. Received: dataset='fashion-mnist'"),
        ({"name": ""}, "Received: dataset=''"),
        ({"binarization": "sometimes"}, "Received: binarization='sometimes'"),
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"eval_batch_size": 0}, "Received: eval_batch_size=0"),
        ({"seed": None}, "Received: seed=None"),
        ({"seed": -1}, "Received: seed=-1"),
        ({"seed": 1.5}, "Received: seed=1.5"),
        ({"validation_size": -1}, "Received: validation_size=-1"),
        ({"name": "digits", "validation_size": 5000}, "Received: validation_size=5000"),
        ({"data_dir": "/no/such/dir"}, "Received: data_dir='/no/such/dir'"),
        ({"name": "glue"}, "has no 'image' feature"),
    ],
)
def test_bad_arguments_are_named(offline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load(**kwargs)
