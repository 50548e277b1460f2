"""Priors: normalised (numerical integration), exact against TFP and closed forms, serializable."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.helpers import run_serialization_test
from vizoo.layers import MAFPrior, MixtureOfGaussiansPrior, StandardNormalPrior, VampPrior
from vizoo.models import VAE

tfd = tfp.distributions


def grid_integral(log_prob, dim, half_width=12.0, points=801):
    """Integral of exp(log_prob) over [-half_width, half_width]^dim (dim 1 or 2), trapezoid rule."""
    axis = np.linspace(-half_width, half_width, points)
    mesh = np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), axis=-1)
    density = np.exp(np.asarray(log_prob(mesh.reshape(-1, dim).astype("float32")), "float64")).reshape(mesh.shape[:-1])
    for _ in range(dim):
        density = np.trapezoid(density, axis, axis=0)
    return density


def built_prior(prior, latent_dim):
    prior.build((None, latent_dim))
    return prior


def spread_mixture(latent_dim, seed=0):
    prior = built_prior(MixtureOfGaussiansPrior(num_components=4), latent_dim)
    rng = np.random.default_rng(seed)
    prior.set_weights([rng.normal(size=4), 2.0 * rng.normal(size=(4, latent_dim)), 0.5 * rng.normal(size=(4, latent_dim))])
    return prior


def vamp_model(latent_dim, posterior="diagonal", num_components=6, seed=0):
    model = VAE(input_dim=8, latent_dim=latent_dim, hidden_units=[16], posterior=posterior,
                prior=VampPrior(num_components=num_components, name="prior"), seed=seed)
    model.build((None, 8))
    return model


def trained_like_maf(latent_dim, seed=0):
    prior = built_prior(MAFPrior(num_steps=2, hidden_units=[16, 16]), latent_dim)
    rng = np.random.default_rng(seed)
    # Far from the identity, yet smooth enough for the integration grid to resolve.
    prior.set_weights([0.3 * rng.normal(size=w.shape) for w in prior.get_weights()])
    return prior


@pytest.mark.parametrize("dim", [1, 2])
def test_mixture_is_normalised_and_matches_tfp(dim):
    prior = spread_mixture(dim)
    assert grid_integral(prior.log_prob, dim) == pytest.approx(1.0, abs=1e-4)
    logits, means, log_scales = prior.get_weights()
    reference = tfd.MixtureSameFamily(
        tfd.Categorical(logits=logits), tfd.Independent(tfd.Normal(means, np.exp(log_scales)), 1)
    )
    z = np.random.default_rng(1).normal(size=(3, 5, dim)).astype("float32")
    np.testing.assert_allclose(prior.log_prob(z), reference.log_prob(z), rtol=1e-5)


def test_mixture_samples_follow_the_mixture():
    prior = spread_mixture(2)
    samples = np.asarray(prior.sample(40000, seed=3))
    logits, means, log_scales = prior.get_weights()
    weights = np.exp(logits) / np.exp(logits).sum()
    expected_mean = weights @ means
    np.testing.assert_allclose(samples.mean(0), expected_mean, atol=0.05)


@pytest.mark.parametrize("dim, posterior", [(1, "diagonal"), (2, "diagonal"), (2, "full_covariance")])
def test_vamp_prior_is_normalised_and_is_the_mean_of_its_components(dim, posterior):
    model = vamp_model(dim, posterior)
    prior = model.prior
    assert grid_integral(prior.log_prob, dim) == pytest.approx(1.0, abs=1e-4)
    z = np.random.default_rng(2).normal(size=(3, 4, dim)).astype("float32")
    params = model.encode(prior.pseudo_inputs)
    components = []
    for k in range(prior.num_components):
        loc = np.asarray(params["loc"][k], "float64")
        if posterior == "diagonal":
            scale_tril = np.diag(np.exp(np.asarray(params["log_scale"][k], "float64")))
        else:
            scale_tril = np.asarray(params["scale_tril"][k], "float64")
        components.append(tfd.MultivariateNormalTriL(loc, scale_tril).log_prob(z.astype("float64")))
    expected = np.log(np.mean(np.exp(np.stack(components)), axis=0))
    np.testing.assert_allclose(prior.log_prob(z), expected, rtol=1e-5)


def test_vamp_prior_follows_the_encoder_and_trains_its_pseudo_inputs():
    model = vamp_model(2)
    z = np.zeros((1, 2), "float32")
    with tf.GradientTape() as tape:
        log_pz = model.prior.log_prob(z)
    gradients = tape.gradient(log_pz, model.trainable_weights)
    names = [w.path for w, g in zip(model.trainable_weights, gradients) if g is not None and np.any(g.numpy() != 0)]
    assert any(name.endswith("pseudo_inputs") for name in names)
    assert any("encoder_dense_0" in n for n in names)  # the prior is defined through the encoder


def test_vamp_prior_samples_come_from_its_components():
    model = vamp_model(1, num_components=1)
    params = model.encode(model.prior.pseudo_inputs)
    samples = np.asarray(model.prior.sample(20000, seed=4))[:, 0]
    assert samples.mean() == pytest.approx(float(params["loc"][0, 0]), abs=0.05)
    assert samples.std() == pytest.approx(float(np.exp(params["log_scale"][0, 0])), rel=0.03)


def test_vamp_prior_input_checks():
    with pytest.raises(ValueError, match="closed-form density.*Received: posterior=IAFPosterior"):
        VAE(input_dim=8, latent_dim=2, posterior="iaf", prior="vamp")
    model = vamp_model(2)
    with pytest.raises(ValueError, match="num_components=6 rows. Received: x.shape=\\(5, 8\\)"):
        model.prior.initialize_pseudo_inputs(np.zeros((5, 8)))
    x = np.random.default_rng(5).random((6, 8)).astype("float32")
    model.prior.initialize_pseudo_inputs(x)
    np.testing.assert_array_equal(model.prior.pseudo_inputs, x)
    with pytest.raises(ValueError, match="pass it as VAE"):
        VampPrior(3).build((None, 2))


@pytest.mark.parametrize("dim", [1, 2])
def test_maf_prior_is_normalised(dim):
    prior = trained_like_maf(dim)
    assert grid_integral(prior.log_prob, dim, half_width=15.0, points=1201) == pytest.approx(1.0, abs=1e-3)


def test_maf_prior_density_is_base_density_plus_log_det_of_the_inverse():
    prior = MAFPrior(num_steps=2, hidden_units=[16], dtype="float64")
    prior.build((None, 3))
    z = tf.constant(np.random.default_rng(6).normal(size=(5, 3)))
    bijector = prior.bijector()
    with tf.GradientTape() as tape:
        tape.watch(z)
        u = bijector.inverse(z)
    jacobian = tape.batch_jacobian(u, z).numpy()
    expected = np.sum(-0.5 * u.numpy() ** 2 - 0.5 * np.log(2 * np.pi), -1) + np.linalg.slogdet(jacobian)[1]
    np.testing.assert_allclose(prior.log_prob(z), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(bijector.forward(u), z, atol=1e-10)  # sampling direction inverts it


def test_maf_prior_samples_have_its_density():
    """Quantiles of the samples match the CDF integrated from log_prob (sampling and density agree)."""
    prior = trained_like_maf(1)
    samples = np.asarray(prior.sample(20000, seed=7))
    axis = np.linspace(-15, 15, 6001)
    density = np.exp(np.asarray(prior.log_prob(axis[:, None].astype("float32")), "float64"))
    cdf = np.cumsum(density) * (axis[1] - axis[0])
    for q in (0.1, 0.5, 0.9):
        assert np.mean(samples[:, 0] < axis[np.searchsorted(cdf, q)]) == pytest.approx(q, abs=0.015)


def test_standard_normal_samples():
    samples = np.asarray(built_prior(StandardNormalPrior(), 3).sample(20000, seed=8))
    assert samples.shape == (20000, 3)
    np.testing.assert_allclose(samples.std(0), 1.0, atol=0.03)


@pytest.mark.parametrize(
    "prior",
    [
        MixtureOfGaussiansPrior(num_components=3, name="prior"),
        MAFPrior(num_steps=3, hidden_units=[8], activation="tanh", name="prior"),
        VampPrior(num_components=7, name="prior"),
    ],
    ids=["mixture", "maf", "vamp"],
)
def test_serialization(prior):
    run_serialization_test(prior)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MixtureOfGaussiansPrior(num_components=0), "Received: num_components=0"),
        (lambda: VampPrior(num_components=-2), "Received: num_components=-2"),
        (lambda: MAFPrior(num_steps=-1), "Received: num_steps=-1"),
        (lambda: MAFPrior(hidden_units=[0]), "Received: hidden_units=\\[0\\]"),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
