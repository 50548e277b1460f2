"""AVB end to end: a VAE with an implicit q and its adversary, trained by AVBLoss; saving, resume, divergence, CLI."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import ppca
from tests.helpers import (
    assert_cli_error, assert_reloaded_model_continues_bit_for_bit, build_from_flags, fit_straight_and_resumed, run_model_test,
)
from vizoo.callbacks import StopOnNonFinite, TrainingDiverged
from vizoo.layers import Adversary, GaussianLikelihood, ImplicitPosterior
from vizoo.losses import AVBLoss, IWAELoss
from vizoo.models import VAE


def avb_vae(structure="adaptive_contrast", prior="standard_normal", basis_hidden_units=(4,), **kwargs):
    posterior = ImplicitPosterior(3, hidden_units=[8], structure=structure, num_bases=2,
                                  basis_hidden_units=basis_hidden_units, name="posterior")
    return VAE(64, 3, hidden_units=[16], posterior=posterior, prior=prior,
               adversary=Adversary(hidden_units=[8], feature_dim=4, name="adversary"), seed=0, **kwargs)


@pytest.mark.slow  # trains three times, saves, loads, evaluates (the fast tier has the terms and CLI checks)
def test_avb_model_passes_the_shared_model_checks(binary_data, tmp_path):
    """Adaptive contrast: terms, training, serialization, .keras, evaluation (extra adversary updates: the resume test).

    Linear bases: their moments are exact, so each sample's normalized terms use its own noise only (with nonlinear
    bases the moments are estimated over all of the batch's noise, as the paper does: test_terms_follow_the_definitions).
    """
    model = run_model_test(lambda **kwargs: avb_vae(basis_hidden_units=[], **kwargs), binary_data,
                           AVBLoss(k=2, adaptive_contrast=True), tmp_path)
    logs = model.evaluate(binary_data, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "adversary_loss", "adversary_accuracy", "adversary_max_logit"}
    assert 0.0 <= logs["adversary_accuracy"] <= 1.0 and logs["adversary_loss"] > 0
    assert model.gradient_groups()["adversary"] == model.adversary.trainable_variables


def test_terms_follow_the_definitions(binary_data):
    """adversary_q = T(x, z) (+ log N(z; 0, I) - log p(z) for another prior); with adaptive contrast T sees
    z~ = (z - mu) / sigma and log r is the moment-matched Gaussian's density at z."""
    model = avb_vae(prior="mixture")
    model.build((None, 64))
    x = binary_data[:3]
    noise = np.random.default_rng(0).normal(size=(3, 2, *model.posterior.noise_shape)).astype("float32")
    names = ("z", "log_pz", "adversary_q", "adversary_q_normalized", "log_rz")
    terms = {key: np.asarray(value, "float64") for key, value in model.sample_terms(x, noise=noise, terms=names).items()}
    z = terms["z"]
    log_normal = -0.5 * np.sum(z**2, -1) - 1.5 * np.log(2 * np.pi)
    logits = np.asarray(model.adversary(x, z.astype("float32")), "float64")
    np.testing.assert_allclose(terms["adversary_q"], logits + log_normal - terms["log_pz"], atol=1e-4)
    mean, variance = (np.asarray(v, "float64") for v in model.posterior.moments(model.encode(x), noise))
    sigma = np.sqrt(variance + 1e-4)[:, None]
    normalized = (z - mean[:, None]) / sigma
    np.testing.assert_allclose(
        terms["adversary_q_normalized"], np.asarray(model.adversary(x, normalized.astype("float32"))), atol=1e-4
    )
    expected_log_r = np.sum(-0.5 * normalized**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi), -1)
    np.testing.assert_allclose(terms["log_rz"], expected_log_r, atol=1e-4)


@pytest.mark.parametrize("structure", ["concat", "adaptive_contrast"])
def test_contrast_draws_under_an_int_seed_are_not_the_samplers_noise(binary_data, structure):
    """sample_terms(seed=int): the contrast z' ~ p(z) (and e ~ N(0, I) with adaptive contrast) come from streams of
    their own. One int seed for every draw made z' = eps (concat, noise of z's size): T saw q's noise as p's draws."""
    posterior = ImplicitPosterior(3, hidden_units=[8], structure=structure, num_bases=2, name="posterior")
    model = VAE(64, 3, hidden_units=[16], posterior=posterior, adversary=Adversary(hidden_units=[8], feature_dim=4), seed=0)
    model.build((None, 64))
    x = binary_data[:4]
    names = ("adversary_p", "adversary_p_normalized") if structure == "adaptive_contrast" else ("adversary_p",)
    terms = model.sample_terms(x, 5, seed=3, terms=names)
    again = model.sample_terms(x, 5, seed=3, terms=names)
    eps = model.posterior.sample_noise(model.encode(x), 5, seed=3)
    first = keras.ops.convert_to_numpy(eps).ravel()[: 4 * 5 * 3].reshape(4, 5, 3)  # the stream's start: q's noise
    for name in names:
        np.testing.assert_array_equal(terms[name], again[name])  # reproducible from the seed
        assert not np.allclose(terms[name], model.adversary(x, first), atol=1e-3), name


