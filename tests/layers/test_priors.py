"""Priors: the shared prior checks (normalised, samples match the density, XLA, serialization), and exact against TFP."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.helpers import run_prior_test
from vizoo.layers import MAFPrior, MixtureOfGaussiansPrior, StandardNormalPrior, VampPrior
from vizoo.models import VAE

tfd = tfp.distributions


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


def standard_normal(dim):
    return built_prior(StandardNormalPrior(), dim)


def vamp(dim, posterior="diagonal"):
    model = vamp_model(dim, posterior)
    return model.prior, model  # the prior holds its model weakly: keep the model alive


PRIORS = {
    "standard_normal": standard_normal,
    "mixture": spread_mixture,
    "vamp": vamp,
    "vamp_full_covariance": lambda dim: vamp(dim, "full_covariance"),
    "maf": trained_like_maf,
}


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", sorted(PRIORS))
def test_every_prior_passes_the_shared_checks(name, dim):
    # Normalised on a grid, samples with the density's first two moments, XLA, serialization.
    made = PRIORS[name](dim)
    prior = made[0] if isinstance(made, tuple) else made
    run_prior_test(prior, half_width=15.0, points=1201)


@pytest.mark.parametrize("dim", [1, 2])
def test_mixture_matches_tfp(dim):
    prior = spread_mixture(dim)
    logits, means, log_scales = prior.get_weights()
    reference = tfd.MixtureSameFamily(
        tfd.Categorical(logits=logits), tfd.Independent(tfd.Normal(means, np.exp(log_scales)), 1)
    )
    z = np.random.default_rng(1).normal(size=(3, 5, dim)).astype("float32")
    np.testing.assert_allclose(prior.log_prob(z), reference.log_prob(z), rtol=1e-5)


@pytest.mark.parametrize("dim, posterior", [(1, "diagonal"), (2, "diagonal"), (2, "full_covariance")])
def test_vamp_prior_is_the_mean_of_its_components(dim, posterior):
    model = vamp_model(dim, posterior)
    prior = model.prior
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


def test_the_diagonal_mixture_log_prob_is_the_broadcast_one_without_cancellation():
    # The VampPrior's fast path (two matmuls in float64) against log_prob broadcast over the components, with
    # sharp components (sigma down to 0.01) far from zero, where the expanded quadratic's terms reach 1e6.
    from vizoo.layers import DiagonalGaussianPosterior

    posterior = DiagonalGaussianPosterior(3)
    rng = np.random.default_rng(5)
    params = {"loc": (rng.normal(size=(7, 3)) * 4).astype("float32"),
              "log_scale": rng.uniform(np.log(0.01), np.log(2.0), size=(7, 3)).astype("float32")}
    z = (params["loc"][rng.integers(0, 7, size=(2, 5))] + 0.02 * rng.normal(size=(2, 5, 3))).astype("float32")
    fast = np.asarray(posterior.mixture_log_prob(z, params))
    loc, log_scale = (params[key].astype("float64") for key in ("loc", "log_scale"))
    exact = np.sum(-0.5 * ((z.astype("float64")[..., None, :] - loc) / np.exp(log_scale)) ** 2
                   - 0.5 * np.log(2 * np.pi) - log_scale, axis=-1)
    assert fast.shape == (2, 5, 7) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, exact, rtol=1e-6, atol=1e-4)


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


def test_bad_pseudo_inputs_initializer_is_named():
    with pytest.raises(ValueError, match="pseudo_inputs_initializer must be a Keras initializer or its name.*"
                                         "Received: pseudo_inputs_initializer='bogus'"):
        VampPrior(pseudo_inputs_initializer="bogus")


@pytest.mark.parametrize("make", [StandardNormalPrior, lambda: MixtureOfGaussiansPrior(3), lambda: MAFPrior(1, [4])],
                         ids=["standard_normal", "mixture", "maf"])
def test_sample_sizes_are_checked_on_a_built_prior(make):
    with pytest.raises(ValueError, match="must be built before it samples"):
        make().sample(3)
    prior = built_prior(make(), 2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"num_examples must be a positive integer. Received: num_examples={bad}"):
            prior.sample(bad)
    assert prior.sample(np.int64(3), seed=0).shape == (3, 2)


@pytest.mark.parametrize("seed", [3, None])
def test_mixture_priors_sample_inside_a_tf_function(seed):
    # An int seed must not make a SeedGenerator (a variable) per call: a traced sample would fail.
    mixture = spread_mixture(2)
    sample = tf.function(lambda n: mixture.sample(n, seed=seed))
    assert sample(4).shape == (4, 2) and sample(5).shape == (5, 2)  # traced twice
    model = vamp_model(2)  # (the VampPrior holds its model weakly)
    vamp = model.prior
    assert tf.function(lambda: vamp.sample(3, seed=seed))().shape == (3, 2)
    if seed is not None:  # an int seed: the same draws each call, eager or traced
        np.testing.assert_array_equal(mixture.sample(4, seed=seed), mixture.sample(4, seed=seed))
        np.testing.assert_array_equal(sample(4), mixture.sample(4, seed=seed))


@pytest.mark.parametrize("make", [StandardNormalPrior, lambda **kw: MixtureOfGaussiansPrior(3, **kw),
                                  lambda **kw: MAFPrior(num_steps=1, hidden_units=[8], **kw)],
                         ids=["standard_normal", "mixture", "maf"])
def test_samples_take_the_priors_dtype(make):
    prior = make(dtype="float64")
    prior.build((None, 2))
    z = prior.sample(4, seed=0)
    assert z.dtype == "float64" and z.shape == (4, 2) and np.all(np.isfinite(prior.log_prob(z)))
