"""Checks of the data given to a model: errors name the argument and the value received.

Arrays are checked eagerly (`check_array`); a `tf.data.Dataset` is checked per
batch as it streams, by asserts that `input_errors()` turns into a ValueError.
Nothing here imports a model, so evaluation and export can use it on their own.
"""

import contextlib

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
    if not isinstance(x_spec, tf.TensorSpec):
        return dataset
    shape = x_spec.shape
    if shape.rank is not None and (shape.rank != 2 or shape[-1] not in (None, num_features)):
        raise ValueError(
            f"{name} must yield batches of shape (batch, {num_features}). "
            f"Received: {name} with element shape {tuple(shape)}"
        )

    def check(x):
        x = tf.cast(x, tf.float32)
        asserts = [
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

    def check_element(*element):
        if len(element) == 1:
            return check(element[0])
        return (check(element[0]),) + element[1:]

    return dataset.map(check_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