def test_compile_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="AVBLoss trains the model's adversary T\\(x, z\\), but this VAE has none"):
        VAE(64, 3, posterior="implicit").compile(optimizer="adam", loss=AVBLoss())
    with pytest.raises(ValueError, match="only a loss that trains it .*Received: loss=IWAELoss"):
        VAE(64, 3, adversary=Adversary()).compile(optimizer="adam", loss=IWAELoss())
    with pytest.raises(ValueError, match="does not give \\(has_moments is False\\).*--sampler-structure adaptive_contrast"):
        avb_vae(structure="concat").compile(optimizer="adam", loss=AVBLoss(adaptive_contrast=True))
    with pytest.raises(ValueError, match="adversary must be None or a vizoo.layers.Adversary"):
        VAE(64, 3, adversary="yes")
    # Extra adversary updates on the main optimizer would advance its step count for every other variable.
    with pytest.raises(ValueError, match=r"needs an optimizer of its own.*Received: loss.group_steps=\{'adversary': 3\}"):
        avb_vae().compile(optimizer="adam", loss=AVBLoss(adversary_steps=3))
    avb_vae().compile(optimizer="adam", loss=AVBLoss(adversary_steps=3), group_optimizers={"adversary": "adam"})


def test_command_line_builds_avb(tmp_path, capsys):
    argv = ["--posterior", "implicit", "--loss", "avb", "--sampler-structure", "adaptive_contrast", "--num-bases", "3",
            "--adaptive-contrast", "--adversary-steps", "2", "--adversary-hidden-units", "7", "--latent-dim", "2",
            "--k", "1"]
    model, loss = build_from_flags(argv)
    assert (type(loss), loss.adaptive_contrast, loss.adversary_steps, loss.k) == (AVBLoss, True, 2, 1)
    assert model.posterior.structure == "adaptive_contrast" and model.posterior.num_bases == 3
    assert model.adversary.hidden_units == [7]
    from vizoo import cli, config as run_config

    args = run_config.parse_args(cli.build_parser(), argv + ["--lr", "0.01"])
    optimizer = cli.build_group_optimizers(args, model)["adversary"]
    assert optimizer.beta_1 == 0.5 and float(optimizer.learning_rate) == pytest.approx(0.02)  # twice --lr
    assert_cli_error(["--adversary-lr", "0.1"], "adversary_lr applies to the losses that train an adversary ['avb']",
                     tmp_path, capsys)
    assert_cli_error(["--posterior", "implicit", "--loss", "avb", "--adaptive-contrast"], "has_moments is False",
                     tmp_path, capsys)
    assert_cli_error(["--model", "sbn", "--loss", "avb"], "which only the models ['vae'] take", tmp_path, capsys)
    assert_cli_error(["--posterior", "implicit", "--loss", "avb", "--num-bases", "3"],
                     "num_bases applies with --sampler-structure adaptive_contrast. Received: sampler_structure=None",
                     tmp_path, capsys)


