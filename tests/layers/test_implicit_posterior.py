"""ImplicitPosterior's structures: noise injected in every layer, and the adaptive-contrast sampler with its moments."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import FEATURES, run_posterior_test
from vizoo.layers import ImplicitPosterior


@pytest.mark.slow
def test_noise_injected_in_every_layer_passes_the_shared_posterior_checks():
    posterior, _ = run_posterior_test(
        lambda **kwargs: ImplicitPosterior(3, noise_dim=4, hidden_units=[5, 4], structure="inject", **kwargs)
    )
    # Each hidden layer and the output read [h_l, eps]: widths F + m, 5 + m, 4 + m.
    widths = [layer.kernel.shape[0] for layer in posterior.hidden_layers + [posterior.output_layer]]
    assert widths == [FEATURES + 4, 5 + 4, 4 + 4]
    assert not posterior.has_moments and posterior.noise_shape == (4,)


def test_adaptive_contrast_sampler_passes_the_shared_posterior_checks():
    make = lambda **kwargs: ImplicitPosterior(  # noqa: E731
        3, noise_dim=2, hidden_units=[5], structure="adaptive_contrast", num_bases=2, basis_hidden_units=[4], **kwargs
    )
    posterior, _ = run_posterior_test(make)
    assert posterior.has_moments and posterior.noise_shape == (4,)  # m bases of noise_dim each
    # Linear bases: z is linear in Gaussian noise, the mean is E[z|x] exactly.
    run_posterior_test(
        lambda **kwargs: ImplicitPosterior(3, hidden_units=[5], structure="adaptive_contrast", basis_hidden_units=[],
                                           **kwargs),
        mean_is_expectation=True,
    )


def _posterior(basis_hidden_units, seed=0):
    keras.utils.set_random_seed(seed)
    posterior = ImplicitPosterior(
        2, noise_dim=3, hidden_units=[6], structure="adaptive_contrast", num_bases=3,
        basis_hidden_units=basis_hidden_units, dtype="float64",
    )
    posterior.build((None, FEATURES))
    h = tf.constant(np.random.default_rng(seed).normal(size=(4, FEATURES)))
    return posterior, posterior(h)


def test_linear_bases_give_the_exact_moments():
    """z0 + sum_i a_i (W_i eps_i + b_i): mean z0 + sum a_i b_i, variance sum a_i^2 rowsum(W_i^2), from the weights."""
    posterior, params = _posterior([])
    mean, variance = (np.asarray(v) for v in posterior.moments(params, None))
    h = params["features"].numpy()
    trunk = np.tanh(h @ posterior.hidden_layers[0].kernel.numpy() + posterior.hidden_layers[0].bias.numpy())
    z0 = trunk @ posterior.output_layer.kernel.numpy() + posterior.output_layer.bias.numpy()
    scales = (trunk @ posterior.scales_layer.kernel.numpy() + posterior.scales_layer.bias.numpy()).reshape(4, 3, 2)
    kernels = [basis[-1].kernel.numpy() for basis in posterior.basis_layers]  # [noise_dim, latent]
    biases = [basis[-1].bias.numpy() for basis in posterior.basis_layers]
    np.testing.assert_allclose(mean, z0 + sum(scales[:, i] * biases[i] for i in range(3)), atol=1e-12)
    np.testing.assert_allclose(
        variance, sum(scales[:, i] ** 2 * np.sum(kernels[i] ** 2, axis=0) for i in range(3)), atol=1e-12
    )
    # And the samples have them (200,000 draws; 5 standard errors).
    z = np.asarray(posterior.transform(params, posterior.sample_noise(params, 200_000, seed=1))[0])
    assert np.all(np.abs(z.mean(axis=1) - mean) < 5 * np.sqrt(variance / z.shape[1]))
    assert np.all(np.abs(z.var(axis=1) / variance - 1) < 5 * np.sqrt(2 / z.shape[1]))
    np.testing.assert_allclose(np.asarray(posterior.mean(params)), mean, atol=1e-12)


def test_nonlinear_bases_estimate_their_moments_over_the_batch_noise():
    """The v_i's moments are the sample moments of v_i over all of the batch's noise (the paper's batch estimate):
    with one example, the mean is then exactly the mean of its samples."""
    posterior, params = _posterior([5])
    single = {"features": params["features"][:1]}
    eps = posterior.sample_noise(single, 4000, seed=2)
    mean, variance = (np.asarray(v)[0] for v in posterior.moments(single, eps))
    z = np.asarray(posterior.transform(single, eps)[0])[0]  # [4000, 2]
    np.testing.assert_allclose(mean, z.mean(axis=0), atol=1e-10)
    # The variance leaves out the sample's cross-covariances of independent bases: equal within their noise.
    np.testing.assert_allclose(variance, z.var(axis=0), rtol=0.1)
    # The estimate pools every example's noise: the same noise spread over four examples gives the same v_i moments.
    pooled = posterior._basis_moments(tf.reshape(eps, (4, 1000, 9)))
    for a, b in zip(pooled, posterior._basis_moments(eps)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"structure": "stacked"}, "Unknown structure. Expected one of ['adaptive_contrast', 'concat', 'inject']"),
        ({"num_bases": 0}, "Received: num_bases=0"),
        ({"basis_hidden_units": [0]}, "Received: basis_hidden_units=[0]"),
        ({"hidden_units": None}, "Received: hidden_units=None"),
        ({"activation": "nope"}, "activation must be a Keras activation.*Received: activation='nope'"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", "\\[").replace("]", "\\]")):
        ImplicitPosterior(2, **kwargs)


def test_moments_of_a_sampler_without_them_are_refused():
    posterior, params = _posterior([])
    concat = ImplicitPosterior(2)
    concat.build((None, FEATURES))
    with pytest.raises(NotImplementedError, match="gives no per-example moments of z"):
        concat.moments(concat(tf.zeros((1, FEATURES))), None)


@pytest.mark.parametrize(
    "kwargs, received",
    [({"noise_dim": 2}, "noise_dim=2"), ({"noise_dim": 1, "structure": "adaptive_contrast", "num_bases": 2},
                                         "noise_dim=1, num_bases=2")],
)
def test_fewer_noise_than_latent_dimensions_warns(kwargs, received):
    # q(z|x) on a surface of lower dimension has no density: KL(q || p) is infinite.
    with pytest.warns(UserWarning, match=rf"has no density, so KL\(q \|\| p\) is infinite.*Received: {received}$"):
        ImplicitPosterior(3, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImplicitPosterior(3, noise_dim=1, structure="adaptive_contrast", num_bases=3)  # 3 bases of 1: enough
