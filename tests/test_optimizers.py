"""vizoo.optimizers.Adam: the Adam update (Kingma & Ba, epsilon outside the square root), fused."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import run_serialization_test
from vizoo.optimizers import Adam


def adam_reference(start, gradients, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Adam in float64 numpy, one update per gradient (the learning rate as Keras holds it: float32)."""
    lr = float(np.float32(lr))
    w, m, v = np.array(start, dtype=np.float64), 0.0, 0.0
    for t, g in enumerate(gradients, start=1):
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        w = w - lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (np.sqrt(v) + epsilon)
    return w


GRADIENTS = [np.linspace(-3.0, 2.0, 6).reshape(2, 3) * (t + 1) ** 0.5 * (-1) ** t for t in range(5)]


def _apply(optimizer, dtype, gradients=GRADIENTS, compiled=False):
    variable = keras.Variable(np.linspace(-1.0, 1.0, 6).reshape(2, 3), dtype=dtype)
    optimizer.build([variable])

    def step(g):
        optimizer.apply([g], [variable])

    step = tf.function(step) if compiled else step
    for g in gradients:
        step(tf.constant(g, dtype=dtype))
    return variable.numpy()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_update_equals_the_float64_reference(compiled):
    expected = adam_reference(np.linspace(-1.0, 1.0, 6).reshape(2, 3), GRADIENTS, lr=0.01)
    # float64 variables: beta_1 and beta_2 are cast to float64, so the update is exact.
    np.testing.assert_allclose(_apply(Adam(0.01), "float64", compiled=compiled), expected, rtol=0, atol=1e-12)
    # float32: within float32 rounding of five steps of size ~0.01.
    np.testing.assert_allclose(_apply(Adam(0.01), "float32", compiled=compiled), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_global_clipnorm_clips_before_the_fused_update(compiled):
    # Each gradient scaled to norm 0.5 (all are larger), then Adam on the clipped gradients.
    clipped = [g * 0.5 / np.linalg.norm(g) for g in GRADIENTS]
    expected = adam_reference(np.linspace(-1.0, 1.0, 6).reshape(2, 3), clipped, lr=0.01)
    fused = _apply(Adam(0.01, global_clipnorm=0.5), "float64", compiled=compiled)
    np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-12)
    assert np.abs(fused - adam_reference(np.linspace(-1.0, 1.0, 6).reshape(2, 3), GRADIENTS, lr=0.01)).max() > 1e-4


def test_amsgrad_falls_back_to_keras_update():
    fused = _apply(Adam(0.01, amsgrad=True), "float32")
    keras_adam = _apply(keras.optimizers.Adam(0.01, amsgrad=True), "float32")
    np.testing.assert_array_equal(fused, keras_adam)


def test_serialization_round_trip_and_compile_string():
    optimizer = Adam(learning_rate=3e-4, beta_2=0.99, epsilon=1e-6)
    restored = run_serialization_test(optimizer)
    assert isinstance(restored, Adam)
    assert restored.get_config() == optimizer.get_config()

    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    model = VAE(input_dim=6, latent_dim=2, hidden_units=[4])
    model.compile(optimizer="adam", loss=IWAELoss(k=2))
    assert isinstance(model.optimizer, Adam) and float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=IWAELoss(k=2))  # an instance is kept as given
    assert isinstance(model.optimizer, keras.optimizers.SGD)