@pytest.mark.slow
def test_keras_file_keeps_the_adversary_and_its_optimizer_and_training_continues_bit_for_bit(binary_data, tmp_path):
    """Also: the exported sampler serves z from (x, eps), no adversary needed."""
    from vizoo.export import export_encoder

    model = avb_vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=AVBLoss(k=2, adaptive_contrast=True),
                  group_optimizers={"adversary": keras.optimizers.Adam(2e-3, beta_1=0.5)})
    model.fit(binary_data, batch_size=32, epochs=2, verbose=0)
    path = str(tmp_path / "avb.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.adversary, Adversary) and loaded.loss.adaptive_contrast
    adversary = loaded.group_optimizers["adversary"]
    assert adversary.beta_1 == 0.5 and float(adversary.learning_rate) == pytest.approx(2e-3)
    assert_reloaded_model_continues_bit_for_bit(model, loaded, binary_data, "adversary", iterations=6)

    served = tf.saved_model.load(export_encoder(model, tmp_path / "encoder"))
    eps = np.random.default_rng(0).normal(size=(3, 4, *model.posterior.noise_shape)).astype("float32")
    outputs = served.signatures["sample"](x=tf.constant(binary_data[:3]), eps=tf.constant(eps))
    assert set(outputs) == {"z"} and model.posterior.noise_shape == (6,)  # 2 bases of 3 noise dimensions
    np.testing.assert_allclose(outputs["z"], model.sample_terms(binary_data[:3], noise=eps, terms=("z",))["z"], atol=1e-5)


@pytest.mark.slow
def test_resumed_avb_run_equals_the_uninterrupted_run(tmp_path):
    import vizoo

    def make():
        keras.utils.set_random_seed(0)
        splits = vizoo.data.load("digits", batch_size=300, seed=0, validation_size=0)  # no validation: fewer traces
        model = avb_vae(structure="concat")
        model.initialize_output_bias(splits.train_mean)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=AVBLoss(adversary_steps=2),
                      group_optimizers={"adversary": keras.optimizers.Adam(2e-3, beta_1=0.5)}, steps_per_execution=5)
        return model, splits

    straight, resumed, result = fit_straight_and_resumed(make, tmp_path, epochs=2, interrupted_after=1)
    assert result["resumed_epoch"] == 1
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # Two adversary updates per step: its optimizer's count is twice the main one's.
    assert int(straight.group_optimizers["adversary"].iterations) == 2 * int(straight.optimizer.iterations) > 0
    for pick in (lambda m: m.optimizer, lambda m: m.group_optimizers["adversary"]):
        assert int(pick(resumed).iterations) == int(pick(straight).iterations) > 0
        for a, b in zip(pick(straight).variables, pick(resumed).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.slow
def test_non_finite_adversary_logits_stop_training_naming_them(binary_data):
    model = avb_vae(structure="concat")
    model.compile(optimizer="adam", loss=AVBLoss())
    model.build((None, 64))
    # Finite weights whose sum overflows: T(x, z) = +inf for every pair.
    model.adversary.x_term.bias.assign([2e38])
    model.adversary.z_term.bias.assign([2e38])
    with pytest.raises(TrainingDiverged) as info:
        model.fit(binary_data, batch_size=32, epochs=2, verbose=0, callbacks=[StopOnNonFinite()])
    message = str(info.value)
    assert message.startswith("training diverged at epoch 1, batch 1: the adversary_loss (the adversary's logistic")
    assert "after training step 1" in message and "Received: adversary_loss=inf" in message
    assert info.value.diverged == {"epoch": 1, "batch": 1, "step": 1, "what": "diagnostic",
                                   "name": "adversary_loss", "value": "inf"}


def _ppca_implicit_vae(weights, bias, loc_offset, scale_factor):
    """pPCA's decoder, and an adaptive-contrast sampler set to z = mu(x) + offset + a * (s * eps): linear bases, so q is
    pPCA's exact posterior shifted and scaled, served through a sampler with no density."""
    latent_dim = weights.shape[1]
    posterior = ImplicitPosterior(latent_dim, hidden_units=[], structure="adaptive_contrast", num_bases=1,
                                  basis_hidden_units=[], name="posterior")
    model = VAE(ppca.DATA_DIM, latent_dim, hidden_units=[], posterior=posterior,
                likelihood=GaussianLikelihood(ppca.DATA_DIM, scale=ppca.NOISE_SCALE, name="likelihood"),
                adversary=Adversary(hidden_units=[4], feature_dim=2, name="adversary"), seed=0)
    model.build((None, ppca.DATA_DIM))
    m_diag = np.sum(weights**2, axis=0) + ppca.NOISE_SCALE**2
    posterior_map = (weights / m_diag).T  # M^-1 W^T, [d, D]
    posterior.output_layer.set_weights([posterior_map.T, -posterior_map @ bias + loc_offset])
    posterior.scales_layer.set_weights([np.zeros((ppca.DATA_DIM, latent_dim)), np.ones(latent_dim)])
    scale = scale_factor * ppca.NOISE_SCALE / np.sqrt(m_diag)
    posterior.basis_layers[0][0].set_weights([np.diag(scale), np.zeros(latent_dim)])
    model.likelihood.loc_layer.set_weights([weights.T, bias])
    return model


@pytest.mark.slow
def test_evaluation_of_an_implicit_q_against_exact_ppca():
    """The fitted-proposal log p(x) of a model with an implicit q is within Monte-Carlo error of pPCA's exact log p(x)
    and never above it by more than 3 standard errors; the training estimate's keys are reported beside it."""
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(200, weights, bias)
    model = _ppca_implicit_vae(weights, bias, loc_offset=0.3, scale_factor=1.2)
    model.compile(optimizer="adam", loss=AVBLoss(adaptive_contrast=True))
    from vizoo import evaluate

    result = evaluate.log_likelihood(model, x, k=2000, seed=0, return_per_example=True)
    assert result["proposal"] == "fitted_gaussian" and "log_likelihood_is_lower_bound" not in result
    difference = result["per_example_log_likelihood"] - ppca.exact_log_px(x, weights, bias)
    standard_error = difference.std(ddof=1) / np.sqrt(len(difference))
    assert abs(difference.mean()) < 3 * standard_error + 0.01, (difference.mean(), standard_error)
    assert difference.mean() < 3 * standard_error
    # E_q log p(x|z) - log p(x) <= KL(q || p(z)) (here exact: q is Gaussian), and the adversary's (untrained) estimate
    # is reported with the gap log p(x) - ELBO^ and its standard error.
    mean, variance = (np.asarray(v, "float64") for v in model.posterior.moments(model.encode(x), None))
    exact_kl = np.mean(0.5 * np.sum(variance + mean**2 - 1 - np.log(variance), axis=1))
    assert result["posterior_kl_lower_bound"] < exact_kl + 0.05
    assert {"adversary_kl", "training_estimate", "training_estimate_gap", "training_estimate_gap_se"} <= set(result)
    # The reported adversary KL is E_q[T(x, z~) + log r(z|x) - log p(z)] over the same x, computed here from the terms
    # (200 other samples per x: 3.4463 against 3.4476 reported at seed 1).
    terms = model.sample_terms(x, 200, seed=1, terms=("adversary_q_normalized", "log_rz", "log_pz"))
    direct = np.mean(np.asarray(terms["adversary_q_normalized"]) + np.asarray(terms["log_rz"]) - np.asarray(terms["log_pz"]))
    assert abs(result["adversary_kl"] - direct) < 0.05, (result["adversary_kl"], direct)


def test_diagnostics_are_weighted_like_the_loss(binary_data):
    model = avb_vae(structure="concat")
    model.compile(optimizer="adam", loss=AVBLoss())
    x = binary_data[:16]
    logs = model.evaluate(x, sample_weight=np.zeros(16, "float32"), batch_size=8, verbose=0, return_dict=True)
    assert logs == {"loss": 0.0, "adversary_loss": 0.0, "adversary_accuracy": 0.0, "adversary_max_logit": 0.0}
    unweighted = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert unweighted["adversary_loss"] > 0 and unweighted["adversary_max_logit"] > 0


def test_measuring_the_training_estimate_leaves_log_px_as_it_is():
    # The estimate's samples come from a seed generator of their own: with k = 250 in chunks of 100 (a remainder
    # pass) and two batches, the compiled model's log p(x) is the uncompiled one's, bit for bit (was 0.37 nats off).
    from vizoo import evaluate

    x = (np.random.default_rng(0).random((20, 64)) < 0.4).astype("float32")
    model = avb_vae(structure="concat")
    model.build((None, 64))
    options = dict(k=250, seed=0, batch_size=10, chunk_elements=10 * 64 * 100, return_per_example=True)
    before = evaluate.log_likelihood(model, x, **options)
    model.compile(optimizer="adam", loss=AVBLoss())
    after = evaluate.log_likelihood(model, x, **options)
    assert "training_estimate" in after and "training_estimate" not in before
    np.testing.assert_array_equal(after["per_example_log_likelihood"], before["per_example_log_likelihood"])


@pytest.mark.slow
def test_ais_of_an_implicit_q_starts_from_the_fitted_gaussian_and_reaches_exact_ppca():
    """AIS evaluates a model whose q has no density (r = the Gaussian fitted to q's samples): within 0.05 nats of
    pPCA's exact log p(x), from a deliberately shifted and widened sampler."""
    from vizoo import ais

    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(50, weights, bias)
    model = _ppca_implicit_vae(weights, bias, loc_offset=0.5, scale_factor=1.5)
    model.compile(optimizer="adam", loss=AVBLoss(adaptive_contrast=True))
    result = ais.ais_log_likelihood(model, x, num_steps=100, num_chains=8, seed=0)  # (T=1, i.e. IS: 0.91 nats low)
    exact = float(np.mean(ppca.exact_log_px(x, weights, bias)))
    assert abs(result["log_likelihood"] - exact) < 0.05, (result["log_likelihood"], exact)
