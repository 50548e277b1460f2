"""Evaluation's edges: train_k's default, every sampler option recorded, no retracing warning, model.bound."""

import logging

import numpy as np
import pytest

from tests import ppca
from vizoo import evaluate
from vizoo.layers import HierarchicalPosterior
from vizoo.losses import ELBOLoss, IWAELoss, IWHVILoss, RenyiLoss, VIMCOLoss
from vizoo.models import VAE


def hierarchical_model(num_reverse_samples=10):
    posterior = HierarchicalPosterior(
        3, aux_dim=2, hidden_units=[4], reverse_hidden_units=[4], num_reverse_samples=num_reverse_samples, name="posterior"
    )
    return VAE(16, 3, hidden_units=[8], posterior=posterior, seed=0)


@pytest.fixture
def x():
    return (np.random.default_rng(0).random((12, 16)) < 0.4).astype("float32")


def test_train_k_defaults_to_the_compiled_k_at_most_k(x):
    model = hierarchical_model()
    model.compile(optimizer="adam", loss=IWHVILoss(k=5))
    result = evaluate.log_likelihood(model, x, k=1, num_reverse_samples=0)  # the caller never passed train_k
    assert result["train_k"] == 1 and "k=5 is more than k=1" in result["train_k_note"]
    assert np.isfinite(result["iwae_k"])
    assert "train_k_note" not in evaluate.log_likelihood(model, x, k=10)
    with pytest.raises(ValueError, match="Received: train_k=5"):  # asked for explicitly: still refused
        evaluate.log_likelihood(model, x, k=1, train_k=5)


def test_every_sampler_option_used_is_recorded(x):
    model = hierarchical_model(num_reverse_samples=7)
    default = {"num_reverse_samples": 7, "reverse_model": "learned"}  # the posterior's
    assert evaluate.log_likelihood(model, x, k=20)["sampler_options"] == default
    assert evaluate.log_likelihood(model, x, k=20, num_reverse_samples=3)["sampler_options"] == {**default, "num_reverse_samples": 3}
    assert evaluate.log_likelihood(VAE(16, 2, hidden_units=[4]), x, k=5)["sampler_options"] == {}


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.slow  # many compiled evaluation loops
def test_several_k_and_K_in_one_process_do_not_warn_of_retracing(x):
    model = hierarchical_model()
    records = _Records()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(records)
    try:
        for k, K in [(5, 1), (6, 2), (7, 3), (8, 4), (9, 5), (10, 6), (11, 7)]:
            assert np.isfinite(evaluate.log_likelihood(model, x, k=k, num_reverse_samples=K)["nll"])
    finally:
        logger.removeHandler(records)
    assert not [m for m in records.messages if "retracing" in m], records.messages


def test_bound_per_example_is_exact_for_the_exact_posterior():
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(20, weights, bias)
    exact = ppca.exact_log_px(x, weights, bias)
    model = ppca.ppca_vae(weights, bias)
    with pytest.raises(ValueError, match="has no bound to train on"):
        model.bound(x)
    model.compile(optimizer="adam", loss=IWAELoss(k=3))
    for bound in (model.bound(x), model.bound(x, loss=ELBOLoss()), model.bound(x, loss=RenyiLoss(k=2, alpha=0.5))):
        assert tuple(bound.shape) == (20,)
        np.testing.assert_allclose(bound, exact, atol=2e-3)  # log w = log p(x) at every sample
    assert tuple(model.bound(x[:4], num_samples=7, seed=0).shape) == (4,)


def test_bound_orders_the_losses_on_a_worse_posterior():
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(300, weights, bias)
    model = ppca.ppca_vae(weights, bias, loc_offset=0.5, log_scale_offset=-0.4)
    elbo = float(np.mean(model.bound(x, loss=ELBOLoss(k=50), seed=0)))
    iwae = float(np.mean(model.bound(x, loss=IWAELoss(k=50), seed=0)))
    assert elbo < iwae < ppca.exact_log_px(x, weights, bias).mean()


def test_bound_checks_the_loss_against_the_model():
    model = VAE(16, 2, hidden_units=[4])
    with pytest.raises(ValueError, match="VIMCOLoss is a score-function estimator"):
        model.bound(np.zeros((2, 16), "float32"), loss=VIMCOLoss(k=2))
    with pytest.raises(ValueError, match="Received: num_samples=0"):
        model.bound(np.zeros((2, 16), "float32"), loss=ELBOLoss(), num_samples=0)


