"""Flow posteriors (IAF, planar, radial) and the Gaussians: the shared posterior checks, and each flow's own."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import run_posterior_test
from vizoo.layers import (
    MADE,
    DiagonalGaussianPosterior,
    FullCovarianceGaussianPosterior,
    IAFPosterior,
    PlanarFlowPosterior,
    RadialFlowPosterior,
)
from vizoo.layers.planar_flow_posterior import planar_step
from vizoo.layers.radial_flow_posterior import radial_inverse, radial_step

LATENT_DIM, FEATURES = 3, 4

POSTERIORS = {
    "diagonal": lambda **kw: DiagonalGaussianPosterior(LATENT_DIM, **kw),
    "full_covariance": lambda **kw: FullCovarianceGaussianPosterior(LATENT_DIM, **kw),
    "iaf_gated": lambda **kw: IAFPosterior(LATENT_DIM, num_steps=3, hidden_units=[8, 8], **kw),
    "iaf_affine": lambda **kw: IAFPosterior(LATENT_DIM, num_steps=2, hidden_units=[8], gated=False, **kw),
    "iaf_context_head": lambda **kw: IAFPosterior(LATENT_DIM, num_steps=2, hidden_units=[8], context_units=5, **kw),
    "planar": lambda **kw: PlanarFlowPosterior(LATENT_DIM, num_steps=4, **kw),
    "radial": lambda **kw: RadialFlowPosterior(LATENT_DIM, num_steps=4, **kw),
}


def built(make, dtype="float64", seed=0):
    posterior = make(dtype=dtype)
    posterior.build((None, FEATURES))
    h = np.random.default_rng(seed).normal(size=(5, FEATURES)).astype(dtype)
    return posterior, posterior(h), h


@pytest.mark.parametrize("name", sorted(POSTERIORS))
def test_every_posterior_passes_the_shared_checks(name):
    # log q against the float64 autodiff Jacobian, log_prob at the samples, one noise slice per
    # sample, gradients, serialization, XLA and mixed precision (tests/helpers.py).
    run_posterior_test(POSTERIORS[name], mean_is_expectation=name in ("diagonal", "full_covariance"))


@pytest.mark.parametrize("make", [IAFPosterior, PlanarFlowPosterior, RadialFlowPosterior])
def test_zero_steps_is_the_diagonal_posterior(make):
    flow = make(LATENT_DIM, num_steps=0)
    flow.build((None, FEATURES))
    diagonal = DiagonalGaussianPosterior(LATENT_DIM)
    diagonal.build((None, FEATURES))
    for name in ("loc_layer", "log_scale_layer"):
        getattr(flow.base, name).set_weights(getattr(diagonal, name).get_weights())
    h = np.random.default_rng(3).normal(size=(5, FEATURES)).astype("float32")
    eps = np.random.default_rng(4).normal(size=(5, 7, LATENT_DIM)).astype("float32")
    for actual, expected in zip(flow.transform(flow(h), eps), diagonal.transform(diagonal(h), eps)):
        np.testing.assert_array_equal(actual, expected)


def test_iaf_inverse_undoes_forward():
    posterior, params, _ = built(POSTERIORS["iaf_gated"])
    z_0 = np.random.default_rng(5).normal(size=(5, 2, LATENT_DIM))
    bijector = posterior.bijector(params)
    np.testing.assert_allclose(bijector.inverse(bijector.forward(z_0)), z_0, atol=1e-10)


def test_one_iaf_step_is_autoregressive_in_made_order():
    posterior, params, _ = built(lambda **kw: IAFPosterior(4, num_steps=1, hidden_units=[16], **kw))
    z_0 = tf.constant(np.random.default_rng(6).normal(size=(5, 4)))
    with tf.GradientTape() as tape:
        tape.watch(z_0)
        z_1 = posterior.flow(params, z_0[:, None, :])[0][:, 0, :]
    jacobian = tape.batch_jacobian(z_1, z_0).numpy()
    assert np.all(np.triu(jacobian, k=1) == 0)  # z_1[i] depends on z_0[j] for j <= i only
    assert np.all(np.abs(np.tril(jacobian, k=-1)[:, 1:, :]).sum(axis=(1, 2)) > 0)


def test_iaf_evaluates_each_made_once_per_transform(monkeypatch):
    calls = []
    original = MADE.call
    monkeypatch.setattr(MADE, "call", lambda self, *a, **kw: calls.append(self.name) or original(self, *a, **kw))
    for name in ("iaf_gated", "iaf_affine"):
        posterior, params, _ = built(POSTERIORS[name])
        calls.clear()
        posterior.transform(params, np.zeros((5, 2, LATENT_DIM)))
        assert sorted(calls) == [f"made_{t}" for t in range(posterior.num_steps)]


def test_iaf_depends_on_the_context_and_trains_every_network():
    posterior, _, h = built(POSTERIORS["iaf_gated"])
    eps = np.random.default_rng(7).normal(size=(5, 2, LATENT_DIM))
    params = posterior(h)
    other = dict(params, context=params["context"] + 1.0)  # same base Gaussian, another h
    assert not np.allclose(posterior.transform(params, eps)[0], posterior.transform(other, eps)[0])
    with tf.GradientTape() as tape:
        z, log_qz = posterior.transform(posterior(h), eps)
        objective = tf.reduce_sum(z**2) + tf.reduce_sum(log_qz)
    gradients = tape.gradient(objective, posterior.trainable_weights)
    for weight, gradient in zip(posterior.trainable_weights, gradients):
        assert gradient is not None and np.any(gradient.numpy() != 0), weight.path


def test_gated_iaf_starts_near_the_identity_with_the_forget_bias():
    for forget_bias, expected in ((5.0, True), (-5.0, False)):
        posterior, params, _ = built(lambda **kw: IAFPosterior(LATENT_DIM, 2, [8], forget_bias=forget_bias, **kw))
        z_0 = np.random.default_rng(8).normal(size=(5, 1, LATENT_DIM))
        z_t, _ = posterior.flow(params, z_0)
        # With sigma = sigmoid(s + 5) ~ 0.99 each step nearly keeps z (up to the reversal permutation).
        assert np.allclose(np.asarray(z_t)[..., ::-1], z_0, atol=0.1) == expected


def test_planar_constraint_keeps_the_step_invertible_for_adversarial_parameters():
    z = np.random.default_rng(9).normal(size=(200, 2))
    w = np.array([[3.0, 0.0]])
    u = np.array([[-40.0, 1.0]])  # w.u = -120 would fold the plane without the constraint
    _, log_det = planar_step(z, u, w, np.zeros((1, 1)))
    assert np.all(np.isfinite(log_det))
    # Along w the map is strictly increasing: an invertible step.
    line = np.linspace(-5, 5, 1001)[:, None] * w / 3.0
    moved, _ = planar_step(line, u, w, np.zeros((1, 1)))
    assert np.all(np.diff(np.asarray(moved) @ w[0]) > 0)


def _planar_log_det64(z, u, w, b):
    """log |det| of the planar step by autodiff of the map itself, in float64."""
    z = tf.constant(z, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(z)
        moved, _ = planar_step(z, tf.constant(u, tf.float64), tf.constant(w, tf.float64), tf.constant(b, tf.float64))
    jacobian = tape.batch_jacobian(moved, z)
    return np.linalg.slogdet(jacobian.numpy())[1]


def test_planar_step_with_w_zero_is_a_shift():
    # w = 0 (an encoder's features of a blank image with zero biases): u_hat = u, log det 0, not 0/0.
    z = np.random.default_rng(11).normal(size=(4, 3)).astype("float32")
    u, w, b = np.array([[0.5, -1.0, 2.0]], "float32"), np.zeros((1, 3), "float32"), np.array([[0.3]], "float32")
    moved, log_det = planar_step(z, u, w, b)
    np.testing.assert_allclose(moved, z + u * np.tanh(0.3), rtol=1e-6)
    np.testing.assert_array_equal(log_det, np.zeros(4, "float32"))


def test_planar_log_det_has_no_cancellation_in_float32():
    # w.u = -30 and tanh(w.z + b) = 0: 1 + (1 - tanh^2)(softplus(w.u) - 1) is 1 - 1 in float32 (log det -inf);
    # the step's exact log det is log softplus(-30), about -30.
    z = np.zeros((1, 2), "float32")
    u, w, b = np.array([[-30.0, 0.0]], "float32"), np.array([[1.0, 0.0]], "float32"), np.zeros((1, 1), "float32")
    _, log_det = planar_step(z, u, w, b)
    # (The Jacobian's own determinant cancels too, even in float64: 1 + (1e-13 - 1) keeps 3 digits.)
    np.testing.assert_allclose(log_det, [np.log(np.log1p(np.exp(-30.0)))], rtol=1e-6)
    # Elsewhere too, the closed form is the map's own Jacobian.
    rng = np.random.default_rng(12)
    z, u, w, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) * 3, rng.normal(size=(6, 3)), rng.normal(size=(6, 1))
    np.testing.assert_allclose(planar_step(z, u, w, b)[1], _planar_log_det64(z, u, w, b), rtol=1e-10)


def test_radial_inverse_undoes_the_step():
    rng = np.random.default_rng(10)
    z, z_ref = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    for a, b in ((0.3, -2.0), (-1.0, 3.0), (2.0, 0.0), (5.0, -20.0)):
        a_, b_ = np.full((50, 1), a), np.full((50, 1), b)
        y, _ = radial_step(z, z_ref, a_, b_)
        np.testing.assert_allclose(radial_inverse(y, z_ref, a_, b_), z, atol=1e-10)


def _radial_log_det64(z, z_ref, a, b):
    """log |det| of the radial step by autodiff of the map itself, in float64."""
    z = tf.constant(z, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(z)
        moved, _ = radial_step(z, *(tf.constant(v, tf.float64) for v in (z_ref, a, b)))
    return np.linalg.slogdet(tape.batch_jacobian(moved, z).numpy())[1]


def test_radial_log_det_is_the_jacobian_and_does_not_cancel_in_float32():
    rng = np.random.default_rng(13)
    z, z_ref = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    a, b = rng.normal(size=(6, 1)) * 2, rng.normal(size=(6, 1)) * 2
    np.testing.assert_allclose(radial_step(z, z_ref, a, b)[1], _radial_log_det64(z, z_ref, a, b), rtol=1e-10)
    # softplus(b) = 2e-9 much smaller than alpha = softplus(5): beta h = -1 + O(1e-9) near z_ref, so
    # 1 + beta h is 0 in float32 (log det -inf) where the exact value is about
    # 2 log(1.2e-8 / 5) + log(1.1e-7 / 25) = -59.
    z, z_ref = np.array([[1e-8, 0.0, 0.0]]), np.zeros((1, 3))
    a, b = np.array([[5.0]]), np.array([[-20.0]])
    exact = _radial_log_det64(z, z_ref, a, b)
    assert -60 < exact[0] < -58
    _, log_det32 = radial_step(*(v.astype("float32") for v in (z, z_ref, a, b)))
    np.testing.assert_allclose(log_det32, exact, rtol=1e-5)


def test_radial_step_at_its_reference_point_has_finite_gradients():
    # z = z_ref (e.g. a zero-initialised encoder's mean and reference point): r = 0, where |z - z_ref|
    # has no gradient; the step's own derivatives there are finite.
    z = tf.zeros((2, 3))
    a, b = tf.constant([[0.5], [-1.0]]), tf.constant([[1.0], [0.2]])
    with tf.GradientTape() as tape:
        tape.watch([z, a, b])
        moved, log_det = radial_step(z, tf.zeros((2, 3)), a, b)
        total = tf.reduce_sum(moved) + tf.reduce_sum(log_det)
    for gradient in tape.gradient(total, [z, a, b]):
        assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(log_det, _radial_log_det64(np.zeros((2, 3)), np.zeros((2, 3)), a.numpy(), b.numpy()), rtol=1e-5)


def test_flow_serving_outputs_and_no_closed_form_density():
    posterior, params, _ = built(POSTERIORS["planar"])
    served = posterior.serving_outputs(params)
    assert sorted(served) == ["base_loc", "base_log_scale", "loc"]
    np.testing.assert_allclose(served["loc"], posterior.transform(params, np.zeros((5, 1, LATENT_DIM)))[0][:, 0])
    assert posterior.kl_divergence(params, prior=None) is None and not posterior.has_log_prob
    with pytest.raises(NotImplementedError, match="PlanarFlowPosterior has no closed-form"):
        posterior.log_prob(np.zeros((5, LATENT_DIM)), params)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: IAFPosterior(3, num_steps=-1), "Received: num_steps=-1"),
        (lambda: IAFPosterior(3, hidden_units=[]), "Received: hidden_units=\\[\\]"),
        (lambda: IAFPosterior(3, context_units=0), "Received: context_units=0"),
        (lambda: IAFPosterior(3, gated="False"), "gated must be True or False. Received: gated='False'"),
        (lambda: IAFPosterior(3, forget_bias=float("nan")), "Received: forget_bias=nan"),
        (lambda: IAFPosterior(3, forget_bias=None), "forget_bias must be a finite number. Received: forget_bias=None"),
        (lambda: IAFPosterior(3, num_steps=0, activation="bogus"), "Received: activation='bogus'"),
        (lambda: PlanarFlowPosterior(3, num_steps=1.5), "Received: num_steps=1.5"),
        (lambda: RadialFlowPosterior(0), "Received: latent_dim=0"),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
