import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

import vizoo
from tests import ppca
from vizoo import evaluate
from vizoo.losses import ELBOLoss, IWAELoss
from vizoo.models import VAE


@pytest.fixture(scope="module")
def reference():
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(400, weights, bias)
    return weights, bias, x, ppca.exact_log_px(x, weights, bias)


def test_exact_posterior_makes_every_bound_exact(reference):
    weights, bias, x, log_px = reference
    model = ppca.ppca_vae(weights, bias)
    terms = model(x, num_samples=50)
    log_w = np.asarray(terms["log_px_z"] + terms["log_pz"] - terms["log_qz"], "float64")
    # With q = p(z|x), every importance weight is exactly p(x).
    np.testing.assert_allclose(log_w, np.repeat(log_px[:, None], 50, axis=1), atol=2e-4)
    for loss in (ELBOLoss(k=50), IWAELoss(k=50)):
        assert -float(loss(None, terms)) == pytest.approx(log_px.mean(), abs=1e-4)
    # With the closed-form KL only E_q log p(x|z) is estimated: exact up to Monte-Carlo error.
    assert -float(ELBOLoss(k=50, analytic_kl=True)(None, terms)) == pytest.approx(log_px.mean(), abs=0.01)
    result = evaluate.log_likelihood(model, x, k=200, train_k=5, seed=0)
    for key in ("log_likelihood", "elbo", "iwae_k"):
        assert result[key] == pytest.approx(log_px.mean(), abs=1e-4), key
    assert result["kl"] == pytest.approx(result["reconstruction"] - result["elbo"], abs=1e-4)


def test_bounds_are_ordered_below_the_exact_log_likelihood(reference):
    weights, bias, x, log_px = reference
    model = ppca.ppca_vae(weights, bias, loc_offset=0.4, log_scale_offset=-0.3)  # a worse q
    terms = {key: np.asarray(value) for key, value in model(x, num_samples=500).items()}

    def bound(loss):
        """Per-example bound, averaged over the 500 // k disjoint groups of k samples."""
        grouped = {key: value.reshape(-1, loss.k) for key, value in terms.items() if key != "kl"}
        return -np.asarray(loss.call(None, grouped), "float64").reshape(len(x), -1).mean(axis=1)

    elbo, iwae_5, iwae_50 = bound(ELBOLoss(k=1)), bound(IWAELoss(k=5)), bound(IWAELoss(k=50))
    for lower, upper in ((elbo, iwae_5), (iwae_5, iwae_50), (iwae_50, log_px)):
        gap = upper - lower
        standard_error = gap.std() / np.sqrt(len(gap))
        assert gap.mean() > 5 * standard_error, (gap.mean(), standard_error)


def test_k5000_estimate_is_within_005_nats_of_exact(reference):
    weights, bias, x, log_px = reference
    model = ppca.ppca_vae(weights, bias, loc_offset=0.3, log_scale_offset=0.2)
    result = evaluate.log_likelihood(model, x, k=5000, train_k=5, seed=0)
    assert result["log_likelihood"] == pytest.approx(log_px.mean(), abs=0.05)
    assert result["elbo"] < result["iwae_k"] < result["log_likelihood"] <= log_px.mean() + 0.01
    assert result["nll"] == -result["log_likelihood"]
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (ppca.DATA_DIM * np.log(2)))


@pytest.mark.slow  # long training (60 epochs)
def test_training_the_encoder_with_the_elbo_finds_the_exact_posterior(reference):
    weights, bias, x, log_px = reference
    model = ppca.ppca_vae(weights, bias, loc_offset=1.0, log_scale_offset=-1.0)
    model.likelihood.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss=ELBOLoss(k=1))
    before = evaluate.log_likelihood(model, x, k=100, seed=0)["elbo"]
    model.fit(x, batch_size=50, epochs=60, verbose=0)
    after = evaluate.log_likelihood(model, x, k=100, seed=0)["elbo"]
    assert before < log_px.mean() - 1.0
    assert after == pytest.approx(log_px.mean(), abs=0.05)


def test_full_covariance_posterior_set_to_the_exact_posterior_makes_bounds_exact():
    weights, bias = ppca.ppca_parameters(seed=2, orthogonal=False)
    x = ppca.sample_data(200, weights, bias)
    model = ppca.ppca_decoder_vae(weights, bias, "full_covariance")
    m = weights.T @ weights + ppca.NOISE_SCALE**2 * np.eye(2)
    posterior_map = np.linalg.solve(m, weights.T)  # M^-1 W^T
    scale = np.linalg.cholesky(ppca.NOISE_SCALE**2 * np.linalg.inv(m))
    rows, cols = np.tril_indices(2)
    raw = scale[rows, cols].copy()
    raw[rows == cols] = np.log(raw[rows == cols])  # the layer stores log of L's diagonal
    model.posterior.loc_layer.set_weights([posterior_map.T, -posterior_map @ bias])
    model.posterior.tril_layer.set_weights([np.zeros((ppca.DATA_DIM, 3)), raw])
    terms = model(x, num_samples=20)
    log_w = np.asarray(terms["log_px_z"] + terms["log_pz"] - terms["log_qz"], "float64")
    np.testing.assert_allclose(log_w, np.repeat(ppca.exact_log_px(x, weights, bias)[:, None], 20, axis=1), atol=2e-4)


