"""Posteriors with no density (has_density False): samplers are first-class."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tests import ppca
from tests.helpers import run_bound_loss_test, run_model_test, run_posterior_test
from vizoo import evaluate
from vizoo.layers import POSTERIORS, DiagonalGaussianPosterior, GaussianLikelihood, ImplicitPosterior
from vizoo.losses import BoundLoss, ELBOLoss, IWAELoss, RenyiLoss
from vizoo.models import VAE


@keras.saving.register_keras_serializable(package="vizoo_test")
class ExpectedJointLoss(BoundLoss):
    """Negated E_q[log p(x|z) + log p(z)]: reads no log q, and is not a bound.

    It leaves out the entropy of q, so its value is neither above nor below log p(x) in
    general (`is_bound = False`); training on it pulls q towards the mode of p(z|x). A
    minimal density-free objective for the tests of the contract, no more.
    """

    required_terms = ("log_px_z", "log_pz")
    needs_density = False
    is_bound = False

    def bound(self, terms):
        return ops.mean(terms["log_px_z"] + terms["log_pz"], axis=1)


@keras.saving.register_keras_serializable(package="vizoo_test")
class GaussianSampler(DiagonalGaussianPosterior):
    """A diagonal Gaussian that hides its density: a stand-in sampler whose law is known exactly."""

    has_density = False
    has_log_prob = False

    def transform(self, params, eps):
        return super().transform(params, eps)[0], None


def test_implicit_posterior_passes_the_shared_posterior_checks():
    run_posterior_test(lambda **kwargs: ImplicitPosterior(3, noise_dim=4, hidden_units=[5], **kwargs))
    assert POSTERIORS["implicit"] is ImplicitPosterior
    assert not ImplicitPosterior.has_density and ImplicitPosterior.reparameterized


def test_density_free_loss_passes_the_shared_loss_checks():
    run_bound_loss_test(ExpectedJointLoss(k=3), lambda t: np.mean(t["log_px_z"] + t["log_pz"], axis=1))


def small_implicit_vae(**kwargs):
    return VAE(
        **{
            "input_dim": 64,
            "latent_dim": 3,
            "hidden_units": [16],
            "posterior": ImplicitPosterior(3, noise_dim=3, hidden_units=[8], name="posterior"),
            "seed": 0,
            **kwargs,
        }
    )


def test_trains_with_a_loss_that_needs_no_density(binary_data, tmp_path):
    model = run_model_test(small_implicit_vae, binary_data, ExpectedJointLoss(k=2), tmp_path)
    assert "log_qz" not in model(binary_data[:2]) and "log_qz" not in model.available_terms
    with pytest.raises(ValueError, match="Cannot compute the term .log_qz.*with no density"):
        model.sample_terms(binary_data[:2], 1, terms=["log_qz"])


@pytest.mark.parametrize("loss", [ELBOLoss(), IWAELoss(k=2), RenyiLoss(k=2)], ids=lambda loss: type(loss).__name__)
def test_losses_that_need_a_density_are_refused_at_compile(loss):
    model = small_implicit_vae()
    message = (
        f"{type(loss).__name__} reads log q\\(z\\|x\\) \\(its needs_density is True\\), but ImplicitPosterior has no "
        f"density.*Received: loss={type(loss).__name__}, posterior=ImplicitPosterior"
    )
    with pytest.raises(ValueError, match=message):
        model.compile(optimizer="adam", loss=loss)


def test_export_gives_the_sample_signature_without_log_q(binary_data, tmp_path):
    from vizoo.export import export_encoder

    model = small_implicit_vae()
    model.compile(optimizer="adam", loss=ExpectedJointLoss())
    path = export_encoder(model, tmp_path / "encoder")
    served = tf.saved_model.load(path)
    eps = np.random.default_rng(0).normal(size=(3, 4, 3)).astype("float32")
    outputs = served.signatures["sample"](x=tf.constant(binary_data[:3]), eps=tf.constant(eps))
    assert set(outputs) == {"z"} and tuple(outputs["z"].shape) == (3, 4, 3)
    expected = model.sample_terms(binary_data[:3], noise=eps, terms=("z",))["z"]
    np.testing.assert_allclose(outputs["z"], expected, atol=1e-5)
    assert set(served.signatures["serving_default"](x=tf.constant(binary_data[:3]))) == {"loc"}


def ppca_sampler_model(weights, bias, loc_offset, log_scale_offset):
    """pPCA decoder; q(z|x) the exact posterior shifted by the offsets, behind a sampler with no density."""
    latent_dim = weights.shape[1]
    model = VAE(
        input_dim=ppca.DATA_DIM,
        latent_dim=latent_dim,
        hidden_units=[],
        posterior=GaussianSampler(latent_dim, name="posterior"),
        likelihood=GaussianLikelihood(ppca.DATA_DIM, scale=ppca.NOISE_SCALE, name="likelihood"),
        seed=0,
    )
    model.build((None, ppca.DATA_DIM))
    reference = ppca.ppca_vae(weights, bias, loc_offset=loc_offset, log_scale_offset=log_scale_offset)
    model.set_weights(reference.get_weights())
    return model


def test_fitted_gaussian_proposal_estimates_the_exact_log_likelihood():
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(200, weights, bias)
    exact = ppca.exact_log_px(x, weights, bias)
    model = ppca_sampler_model(weights, bias, loc_offset=0.3, log_scale_offset=0.2)
    result = evaluate.log_likelihood(model, x, k=2000, seed=0, return_per_example=True)
    assert result["proposal"] == "fitted_gaussian" and result["proposal_samples"] == evaluate.PROPOSAL_SAMPLES
    assert "log_likelihood_is_lower_bound" not in result  # a consistent estimate: any proposal is unbiased for p(x)
    difference = result["per_example_log_likelihood"] - exact  # [examples]
    standard_error = difference.std(ddof=1) / np.sqrt(len(difference))
    assert abs(difference.mean()) < 3 * standard_error + 0.01, (difference.mean(), standard_error)
    assert difference.mean() < 3 * standard_error + 1e-3  # never above log p(x) beyond Monte-Carlo error
    assert result["elbo"] <= result["log_likelihood"] + 1e-6  # the proposal's ELBO

    with_density = ppca.ppca_vae(weights, bias, loc_offset=0.3, log_scale_offset=0.2)
    assert evaluate.log_likelihood(with_density, x[:10], k=20)["proposal"] == "posterior"


def test_proposal_samples_is_checked(binary_data):
    model = small_implicit_vae()
    with pytest.raises(ValueError, match="Received: proposal_samples=0"):
        evaluate.log_likelihood(model, binary_data[:4], k=4, proposal_samples=0)
    with pytest.raises(ValueError, match="at least 2. Received: proposal_samples=1"):  # a NaN covariance before
        evaluate.log_likelihood(model, binary_data[:4], k=4, proposal_samples=1)
    with pytest.raises(ValueError, match="is its own proposal. Received: proposal_samples=10"):
        evaluate.log_likelihood(VAE(64, 2, hidden_units=[4]), binary_data[:4], k=4, proposal_samples=10)
    result = evaluate.log_likelihood(model, binary_data[:4], k=4, proposal_samples=20)
    assert result["proposal_samples"] == 20 and np.isfinite(result["nll"])


def test_implicit_model_saves_and_loads(binary_data, tmp_path):
    model = small_implicit_vae()
    model.compile(optimizer="adam", loss=ExpectedJointLoss(k=2))
    model.fit(binary_data, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "implicit.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.posterior, ImplicitPosterior) and not loaded.posterior.has_density
    eps = np.random.default_rng(1).normal(size=(2, 3, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded.sample_terms(binary_data[:2], noise=eps, terms=("z",))["z"],
        model.sample_terms(binary_data[:2], noise=eps, terms=("z",))["z"],
        atol=1e-6,
    )
