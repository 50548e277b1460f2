"""Checks of the data given to a model: errors name the argument and the value received.

Arrays are checked eagerly (`check_array`); a `tf.data.Dataset` is checked per
batch as it streams, by asserts that `input_errors()` turns into a ValueError.
Nothing here imports a model, so evaluation and export can use it on their own.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from vizoo.utils import check_array

# Marks vizoo's own in-pipeline input checks so that fit/evaluate/predict can
# turn them into a ValueError instead of a TensorFlow traceback.
_CHECK_MARK = "vizoo input check: "


def check_data(data, name, num_features, unit_interval=False):
    """Check data for a model with `num_features` inputs; return it (arrays as float32, datasets wrapped).

    Args:
        data: numpy-convertible array, `tf.data.Dataset` of x, (x, y) or
            (x, y, sample_weight), a Keras (x,)/(x, y) tuple, or None. Other
            inputs (generators, PyDataset) pass as they are.
        name: the argument's name in error messages.
        num_features: int, the feature size every example must have.
        unit_interval: bool, values must lie in [0, 1] (Bernoulli likelihood).
    """
    if data is None:
        return None
    if isinstance(data, tf.data.Dataset):
        return _checked_dataset(data, name, num_features, unit_interval)
    if isinstance(data, tuple):  # Keras' (x,), (x, y) or (x, y, sample_weight)
        return (check_data(data[0], name, num_features, unit_interval),) + data[1:] if data else data
    if _is_numeric_leaf(data):
        return check_array(data, name, num_features, unit_interval)
    return data


def check_input_shape(shape, num_features, owner):
    """Raise a ValueError unless `shape` is `(batch, num_features)` (None entries allowed)."""
    shape = tuple(shape)
    if len(shape) != 2 or shape[-1] not in (None, num_features):
        raise ValueError(
            f"{owner} expects inputs of shape (batch, {num_features}) "
            f"(input_dim={num_features}). Received: inputs.shape={shape}"
        )


def _is_numeric_leaf(data):
    if isinstance(data, (np.ndarray, tf.Tensor)) or hasattr(data, "__array__"):
        return True
    if isinstance(data, list):
        try:
            return np.asarray(data).dtype != object
        except ValueError:
            return False
    return False


def _checked_dataset(dataset, name, num_features, unit_interval):
    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    if not isinstance(x_spec, tf.TensorSpec):  # a dict of features (straight from TFDS), ragged, sparse, ...
        raise ValueError(
            f"{name} must yield dense batches x of shape (batch, {num_features}), or tuples (x, ...); map a dataset "
            f"of feature dicts to its images first, e.g. data.map(lambda e: tf.reshape(e['image'], ...)). "
            f"Received: {name} with elements {x_spec!r}"
        )
    shape = x_spec.shape
    if shape.rank is not None and (shape.rank != 2 or shape[-1] not in (None, num_features)):
        raise ValueError(
            f"{name} must yield batches of shape (batch, {num_features}). "
            f"Received: {name} with element shape {tuple(shape)}"
        )

    def check(x):
        x = tf.cast(x, tf.float32)
        asserts = []
        if shape.rank is None or shape[-1] is None:  # width not fixed by the spec: each batch is checked
            asserts.append(
                tf.debugging.Assert(
                    tf.logical_and(tf.equal(tf.rank(x), 2), tf.equal(tf.shape(x)[-1], num_features)),
                    [
                        f"{_CHECK_MARK}{name} must yield batches of shape (batch, {num_features}). "
                        f"Received: a batch of {name} with shape (",
                        tf.strings.reduce_join(tf.strings.as_string(tf.shape(x)), separator=", "),
                        ")",
                    ],
                )
            )
        asserts += [
            tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(x)),
                [f"{_CHECK_MARK}{name} must be finite. Received: a batch of {name} containing non-finite values"],
            )
        ]
        if unit_interval:
            low, high = tf.reduce_min(x), tf.reduce_max(x)
            asserts.append(
                tf.debugging.Assert(
                    tf.logical_and(low >= 0.0, high <= 1.0),
                    [
                        f"{_CHECK_MARK}{name} must lie in [0, 1] for the Bernoulli likelihood. "
                        f"Received: a batch of {name} with min=",
                        low,
                        ", max=",
                        high,
                    ],
                )
            )
        with tf.control_dependencies(asserts):
            return tf.identity(x)

    def check_weights(x, weights):
        if weights is None:
            return weights
        if weights.shape.rank == 0:  # (known when the check is traced: a scalar has no batch axis to compare)
            raise ValueError(
                f"sample_weight of {name} must hold one weight per example of its batch. Received: a scalar "
                "sample_weight in each batch"
            )
        assert_length = tf.debugging.Assert(
            tf.logical_and(tf.rank(weights) >= 1, tf.equal(tf.shape(weights)[0], tf.shape(x)[0])),
            [
                f"{_CHECK_MARK}sample_weight of {name} must hold one weight per example of its batch. "
                "Received: a batch of ",
                tf.shape(x)[0],
                " examples with sample_weight of shape (",
                tf.strings.reduce_join(tf.strings.as_string(tf.shape(weights)), separator=", "),
                ")",
            ],
        )
        w = tf.cast(weights, tf.float32)
        assert_values = tf.debugging.Assert(
            tf.reduce_all(tf.logical_and(tf.math.is_finite(w), w >= 0.0)),
            [
                f"{_CHECK_MARK}sample_weight of {name} must be finite and non-negative numbers. Received: a batch "
                "with sample_weight min=",
                tf.reduce_min(w),
                ", max=",
                tf.reduce_max(w),
            ],
        )
        with tf.control_dependencies([assert_length, assert_values]):
            return tf.identity(weights)

    def check_element(*element):
        if len(element) == 1:
            return check(element[0])
        if len(element) == 3:  # (x, y, sample_weight)
            return (check(element[0]), element[1], check_weights(element[0], element[2]))
        return (check(element[0]),) + element[1:]

    return dataset.map(check_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def check_not_empty(data, name):
    """Raise a ValueError if `data` (an array or a `tf.data.Dataset` of known size) holds no examples."""
    if isinstance(data, tf.data.Dataset):
        if int(data.cardinality()) == 0:
            raise ValueError(f"{name} holds no batches: training needs at least one. Received: {name}, a dataset of cardinality 0")
    elif isinstance(data, np.ndarray) and data.ndim >= 1 and len(data) == 0:
        raise ValueError(f"{name} holds no examples: training needs at least one. Received: {name}.shape={data.shape}")


def check_sample_weight(sample_weight, x, name="sample_weight"):
    """Raise a ValueError unless array `sample_weight` holds one finite, non-negative weight per example of array `x`."""
    if sample_weight is None or not isinstance(x, np.ndarray):
        return sample_weight
    weights = np.asarray(sample_weight)
    if weights.ndim not in (1, 2) or len(weights) != len(x) or (weights.ndim == 2 and weights.shape[1] != 1):
        raise ValueError(
            f"{name} must hold one weight per example of x ({len(x)}), shape ({len(x)},). "
            f"Received: {name}.shape={weights.shape}"
        )
    if not np.issubdtype(weights.dtype, np.number) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"{name} must be finite and non-negative numbers. Received: {name} with dtype={weights.dtype}")
    return weights


class NoBatchesCheck(keras.callbacks.Callback):
    """Raise a ValueError when an epoch of `fit` ran no batch (data that yielded nothing), before the epoch is saved."""

    def __init__(self, name="x"):
        super().__init__()
        self.name = name
        self.batches = 0
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs += 1
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def _check(self):
        if self.epochs and not self.batches:
            raise ValueError(
                f"{self.name} yielded no batches: training needs at least one. Received: {self.name}, empty"
            )

    def on_epoch_end(self, epoch, logs=None):
        self._check()

    def on_train_end(self, logs=None):
        self._check()


@contextlib.contextmanager
def input_errors():
    """Turn a failed vizoo input check inside TensorFlow into a ValueError."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        text = str(error.message)
        if _CHECK_MARK not in text:
            raise
        # TensorFlow prints the assert's data as "[part] [part] ...": join the parts.
        text = text[text.index(_CHECK_MARK) + len(_CHECK_MARK) :].split("\n")[0]
        text = "".join(text.rstrip().removesuffix("]").split("] ["))
        raise ValueError(text.strip()) from None