@pytest.mark.slow  # long training
def test_training_a_full_covariance_encoder_with_the_elbo_reaches_the_exact_log_likelihood():
    """The exact posterior of pPCA with non-orthogonal W is correlated: in this family, not the diagonal one."""
    weights, bias = ppca.ppca_parameters(seed=2, orthogonal=False)
    x = ppca.sample_data(400, weights, bias)
    log_px = ppca.exact_log_px(x, weights, bias).mean()
    model = ppca.ppca_decoder_vae(weights, bias, "full_covariance")
    for layer in (model.posterior.loc_layer, model.posterior.tril_layer):  # start from q = p(z)
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    steps = 1200
    # Near the optimum the ELBO's gradient noise vanishes, but Adam's steps don't: decay the rate.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=steps, decay_rate=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=ELBOLoss(k=10), steps_per_execution=100)
    before = evaluate.log_likelihood(model, x, k=100, seed=0)["elbo"]
    full_batches = tf.data.Dataset.from_tensors(x).repeat()
    model.fit(full_batches, steps_per_epoch=steps, epochs=1, verbose=0)
    after = evaluate.log_likelihood(model, x, k=100, seed=0)["elbo"]
    assert before < log_px - 1.0
    assert after == pytest.approx(log_px, abs=0.01)  # measured: 0.0024 short


def test_active_units_count_the_informative_latents(reference):
    weights, bias, x, _ = reference
    result = evaluate.log_likelihood(ppca.ppca_vae(weights, bias), x, k=10)
    assert result["active_units"] == int(np.sum(ppca.COLUMN_NORMS > 0))


def test_sample_groups_and_chunks_are_consistent(reference):
    weights, bias, x, _ = reference
    model = ppca.ppca_vae(weights, bias, loc_offset=0.5)
    # Groups of one sample are the ELBO; one group of all k samples is log p(x).
    result = evaluate.log_likelihood(model, x, k=64, train_k=1, seed=3)
    assert result["iwae_k"] == pytest.approx(result["elbo"], abs=1e-5)
    result = evaluate.log_likelihood(model, x, k=64, train_k=64, seed=3)
    assert result["iwae_k"] == pytest.approx(result["log_likelihood"], abs=1e-5)
    # Tiny chunks (with a remainder chunk) estimate the same quantities.
    assert evaluate._chunk_size(64, 100, ppca.DATA_DIM, 4, chunk_elements=100 * ppca.DATA_DIM * 6) == 4
    chunked = evaluate.log_likelihood(model, x, k=1000, train_k=4, seed=3, chunk_elements=100 * ppca.DATA_DIM * 6)
    assert (4, 250) in {key[:2] for key in evaluate._COMPILED[model][-1]}  # 250 passes of 4 samples were compiled
    whole = evaluate.log_likelihood(model, x, k=1000, train_k=4, seed=4)
    for key in ("log_likelihood", "elbo", "iwae_k", "kl"):
        assert chunked[key] == pytest.approx(whole[key], abs=0.02), key


def test_a_larger_later_batch_gets_smaller_chunks(reference):
    weights, bias, x, log_px = reference
    model = ppca.ppca_vae(weights, bias, loc_offset=0.2)
    # A first batch of 3 examples, then one of 40: chunks sized from the first batch alone would hold
    # 13x the budget's floats for the second.
    data = tf.data.Dataset.from_tensors(x[:3]).concatenate(tf.data.Dataset.from_tensors(x[3:43]))
    budget = 40 * ppca.DATA_DIM * 8
    result = evaluate.log_likelihood(model, data, k=1000, train_k=4, seed=3, chunk_elements=budget)
    compiled = {key[:2] for key in evaluate._COMPILED[model][-1]}
    assert (104, 9) in compiled and (8, 125) in compiled  # [3, 104] samples, then [40, 8] within the budget
    assert result["num_examples"] == 43
    whole = evaluate.log_likelihood(model, x[:43], k=1000, train_k=4, seed=4)
    for key in ("elbo", "iwae_k", "kl"):
        assert result[key] == pytest.approx(whole[key], abs=0.02), key
    assert result["log_likelihood"] == pytest.approx(float(np.mean(log_px[:43])), abs=0.02)