def test_pareto_threshold_follows_the_number_of_samples():
    from vizoo import diagnostics

    assert diagnostics.pareto_k_threshold(5000) == diagnostics.pareto_k_threshold(2155) == 0.7
    assert diagnostics.pareto_k_threshold(1000) == pytest.approx(2 / 3)
    assert diagnostics.pareto_k_threshold(50) == pytest.approx(1 - 1 / np.log10(50))  # 0.41
    assert diagnostics.pareto_k_threshold(5) == 0.0


def test_flags_and_impossible_examples_are_named(x):
    model = VAE(16, 2, hidden_units=[4], seed=0)
    for kwargs, message in [(dict(jit_compile="no"), "jit_compile='no'"), (dict(return_per_example="no"),
                            "return_per_example='no'"), (dict(verbose=True), "verbose=True")]:
        with pytest.raises(ValueError, match=message):
            evaluate.log_likelihood(model, x, k=4, **kwargs)
    # Examples to which the model gives no probability at any sample (a Gaussian p(x|z) of scale 1e-30: log p(x|z)
    # = -inf in float32): named, not a silent inf/NaN in every mean.
    from vizoo.layers import GaussianLikelihood

    narrow = VAE(16, 2, hidden_units=[4], likelihood=GaussianLikelihood(16, scale=1e-30, name="likelihood"), seed=0)
    with pytest.raises(ValueError, match=r"not finite for 12 example\(s\) \(in data's order: \[0, 1, 2, .*\.\.\.\)"):
        evaluate.log_likelihood(narrow, x, k=4)
    # So in every estimator that checks importance sampling (they returned nan or -inf).
    from vizoo import ais

    few = x[:4]
    for estimator, what in [
        (lambda: ais.ais_log_likelihood(narrow, few, num_steps=3, num_chains=2, seed=0), "AIS log p"),
        (lambda: ais.simulated_sandwich(narrow, data=few, latents=np.zeros((4, 2)), k=3, seed=0), "sandwich's lower"),
        (lambda: ais.bdmc(narrow, data=few, latents=np.zeros((4, 2)), num_steps=3, num_chains=2, seed=0), "BDMC's lower"),
        (lambda: ais.harmonic_mean_log_likelihood(narrow, few, num_samples=2, burn_in=2, mixing_steps=0, seed=0),
         "harmonic-mean log p"),
    ]:
        with pytest.raises(ValueError, match=rf"{what}.* is not finite for 4 example\(s\)"):
            estimator()


def test_non_finite_latents_and_weighted_batches_are_refused(x):
    import tensorflow as tf

    from vizoo import ais

    model = VAE(16, 2, hidden_units=[4], seed=0)
    latents = np.zeros((4, 2))
    latents[1, 0] = np.nan
    for estimator in (ais.bdmc, ais.simulated_sandwich):
        with pytest.raises(ValueError, match=r"latents must be finite. Received: latents\[1, 0\]=nan"):
            estimator(model, data=x[:4], latents=latents)
    weighted = tf.data.Dataset.from_tensor_slices((x, x, np.ones(12, "float32"))).batch(4)
    with pytest.raises(ValueError, match=r"data holds \(x, y, sample_weight\) batches.*Received: data with elements of 3"):
        evaluate.log_likelihood(model, weighted, k=2)
    with pytest.raises(ValueError, match=r"data holds \(x, y, sample_weight\)"):
        ais.ais_log_likelihood(model, weighted, num_steps=2, num_chains=2)


def test_a_precision_copy_keeps_the_training_loss(x):
    model = VAE(16, 2, hidden_units=[4], seed=0)
    model.compile(optimizer="adam", loss=IWAELoss(k=2))
    result = evaluate.log_likelihood(model, x, k=4, precision="mixed_bfloat16")
    assert result["training_loss"] == "IWAELoss" and result["training_loss_is_bound"] is True


def test_result_names_a_training_loss_that_is_not_a_bound(x):
    model = VAE(16, 2, hidden_units=[4], seed=0)
    assert "training_loss" not in evaluate.log_likelihood(model, x, k=4)
    model.compile(optimizer="adam", loss=RenyiLoss(k=2, alpha=-1.0))
    result = evaluate.log_likelihood(model, x, k=4)
    assert result["training_loss"] == "RenyiLoss" and result["training_loss_is_bound"] is False
    model.compile(optimizer="adam", loss=RenyiLoss(k=2, alpha=0.5))
    assert evaluate.log_likelihood(model, x, k=4)["training_loss_is_bound"] is True
