import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from tests.helpers import run_serialization_test
from vizoo.layers import BernoulliLikelihood, DiagonalGaussianPosterior, GaussianLikelihood, StandardNormalPrior


def built(layer, features):
    layer.build((None, features))
    return layer


def test_diagonal_posterior_log_density_matches_scipy():
    posterior = built(DiagonalGaussianPosterior(3), 4)
    rng = np.random.default_rng(0)
    params = posterior(rng.normal(size=(2, 4)).astype("float32"))
    eps = rng.normal(size=(2, 5, 3)).astype("float32")
    z, log_qz = posterior.transform(params, eps)
    loc = np.asarray(params["loc"])[:, None, :]
    scale = np.exp(np.asarray(params["log_scale"]))[:, None, :]
    np.testing.assert_allclose(np.asarray(z), loc + scale * eps, rtol=1e-6, atol=1e-6)
    expected = stats.norm.logpdf(np.asarray(z, "float64"), loc, scale).sum(-1)
    np.testing.assert_allclose(np.asarray(log_qz), expected, rtol=1e-5, atol=1e-5)
    assert np.asarray(posterior.sample_noise(params, 7)).shape == (2, 7, 3)
    np.testing.assert_array_equal(np.asarray(posterior.mean(params)), np.asarray(params["loc"]))


def test_diagonal_posterior_kl_matches_monte_carlo():
    posterior = built(DiagonalGaussianPosterior(2), 3)
    params = posterior(np.array([[0.5, -1.0, 2.0]], "float32"))
    kl = float(posterior.kl_divergence(params, StandardNormalPrior())[0])
    eps = np.random.default_rng(1).normal(size=(1, 400_000, 2)).astype("float32")
    z, log_qz = posterior.transform(params, eps)
    monte_carlo = np.asarray(log_qz, "float64") - np.asarray(StandardNormalPrior().log_prob(z), "float64")
    standard_error = monte_carlo.std() / np.sqrt(monte_carlo.size)
    assert abs(kl - monte_carlo.mean()) < 4 * standard_error + 1e-4


def test_kl_is_none_for_a_prior_without_closed_form():
    posterior = built(DiagonalGaussianPosterior(2), 3)
    params = posterior(np.zeros((1, 3), "float32"))
    assert posterior.kl_divergence(params, prior=object()) is None


def test_standard_normal_prior_matches_scipy():
    z = np.random.default_rng(2).normal(size=(3, 4, 5)).astype("float32")
    expected = stats.norm.logpdf(z.astype("float64")).sum(-1)
    np.testing.assert_allclose(np.asarray(StandardNormalPrior().log_prob(z)), expected, rtol=1e-6)


def test_bernoulli_log_prob_matches_scipy_and_is_stable():
    likelihood = built(BernoulliLikelihood(6), 4)
    rng = np.random.default_rng(3)
    params = likelihood(rng.normal(size=(2, 3, 4)).astype("float32"))
    x = (rng.random((2, 6)) < 0.5).astype("float32")
    logits = np.asarray(params["logits"], "float64")
    expected = stats.bernoulli.logpmf(x[:, None, :], expit(logits)).sum(-1)
    np.testing.assert_allclose(np.asarray(likelihood.log_prob(x, params)), expected, rtol=1e-5)
    extreme = {"logits": np.array([[[200.0, -200.0]]], "float32")}
    value = np.asarray(BernoulliLikelihood(2).log_prob(np.array([[0.0, 1.0]], "float32"), extreme))
    np.testing.assert_allclose(value, [[-400.0]], rtol=1e-6)


def test_bernoulli_bias_from_data_mean():
    likelihood = built(BernoulliLikelihood(3), 2)
    likelihood.set_bias_from_mean([0.5, 0.0, 0.9])
    probabilities = expit(np.asarray(likelihood.logits_layer.bias))
    np.testing.assert_allclose(probabilities, [0.5, 1e-3, 0.9], rtol=1e-4)
    with pytest.raises(ValueError, match=r"data_mean must have 3 values. Received: data_mean.shape=\(2,\)"):
        likelihood.set_bias_from_mean([0.5, 0.5])
    before = np.asarray(likelihood.logits_layer.bias)
    for bad, shown in (([0.5, np.nan, 0.2], "data_mean\\[1\\]=nan"), ([0.5, 0.1, 128.0], "data_mean\\[2\\]=128.0")):
        with pytest.raises(ValueError, match=rf"data_mean must hold the data's per-pixel means, in \[0, 1\].*Received: {shown}"):
            likelihood.set_bias_from_mean(bad)  # NaN made every log p(x|z) NaN; 0-255 means were clipped silently
    np.testing.assert_array_equal(np.asarray(likelihood.logits_layer.bias), before)


@pytest.mark.parametrize("scale", [None, 0.3])
def test_gaussian_log_prob_matches_scipy(scale):
    likelihood = built(GaussianLikelihood(4, scale=scale, initial_scale=0.7), 3)
    rng = np.random.default_rng(4)
    params = likelihood(rng.normal(size=(2, 5, 3)).astype("float32"))
    x = rng.normal(size=(2, 4)).astype("float32")
    sigma = 0.7 if scale is None else scale
    expected = stats.norm.logpdf(x[:, None, :], np.asarray(params["loc"], "float64"), sigma).sum(-1)
    np.testing.assert_allclose(np.asarray(likelihood.log_prob(x, params)), expected, rtol=1e-5)
    assert len(likelihood.trainable_weights) == (3 if scale is None else 2)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "big", True])
def test_gaussian_scale_must_be_positive(bad):
    with pytest.raises(ValueError, match="scale must be a positive float. Received: scale="):
        GaussianLikelihood(4, scale=bad)
    with pytest.raises(ValueError, match="initial_scale must be a positive float. Received: initial_scale="):
        GaussianLikelihood(4, initial_scale=bad)
    with pytest.raises(ValueError, match="initial_scale must be a positive float. Received: initial_scale=None"):
        GaussianLikelihood(4, initial_scale=None)


def test_gaussian_scales_may_be_numpy_numbers():
    likelihood = GaussianLikelihood(4, scale=np.float32(0.25), initial_scale=np.float64(0.5))  # e.g. x.std()
    assert (likelihood.scale, likelihood.initial_scale) == (0.25, 0.5)


@pytest.mark.parametrize(
    "layer",
    [
        DiagonalGaussianPosterior(3, name="q"),
        StandardNormalPrior(),
        BernoulliLikelihood(5),
        GaussianLikelihood(5, scale=0.25),
        GaussianLikelihood(5, initial_scale=2.0),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_serialization(layer):
    run_serialization_test(layer)


@pytest.mark.parametrize("cls", [DiagonalGaussianPosterior, BernoulliLikelihood, GaussianLikelihood])
def test_dimension_must_be_positive(cls):
    with pytest.raises(ValueError, match="Received: "):
        cls(0)