def test_chunk_size_respects_the_memory_budget():
    for batch, dim, group in ((100, 784, 5), (100, 784, 50), (500, 784, 1), (1, 64, 5)):
        chunk = evaluate._chunk_size(5000, batch, dim, group)
        assert chunk % group == 0 and chunk <= 5000
        assert batch * chunk * dim <= max(evaluate._ELEMENTS_PER_CHUNK, batch * group * dim)


def test_dataset_input_matches_array_input(reference):
    weights, bias, x, _ = reference
    model = ppca.ppca_vae(weights, bias, loc_offset=0.5)
    from_array = evaluate.log_likelihood(model, x, k=20, batch_size=64, seed=5, return_per_example=True)
    dataset = tf.data.Dataset.from_tensor_slices((x, x)).batch(64)
    from_dataset = evaluate.log_likelihood(model, dataset, k=20, seed=5, return_per_example=True)
    np.testing.assert_allclose(
        from_array["per_example_log_likelihood"], from_dataset["per_example_log_likelihood"], atol=1e-5
    )
    assert from_array["num_examples"] == len(x)


def test_untrained_model_at_k_5000_is_finite(binary_data):
    model = VAE(input_dim=64, latent_dim=10, hidden_units=[32, 32])
    result = vizoo.log_likelihood(model, binary_data[:20], k=5000)
    assert all(np.isfinite(result[key]) for key in ("nll", "elbo", "iwae_k", "kl", "reconstruction"))
    assert result["nll"] > 0


def test_bad_arguments_are_named(binary_data):
    model = VAE(input_dim=64, latent_dim=2, hidden_units=[8])
    with pytest.raises(ValueError, match="Received: k=0"):
        evaluate.log_likelihood(model, binary_data, k=0)
    with pytest.raises(ValueError, match="Received: train_k=10"):
        evaluate.log_likelihood(model, binary_data, k=5, train_k=10)
    with pytest.raises(ValueError, match="Received: data.shape=\\(96, 63\\)"):
        evaluate.log_likelihood(model, binary_data[:, :63], k=5)
    bad = binary_data.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match="data must be finite. Received: data\\[3, 7\\]=nan"):
        evaluate.log_likelihood(model, bad, k=5)
    with pytest.raises(ValueError, match="Received: chunk_elements=0"):
        evaluate.log_likelihood(model, binary_data, k=5, chunk_elements=0)
    with pytest.raises(ValueError, match="empty"):
        evaluate.log_likelihood(model, np.zeros((0, 64), "float32"), k=5)


def test_progress_bar_counts_batches_with_the_running_nll(trained_vae, binary_data, capsys):
    model = trained_vae
    silent = evaluate.log_likelihood(model, binary_data, k=10, batch_size=32, seed=0)
    assert capsys.readouterr().out == ""  # verbose=0, the default: silent
    shown = evaluate.log_likelihood(model, binary_data, k=10, batch_size=32, seed=0, verbose=1)
    out = capsys.readouterr().out
    assert "3/3" in out and "nll:" in out and f"{shown['nll']:.4f}" in out  # the last update is the final NLL
    assert shown["nll"] == silent["nll"]  # the bar changes nothing
    evaluate.log_likelihood(model, binary_data, k=10, batch_size=32, seed=0, verbose=2)
    assert capsys.readouterr().out.count("\n") == 1  # one line at the end
    dataset = tf.data.Dataset.from_tensor_slices(binary_data).batch(32).filter(lambda x: True)  # unknown size
    evaluate.log_likelihood(model, dataset, k=10, verbose=1)
    out = capsys.readouterr().out
    assert "3/Unknown" in out and "nll:" in out
    with pytest.raises(ValueError, match="Received: verbose=3"):
        evaluate.log_likelihood(model, binary_data, k=10, verbose=3)


def test_repeated_evaluations_reuse_the_compiled_loop_and_restart_the_noise(binary_data):
    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16], seed=0)
    first = evaluate.log_likelihood(model, binary_data[:40], k=30, batch_size=20, seed=7)
    compiled = dict(evaluate._COMPILED[model][-1])
    again = evaluate.log_likelihood(model, binary_data[:40], k=30, batch_size=20, seed=7)
    other = evaluate.log_likelihood(model, binary_data[:40], k=30, batch_size=20, seed=8)
    assert evaluate._COMPILED[model][-1] == compiled  # the same functions, no new trace
    assert again["nll"] == first["nll"] and other["nll"] != first["nll"]  # seeded like a fresh generator


def _evaluated_model(data):
    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16], seed=0)
    evaluate.log_likelihood(model, data[:40], k=30, batch_size=20, seed=7)
    assert model in evaluate._COMPILED
    return weakref.ref(model)


def test_the_compiled_loops_do_not_keep_a_model_alive(binary_data):
    reference = _evaluated_model(binary_data)
    gc.collect()
    assert reference() is None
