import numpy as np
import pytest
from scipy import stats

from tests.helpers import run_serialization_test
from vizoo.layers import FullCovarianceGaussianPosterior, StandardNormalPrior


@pytest.fixture
def posterior_and_params():
    posterior = FullCovarianceGaussianPosterior(3)
    posterior.build((None, 4))
    rng = np.random.default_rng(0)
    kernel = posterior.tril_layer.kernel
    kernel.assign(rng.normal(size=kernel.shape).astype("float32"))  # away from the diagonal start
    h = rng.normal(size=(2, 4)).astype("float32") * 2.0
    return posterior, posterior(h)


def test_q_starts_diagonal():
    # Random initial correlations slowed training by about a nat at 20 epochs (docs/benchmarks_long.md).
    posterior = FullCovarianceGaussianPosterior(4)
    posterior.build((None, 5))
    params = posterior(np.random.default_rng(2).normal(size=(3, 5)).astype("float32"))
    scale = np.asarray(params["scale_tril"])
    assert np.all(np.tril(scale, k=-1) == 0) and np.all(np.diagonal(scale, axis1=1, axis2=2) != 1.0)


def test_scale_is_lower_triangular_with_a_positive_diagonal(posterior_and_params):
    _, params = posterior_and_params
    scale = np.asarray(params["scale_tril"])
    assert np.all(np.triu(scale, k=1) == 0)
    np.testing.assert_allclose(np.log(np.diagonal(scale, axis1=1, axis2=2)), params["log_diag"], rtol=1e-5)
    assert np.count_nonzero(np.tril(scale, k=-1)) == 2 * 3  # every strictly-lower entry is used


def test_log_density_matches_scipy(posterior_and_params):
    posterior, params = posterior_and_params
    eps = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    z, log_qz = posterior.transform(params, eps)
    for b in range(2):
        scale = np.asarray(params["scale_tril"][b], "float64")
        density = stats.multivariate_normal(np.asarray(params["loc"][b]), scale @ scale.T)
        np.testing.assert_allclose(np.asarray(log_qz[b]), density.logpdf(np.asarray(z[b], "float64")), rtol=1e-4)


def test_kl_and_serving_outputs_match_closed_forms(posterior_and_params):
    posterior, params = posterior_and_params
    kl = np.asarray(posterior.kl_divergence(params, StandardNormalPrior()))
    served = posterior.serving_outputs(params)
    for b in range(2):
        scale = np.asarray(params["scale_tril"][b], "float64")
        covariance, mu = scale @ scale.T, np.asarray(params["loc"][b], "float64")
        expected = 0.5 * (np.trace(covariance) + mu @ mu - 3 - np.linalg.slogdet(covariance)[1])
        assert kl[b] == pytest.approx(expected, rel=1e-4)
        np.testing.assert_allclose(np.exp(served["log_scale"][b]), np.sqrt(np.diag(covariance)), rtol=1e-5)
    assert posterior.kl_divergence(params, prior=object()) is None


def test_extreme_encoder_outputs_stay_finite():
    posterior = FullCovarianceGaussianPosterior(2)
    posterior.build((None, 1))
    # Entries in tril order L00, L10, L11: a huge off-diagonal entry is used as is (no exp).
    posterior.tril_layer.set_weights([np.array([[5.0, 200.0, -50.0]], "float32"), np.zeros(3, "float32")])
    scale = np.asarray(posterior(np.ones((1, 1), "float32"))["scale_tril"])
    np.testing.assert_allclose(scale[0], [[np.exp(5.0), 0.0], [200.0, np.exp(-50.0)]], rtol=1e-5)


def test_serialization():
    run_serialization_test(FullCovarianceGaussianPosterior(4, name="q"))


@pytest.mark.parametrize(
    "factor_batch, values_batch",
    [((5,), (5,)), ((5, 1), (5, 4)), ((7,), (2, 4, 7)), ((1,), (6,)), ((), (4, 2)), ((3,), (2, 1, 3))],
    ids=["one_per_row", "per_example_over_k", "vamp_components", "one_factor", "unbatched_factor", "both_broadcast"],
)
def test_solve_lower_broadcasts_like_a_batched_solve(factor_batch, values_batch):
    from vizoo.layers.full_covariance_gaussian_posterior import solve_lower

    rng = np.random.default_rng(0)
    factor = np.tril(rng.normal(size=factor_batch + (3, 3)))
    factor[..., np.arange(3), np.arange(3)] = np.exp(rng.normal(size=factor_batch + (3,)))
    values = rng.normal(size=values_batch + (3,))
    batch = np.broadcast_shapes(factor_batch, values_batch)
    expected = np.linalg.solve(np.broadcast_to(factor, batch + (3, 3)), np.broadcast_to(values, batch + (3,))[..., None])
    np.testing.assert_allclose(solve_lower(factor, values), expected[..., 0], rtol=1e-10, atol=1e-12)


def test_q_starts_diagonal_when_first_built_in_a_traced_function():
    import tensorflow as tf

    from vizoo.models import VAE

    model = VAE(input_dim=5, latent_dim=3, hidden_units=[4], posterior="full_covariance", seed=0)
    scale = tf.function(lambda x: model.encode(x)["scale_tril"])(tf.ones((2, 5)))
    assert np.all(np.tril(np.asarray(scale), k=-1) == 0)
    initializer = model.posterior.tril_layer.kernel_initializer
    assert type(initializer).from_config(initializer.get_config()).diagonal_columns == [0, 2, 5]
