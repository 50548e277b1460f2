"""AVBLoss: the ELBO estimate, the adversary's logistic loss, and a learned density ratio checked against exact log q."""

import keras
import numpy as np
import pytest

from tests import ppca
from tests.helpers import random_terms, run_bound_loss_test
from tests.test_density_free import GaussianSampler
from vizoo import evaluate
from vizoo.layers import Adversary, GaussianLikelihood
from vizoo.losses import LOSSES, AVBLoss, ELBOLoss
from vizoo.models import VAE


def _softplus(values):
    return np.logaddexp(0.0, values)


@pytest.mark.parametrize("adaptive_contrast", [False, True])
def test_avb_loss_passes_the_shared_loss_checks(adaptive_contrast):
    loss = AVBLoss(k=3, adaptive_contrast=adaptive_contrast)

    def reference(t):
        if adaptive_contrast:  # KL^ = T(x, z~) + log r(z|x) - log p(z)
            kl = t["adversary_q_normalized"] + t["log_rz"] - t["log_pz"]
        else:
            kl = t["adversary_q"]
        return np.mean(t["log_px_z"] - kl, axis=1)

    run_bound_loss_test(loss, reference)
    assert LOSSES["avb"] is AVBLoss
    assert (loss.is_bound, loss.needs_density, loss.needs_adversary) == (False, False, True)
    assert loss.value_name == "ELBO estimate"


@pytest.mark.parametrize("adaptive_contrast", [False, True])
def test_adversary_objective_and_diagnostics_are_the_logistic_loss(adaptive_contrast):
    loss = AVBLoss(k=4, adaptive_contrast=adaptive_contrast)
    terms = random_terms(loss, batch=5)
    t_q, t_p = (
        (terms["adversary_q_normalized"], terms["adversary_p_normalized"])
        if adaptive_contrast else (terms["adversary_q"], terms["adversary_p"])
    )
    t_q, t_p = t_q.astype("float64"), t_p.astype("float64")
    logistic = np.mean(_softplus(-t_q) + _softplus(t_p), axis=1)  # -log sigmoid(T_q) - log(1 - sigmoid(T_p))
    objectives = loss.objectives(terms)
    assert set(objectives) == {"adversary"}  # every other group follows the ELBO estimate
    np.testing.assert_allclose(np.asarray(objectives["adversary"]), -logistic, rtol=1e-6)
    np.testing.assert_allclose(float(loss.group_losses(terms)["adversary"]), np.mean(logistic), rtol=1e-6)
    diagnostics = {name: np.asarray(value) for name, value in loss.diagnostics(terms).items()}
    assert set(diagnostics) == set(loss.diagnostic_meanings)
    np.testing.assert_allclose(diagnostics["adversary_loss"], logistic, rtol=1e-6)
    np.testing.assert_allclose(diagnostics["adversary_accuracy"], ((t_q > 0).mean(1) + (t_p < 0).mean(1)) / 2)
    np.testing.assert_allclose(
        diagnostics["adversary_max_logit"], np.maximum(np.abs(t_q).max(1), np.abs(t_p).max(1)), rtol=1e-6
    )


def test_adversary_steps_and_options():
    assert AVBLoss().group_steps == {} and AVBLoss(adversary_steps=2).group_steps == {"adversary": 2}
    for kwargs, message in (
        ({"adversary_steps": 0}, "Received: adversary_steps=0"),
        ({"adaptive_contrast": 1}, "adaptive_contrast must be True or False. Received: adaptive_contrast=1"),
    ):
        with pytest.raises(ValueError, match=message):
            AVBLoss(**kwargs)


@pytest.mark.slow
def test_the_adversary_learns_the_density_ratio_of_an_explicit_gaussian_q():
    """q(z|x) Gaussian with known log q (pPCA's exact posterior shifted, behind a sampler with no density), decoder and q
    frozen: the adversary alone is trained, and T(x, z) must match log q(z|x) - log p(z) on held-out pairs.

    Tolerances from seeds 0, 1, 2 of this run (400 steps): RMSE 0.91, 0.76, 1.09 and correlation 0.87, 0.89, 0.84
    for a target of standard deviation 1.45; adversary KL 1.98, 2.01, 1.22 against the exact 1.93.
    """
    keras.utils.set_random_seed(0)
    weights, bias = ppca.ppca_parameters()
    reference = ppca.ppca_vae(weights, bias, loc_offset=0.3, log_scale_offset=0.2)
    latent_dim = weights.shape[1]
    model = VAE(
        ppca.DATA_DIM,
        latent_dim,
        hidden_units=[],
        posterior=GaussianSampler(latent_dim, name="posterior"),
        likelihood=GaussianLikelihood(ppca.DATA_DIM, scale=ppca.NOISE_SCALE, name="likelihood"),
        adversary=Adversary(hidden_units=[32, 32], feature_dim=16, name="adversary"),
        seed=0,
    )
    model.build((None, ppca.DATA_DIM))
    for name in ("posterior", "likelihood"):
        getattr(model, name).set_weights(getattr(reference, name).get_weights())
        getattr(model, name).trainable = False
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=AVBLoss(k=4),
        group_optimizers={"adversary": keras.optimizers.Adam(3e-3, beta_1=0.5)},
        steps_per_execution=20,
    )
    model.fit(ppca.sample_data(2000, weights, bias), batch_size=100, epochs=20, verbose=0)

    x = ppca.sample_data(500, weights, bias, seed=7)  # held out
    terms = model.sample_terms(x, 4, seed=3, terms=("z", "adversary_q"))
    z, logits = np.asarray(terms["z"], "float64"), np.asarray(terms["adversary_q"], "float64").ravel()
    params = {key: value[:, None] for key, value in reference.encode(x).items()}
    log_q = np.asarray(reference.posterior.log_prob(z, params), "float64").ravel()
    log_p = (-0.5 * np.sum(z**2, axis=-1) - 0.5 * latent_dim * np.log(2 * np.pi)).ravel()
    target = log_q - log_p
    rmse, correlation = np.sqrt(np.mean((logits - target) ** 2)), np.corrcoef(logits, target)[0, 1]
    assert rmse < 1.3 and correlation > 0.75, (rmse, correlation)

    # Evaluation puts the adversary's KL estimate beside the exact KL and the Monte-Carlo gap.
    result = evaluate.log_likelihood(model, x[:200], k=500, seed=0)
    exact_kl = float(np.mean(reference.posterior.kl_divergence(reference.encode(x[:200]), reference.prior)))
    assert abs(result["adversary_kl"] - exact_kl) < 0.8, (result["adversary_kl"], exact_kl)
    exact_log_px = ppca.exact_log_px(x[:200], weights, bias)
    elbo = float(np.mean(reference.bound(x[:200], loss=ELBOLoss(), num_samples=2000)))
    # KL(q || p(z|x)) = log p(x) - ELBO, against its Monte-Carlo measure log p(x)^ - ELBO^.
    assert abs(result["training_estimate_gap"] - (exact_log_px.mean() - elbo)) < 0.8
    assert result["posterior_kl_lower_bound"] <= exact_kl + 3 * result["training_estimate_gap_se"] + 0.05
