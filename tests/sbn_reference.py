"""A sigmoid belief network small enough to enumerate: the exact reference for discrete-latent estimators.

Two stochastic layers of two binary units (16 configurations of h) over five binary pixels.
Every expectation under q(h|x) is a finite sum, so log p(x), the ELBO, the k-sample bound
E[log 1/k sum_j w_j] (a sum over all 16^k k-tuples) and their gradients are exact: the
probabilities are differentiable functions of the parameters and autodiff goes through the sum.
"""

import itertools

import numpy as np
import tensorflow as tf

from vizoo.models import SigmoidBeliefNetwork

INPUT_DIM = 5
LATENT_DIMS = [2, 2]
DATA = np.array([[1, 0, 1, 1, 0], [0, 0, 1, 0, 1], [1, 1, 1, 0, 0]], dtype="float32")


def tiny_sbn(seed=0, latent_dims=LATENT_DIMS, hidden_units=(), scale=1.5):
    """The tiny SBN with every weight drawn from N(0, scale^2) (far from any optimum; q far from p(h|x))."""
    model = SigmoidBeliefNetwork(
        input_dim=INPUT_DIM, latent_dims=latent_dims, hidden_units=hidden_units, baseline_hidden_units=[3], seed=seed
    )
    model.build((None, INPUT_DIM))
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(scale * rng.normal(size=variable.shape).astype("float32"))
    return model


def configurations(num_units):
    """Every binary vector of `num_units` entries, `[2^num_units, num_units]`."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=num_units)), dtype="float32")


def enumerated_terms(model, x):
    """(log w, log q) at every configuration h, each `[batch, 2^n]`, as differentiable tensors."""
    h = configurations(sum(model.latent_dims))
    z = tf.broadcast_to(h, [len(x)] + list(h.shape))  # [batch, C, n]
    log_q = model.posterior.log_prob(z, {"logits": model.encode(x)["logits"][:, None, :]})
    log_joint = model.likelihood.log_prob(x, model.decode(z[..., : model.latent_dims[0]])) + model.log_prior(z)
    return log_joint - log_q, log_q


def exact_log_px(model, x):
    """log p(x) = logsumexp_h log p(x, h), `[batch]`."""
    log_w, log_q = enumerated_terms(model, x)
    return tf.reduce_logsumexp(log_w + log_q, axis=1)


def exact_bound(model, x, k):
    """E_{h_1..h_k ~ q} log 1/k sum_j w(h_j), `[batch]`, summed over all (2^n)^k tuples."""
    log_w, log_q = enumerated_terms(model, x)
    tuples = np.array(list(itertools.product(range(log_w.shape[1]), repeat=k)))  # [T, k]
    log_w_tuples = tf.gather(log_w, tuples, axis=1)  # [batch, T, k]
    log_q_tuples = tf.reduce_sum(tf.gather(log_q, tuples, axis=1), axis=2)  # [batch, T]
    bound = tf.reduce_logsumexp(log_w_tuples, axis=2) - np.log(k)
    return tf.reduce_sum(tf.exp(log_q_tuples) * bound, axis=1)


def exact_baseline_error(model, x):
    """E_q (l - b(x) - c)^2 with l = log w: what NVIL's baseline network minimizes, `[batch]`."""
    log_w, log_q = enumerated_terms(model, x)
    baseline = model._baseline(x) + model.signal_mean  # [batch, 1]
    return tf.reduce_sum(tf.exp(log_q) * tf.square(log_w - baseline), axis=1)


def numpy_log_px(model, x):
    """log p(x) from the weights alone, in float64 numpy (linear conditionals: hidden_units=[])."""
    assert not model.hidden_units

    def dense(network):
        layer = network.dense_layers[-1]
        return np.asarray(layer.kernel, "float64"), np.asarray(layer.bias, "float64")

    def log_bernoulli(value, logits):
        return np.sum(value * logits - np.logaddexp(0.0, logits), axis=-1)

    h = configurations(sum(model.latent_dims)).astype("float64")
    h1, h2 = h[:, : model.latent_dims[0]], h[:, model.latent_dims[0] :]
    log_p_h2 = log_bernoulli(h2, np.asarray(model.prior_logits, "float64"))
    kernel, bias = dense(model.prior_networks[0])
    log_p_h1 = log_bernoulli(h1, h2 @ kernel + bias)
    kernel, bias = np.asarray(model.likelihood.logits_layer.kernel, "float64"), np.asarray(
        model.likelihood.logits_layer.bias, "float64"
    )
    log_p_x = log_bernoulli(np.asarray(x, "float64")[:, None, :], (h1 @ kernel + bias)[None])  # [batch, C]
    joint = log_p_x + log_p_h1 + log_p_h2
    top = joint.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True)))[:, 0]


def numpy_log_q(model, x):
    """log q(h|x) at every configuration, `[batch, C]`, in float64 numpy (hidden_units=[])."""

    def dense(network):
        layer = network.dense_layers[-1]
        return np.asarray(layer.kernel, "float64"), np.asarray(layer.bias, "float64")

    h = configurations(sum(model.latent_dims)).astype("float64")
    h1, h2 = h[:, : model.latent_dims[0]], h[:, model.latent_dims[0] :]
    kernel, bias = dense(model.posterior.networks[0])
    logits1 = np.asarray(x, "float64") @ kernel + bias  # [batch, d1]
    log_q1 = np.sum(h1[None] * logits1[:, None] - np.logaddexp(0.0, logits1[:, None]), axis=-1)
    kernel, bias = dense(model.posterior.networks[1])
    logits2 = h1 @ kernel + bias  # [C, d2]
    log_q2 = np.sum(h2 * logits2 - np.logaddexp(0.0, logits2), axis=-1)
    return log_q1 + log_q2[None]
