"""AVB's adversary T(x, z) = <f(x), g(z)> + t_x(x) + t_z(z) + 0.5 ||z||^2, checked against its formula."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import run_serialization_test
from vizoo.layers import Adversary


def _mlp(layers, h):
    for layer in layers:
        h = np.tanh(h @ layer.kernel.numpy() + layer.bias.numpy())
    return h


def _linear(layer, h):
    return h @ layer.kernel.numpy() + layer.bias.numpy()


def test_adversary_is_the_papers_inner_product_form_with_the_explicit_normal_term():
    keras.utils.set_random_seed(0)
    adversary = Adversary(hidden_units=[6, 5], feature_dim=3, activation="tanh", dtype="float64")
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=(4, 7)), rng.normal(size=(4, 3, 2))
    logits = np.asarray(adversary(tf.constant(x), tf.constant(z)))
    assert logits.shape == (4, 3)
    hx, hz = _mlp(adversary.x_layers, x), _mlp(adversary.z_layers, z)  # [4, 5], [4, 3, 5]
    expected = (
        np.einsum("bf,bkf->bk", _linear(adversary.x_features, hx), _linear(adversary.z_features, hz))
        + _linear(adversary.x_term, hx)  # [4, 1]
        + _linear(adversary.z_term, hz)[..., 0]
        + 0.5 * np.sum(z**2, axis=-1)
    )
    np.testing.assert_allclose(logits, expected, atol=1e-12)
    # Every weight gets a gradient.
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(adversary(tf.constant(x), tf.constant(z)) ** 2)
    for weight, gradient in zip(adversary.trainable_weights, tape.gradient(total, adversary.trainable_weights)):
        assert gradient is not None and np.any(np.asarray(gradient) != 0), weight.path


def test_adversary_serializes_and_computes_in_float32_under_mixed_precision():
    adversary = Adversary(hidden_units=[4], feature_dim=2)
    restored = run_serialization_test(adversary)
    x, z = np.ones((2, 3), "float32"), np.ones((2, 1, 2), "float32")
    adversary(x, z), restored(x, z)
    restored.set_weights(adversary.get_weights())
    np.testing.assert_array_equal(np.asarray(restored(x, z)), np.asarray(adversary(x, z)))
    mixed = Adversary(hidden_units=[4], feature_dim=2, dtype="mixed_float16")
    assert mixed(x, z).dtype.name == "float32"
    # Its inputs are not rounded to 16 bits on the way in either: T equals the float32 adversary's.
    rng = np.random.default_rng(0)
    x, z = rng.random((4, 3)).astype("float32"), (3.0 * rng.normal(size=(4, 2, 2)) + 0.123456).astype("float32")
    for policy in ("mixed_float16", "mixed_bfloat16"):
        mixed = Adversary(hidden_units=[4], feature_dim=2, dtype=policy)
        mixed.build((None, 3), (None, None, 2))
        mixed.set_weights(adversary.get_weights())
        np.testing.assert_allclose(np.asarray(mixed(x, z)), np.asarray(adversary(x, z)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"hidden_units": [0]}, "Received: hidden_units=[0]"), ({"feature_dim": 0}, "Received: feature_dim=0"),
     ({"activation": "nope"}, "Received: activation='nope'")],
)
def test_bad_adversary_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", "\\[").replace("]", "\\]")):
        Adversary(**kwargs)
