"""The Bernoulli log-probability: its grouped softplus sum against float64 references."""

import numpy as np
import pytest
import tensorflow as tf

from vizoo.layers import BernoulliLikelihood
from vizoo.layers.bernoulli_likelihood import sum_softplus


def _reference(logits):
    return np.sum(np.logaddexp(0.0, np.asarray(logits, np.float64)), axis=-1)


@pytest.mark.parametrize("shape", [(3, 4, 784), (5, 37), (2, 16), (7, 1)], ids=str)
@pytest.mark.parametrize("scale", [0.1, 5.0, 200.0])
def test_value_and_gradient_match_float64(shape, scale):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=shape) * scale).astype(np.float32)
    logits.flat[0], logits.flat[-1] = 1e4, -1e4  # far tails: exp(-|l|) underflows to 0
    value = sum_softplus(tf.constant(logits)).numpy()
    expected = _reference(logits)
    # In nats: float32 rounding of the sum, plus at most one float32 epsilon per factor 1 + exp(-|l|).
    eps = np.finfo(np.float32).eps
    tolerance = 4 * eps * np.sum(np.logaddexp(0.0, logits.astype(np.float64)), axis=-1) + shape[-1] * eps
    assert np.all(np.abs(value - expected) <= tolerance)

    variable = tf.Variable(logits)
    upstream = tf.constant(rng.normal(size=shape[:-1]).astype(np.float32))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(upstream * sum_softplus(variable))
    gradient = tape.gradient(total, variable).numpy()
    sigmoid = 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))
    expected_gradient = upstream.numpy()[..., None].astype(np.float64) * sigmoid
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_unknown_batch_dimensions_and_xla(jit_compile):
    likelihood = BernoulliLikelihood(20)
    likelihood.build((None, 8))
    fn = tf.function(
        lambda x, h: likelihood.log_prob(x, likelihood(h)),
        input_signature=[tf.TensorSpec([None, 20]), tf.TensorSpec([None, None, 8])],
        jit_compile=jit_compile,
    )
    rng = np.random.default_rng(1)
    x = (rng.random((3, 20)) < 0.5).astype(np.float32)
    h = rng.normal(size=(3, 6, 8)).astype(np.float32)
    logits = likelihood(h)["logits"].numpy().astype(np.float64)
    expected = np.sum(x[:, None, :] * logits - np.logaddexp(0.0, logits), axis=-1)
    np.testing.assert_allclose(fn(x, h).numpy(), expected, rtol=0, atol=1e-4)
