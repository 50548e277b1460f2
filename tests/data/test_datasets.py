import numpy as np
import pytest

from vizoo import data


def as_array(dataset):
    return np.concatenate([np.asarray(batch) for batch in dataset])


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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "nope"}, "Received: dataset='nope'"),
        ({"binarization": "sometimes"}, "Received: binarization='sometimes'"),
        ({"batch_size": 0}, "Received: batch_size=0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load(**kwargs)
