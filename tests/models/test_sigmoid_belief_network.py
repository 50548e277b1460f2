"""SigmoidBeliefNetwork: exact densities by enumeration, NVIL state, training, saving, evaluation, export."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import sbn_reference as ref
from tests.helpers import run_serialization_test
from vizoo import evaluate
from vizoo.export import export_encoder
from vizoo.layers import BernoulliPosterior
from vizoo.losses import IWAELoss, NVILLoss, VIMCOLoss
from vizoo.models import MODELS, SigmoidBeliefNetwork


def all_binary(num_units):
    return ref.configurations(num_units)


@pytest.mark.parametrize(
    "latent_dims, hidden_units", [([3], []), ([2, 2], []), ([2, 1, 2], [3])], ids=["one", "two", "three_nonlinear"]
)
def test_p_and_q_are_normalized_distributions(latent_dims, hidden_units):
    model = ref.tiny_sbn(latent_dims=latent_dims, hidden_units=hidden_units)
    x = all_binary(ref.INPUT_DIM)  # all 32 binary images
    log_px = ref.exact_log_px(model, x).numpy().astype("float64")
    np.testing.assert_allclose(np.exp(log_px).sum(), 1.0, atol=1e-5)  # sum_x p(x) = 1
    _, log_q = ref.enumerated_terms(model, x)
    np.testing.assert_allclose(np.exp(log_q.numpy().astype("float64")).sum(axis=1), 1.0, atol=1e-5)


def test_log_densities_match_numpy_and_the_samples():
    model = ref.tiny_sbn()
    np.testing.assert_allclose(ref.exact_log_px(model, ref.DATA), ref.numpy_log_px(model, ref.DATA), atol=1e-5)
    terms = model.sample_terms(ref.DATA, 50, seed=0, terms=("z", "log_qz", "log_pz", "log_px_z"))
    z = terms["z"].numpy()
    assert z.shape == (3, 50, 4) and set(np.unique(z)) <= {0.0, 1.0}
    # log q from the layer-by-layer sampler equals the density at the sample, and numpy's.
    params = {"logits": model.encode(ref.DATA)["logits"][:, None, :]}
    np.testing.assert_allclose(terms["log_qz"], model.posterior.log_prob(z, params), atol=1e-5)
    index = (z @ (2 ** np.arange(3, -1, -1))).astype(int)  # the configuration number of each sample
    numpy_log_q = ref.numpy_log_q(model, ref.DATA)
    np.testing.assert_allclose(terms["log_qz"], np.take_along_axis(numpy_log_q, index, axis=1), atol=1e-5)
    log_w, _ = ref.enumerated_terms(model, ref.DATA)
    sampled_log_w = terms["log_px_z"] + terms["log_pz"] - terms["log_qz"]
    np.testing.assert_allclose(sampled_log_w, np.take_along_axis(log_w.numpy(), index, axis=1), atol=1e-5)


def test_samples_follow_q():
    model = ref.tiny_sbn()
    z = model.sample_terms(np.repeat(ref.DATA[:1], 20000, axis=0), 1, seed=0, terms=("z",))["z"].numpy()[:, 0]
    index = (z @ (2 ** np.arange(3, -1, -1))).astype(int)
    frequencies = np.bincount(index, minlength=16) / len(index)
    _, log_q = ref.enumerated_terms(model, ref.DATA[:1])
    probabilities = np.exp(log_q.numpy()[0])
    standard_error = np.sqrt(probabilities * (1 - probabilities) / len(index))
    assert np.max(np.abs(frequencies - probabilities) / (standard_error + 1e-4)) < 5


@pytest.mark.parametrize("seed", [0, None])  # an int seed, and the model's generator
def test_prior_samples_follow_p(seed):
    """Ancestral draws h ~ p(h) have p's configuration frequencies. With an int seed, each layer's uniforms come
    from their own stream (one stream for all layers made the layers' draws alike: wrong frequencies)."""
    model = ref.tiny_sbn(latent_dims=(2, 2))
    h = keras.ops.convert_to_numpy(model.sample_prior(20000, seed))
    index = (h @ (2 ** np.arange(3, -1, -1))).astype(int)
    frequencies = np.bincount(index, minlength=16) / len(index)
    probabilities = np.exp(keras.ops.convert_to_numpy(model.log_prior(ref.configurations(4))))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    standard_error = np.sqrt(probabilities * (1 - probabilities) / len(index))
    assert np.max(np.abs(frequencies - probabilities) / (standard_error + 1e-4)) < 5


def test_evaluate_log_likelihood_matches_the_exact_value_within_its_monte_carlo_error():
    model = ref.tiny_sbn()
    k = 5000
    result = evaluate.log_likelihood(model, ref.DATA, k=k, seed=0, return_per_example=True)
    log_w, log_q = (t.numpy().astype("float64") for t in ref.enumerated_terms(model, ref.DATA))
    q = np.exp(log_q)
    log_px = np.log(np.sum(q * np.exp(log_w), axis=1))
    np.testing.assert_allclose(log_px, ref.numpy_log_px(model, ref.DATA), atol=1e-5)
    # Standard error of log(mean of k weights), by the delta method: sqrt(Var_q[w] / (k p(x)^2)).
    relative_variance = np.sum(q * np.exp(2 * log_w), axis=1) / np.exp(2 * log_px) - 1
    error = result["per_example_log_likelihood"] - log_px
    assert np.max(np.abs(error) / np.sqrt(relative_variance / k)) < 5, error
    elbo = np.sum(q * log_w, axis=1)
    elbo_error = np.sqrt(np.sum(q * (log_w - elbo[:, None]) ** 2, axis=1).mean() / (3 * k))
    assert abs(result["elbo"] - elbo.mean()) < 5 * elbo_error
    assert result["latent_units"] == 2 and 0 <= result["active_units"] <= 2


def test_terms_shapes_and_availability(binary_data):
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[6, 4], seed=0)
    assert model.available_terms == ("log_px_z", "log_pz", "log_qz", "baseline", "signal_scale")
    terms = model(binary_data[:5], num_samples=3, terms=("log_px_z", "log_pz", "log_qz", "baseline", "signal_scale"))
    assert {k: tuple(v.shape) for k, v in terms.items()} == {
        "log_px_z": (5, 3), "log_pz": (5, 3), "log_qz": (5, 3), "baseline": (5, 1), "signal_scale": (5, 1)
    }
    np.testing.assert_allclose(terms["signal_scale"], 1.0)
    assert model.posterior_mean(binary_data[:5]).shape == (5, 6)
    generated = model.generate(4, seed=0).numpy()
    assert generated.shape == (4, 64) and np.all((generated >= 0) & (generated <= 1))
    no_baseline = SigmoidBeliefNetwork(input_dim=64, latent_dims=[6], baseline_hidden_units=None)
    with pytest.raises(ValueError, match="Cannot compute the term 'baseline'.*baseline_hidden_units=None"):
        no_baseline.sample_terms(binary_data[:2], 1, terms=["baseline"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dims": []}, "latent_dims must name at least one stochastic layer. Received: latent_dims=\\[\\]"),
        ({"latent_dims": [2, 2, 2, 2]}, "1 to 3 stochastic layers. Received: latent_dims=\\[2, 2, 2, 2\\]"),
        ({"latent_dims": [2, 0]}, "Received: latent_dims=\\[2, 0\\]"),
        ({"baseline_decay": 1.0}, "Received: baseline_decay=1.0"),
        ({"hidden_units": 5}, "Received: hidden_units=5"),
        ({"activation": "nope"}, "nope"),
    ],
)
def test_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SigmoidBeliefNetwork(input_dim=8, **kwargs)


def test_an_unbuilt_model_samples_and_bounds_and_numpy_numbers_are_accepted(binary_data):
    # sample_terms and bound build the model as a call does (its prior logits exist only once built).
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[3, 2], seed=0, baseline_decay=np.float32(0.5))
    assert model.baseline_decay == 0.5
    assert model.sample_terms(binary_data[:3], 2, terms=("log_pz",))["log_pz"].shape == (3, 2)
    other = SigmoidBeliefNetwork(input_dim=64, latent_dims=[3, 2], seed=0)
    assert other.bound(binary_data[:3], loss=VIMCOLoss(k=2)).shape == (3,)


def test_reparameterization_losses_are_refused():
    model = SigmoidBeliefNetwork(input_dim=8, latent_dims=[2])
    with pytest.raises(ValueError, match="IWAELoss differentiates through the samples z, but BernoulliPosterior"):
        model.compile(optimizer="adam", loss=IWAELoss(k=5))


def test_gradient_groups_partition_and_the_baseline_follows_the_loss(binary_data):
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4, 3], hidden_units=[5], seed=0)
    model.build((None, 64))
    groups = model.gradient_groups()
    flat = [v.path for variables in groups.values() for v in variables]
    assert sorted(flat) == sorted(v.path for v in model.trainable_variables) and len(set(flat)) == len(flat)
    assert all("/posterior/" in v.path for v in groups["inference"])
    assert all("/baseline/" in v.path for v in groups["control"])
    model.compile(optimizer="adam", loss=VIMCOLoss(k=2))
    assert not model.gradient_groups()["control"] and not model.baseline_network.trainable
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in particular no "Gradients do not exist for variables"
        model.fit(binary_data, batch_size=32, epochs=1, verbose=0)
    model.compile(optimizer="adam", loss=NVILLoss())
    assert model.gradient_groups()["control"]


def test_running_moments_update_in_training_calls_only(binary_data):
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4], seed=0, baseline_decay=0.5)
    model.compile(optimizer="adam", loss=NVILLoss(k=3))
    model(binary_data, training=False)
    model.signal_mean.assign(-10.0)
    model.signal_variance.assign(9.0)
    state = model.seed_generator.state.numpy()
    terms = model(binary_data, training=False)
    assert (float(model.signal_mean), float(model.signal_variance)) == (-10.0, 9.0)
    np.testing.assert_allclose(terms["signal_scale"], 3.0)
    model.seed_generator.state.assign(state)
    training_terms = model(binary_data, training=True)
    np.testing.assert_allclose(training_terms["log_qz"], terms["log_qz"])  # the same draws
    residual = terms["log_px_z"] + terms["log_pz"] - terms["log_qz"] - (terms["baseline"] + 10.0)  # l - b(x)
    np.testing.assert_allclose(float(model.signal_mean), 0.5 * -10.0 + 0.5 * np.mean(residual), rtol=1e-5)
    np.testing.assert_allclose(float(model.signal_variance), 0.5 * 9.0 + 0.5 * np.var(residual), rtol=1e-4)


@pytest.mark.slow  # long training (15 epochs x 3 estimators)
@pytest.mark.parametrize(
    "loss", [VIMCOLoss(k=5), NVILLoss(), NVILLoss(k=2, baselines=False)], ids=["vimco", "nvil", "reinforce"]
)
def test_training_improves_the_bound(loss, binary_data):
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[8], seed=0)
    model.initialize_output_bias(binary_data.mean(axis=0))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    before = evaluate.log_likelihood(model, binary_data, k=50, seed=0)["iwae_k"]
    history = model.fit(binary_data, batch_size=16, epochs=15, verbose=0)  # fit(x): no targets
    assert np.all(np.isfinite(history.history["loss"]))
    after = evaluate.log_likelihood(model, binary_data, k=50, seed=0)["iwae_k"]
    assert after > before + 0.3, (before, after)  # about 4.8, 2.1 and 0.6 nats (REINFORCE is slow)


@pytest.mark.slow  # XLA compilations
def test_xla_computes_the_same_terms_and_trains(binary_data):
    names = ("log_px_z", "log_pz", "log_qz", "baseline", "signal_scale")
    noise = np.random.default_rng(0).random((8, 3, 7)).astype("float32")  # uniforms for 4 + 3 Bernoulli units
    # NVIL's step (with its baseline network and control-variate group); VIMCO trains under XLA
    # in test_passes_the_shared_model_checks[vimco_xla_mixed].
    for loss in (NVILLoss(k=3),):
        model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4, 3], seed=0)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss, jit_compile=True)
        model.build((None, 64))
        compiled = tf.function(lambda x, eps: model.sample_terms(x, noise=eps, terms=names), jit_compile=True)
        eager = model.sample_terms(binary_data[:8], noise=noise, terms=names)
        for name, value in compiled(binary_data[:8], noise).items():
            np.testing.assert_allclose(value, eager[name], atol=1e-4, err_msg=name)
        before = float(np.mean(loss.bound(eager)))
        model.fit(binary_data, batch_size=48, epochs=5, verbose=0)  # the XLA-compiled step
        after = float(np.mean(loss.bound(model.sample_terms(binary_data[:8], noise=noise, terms=names))))
        assert after > before + 0.5, (type(loss).__name__, before, after)


def test_serialization():
    model = SigmoidBeliefNetwork(
        input_dim=10, latent_dims=[4, 3], hidden_units=[5], baseline_hidden_units=[6], baseline_decay=0.9, seed=3
    )
    restored = run_serialization_test(model)
    assert restored.latent_dims == [4, 3] and restored.baseline_decay == 0.9
    run_serialization_test(SigmoidBeliefNetwork(input_dim=10, latent_dims=[2], baseline_hidden_units=None))
    run_serialization_test(BernoulliPosterior([3, 2], hidden_units=[4], name="posterior"))
    assert MODELS["sbn"] is SigmoidBeliefNetwork


@pytest.mark.slow  # beyond run_model_test's .keras check: the NVIL running moments and weight paths
def test_keras_file_round_trip_keeps_weights_baseline_state_and_loss(binary_data, tmp_path):
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4, 3], hidden_units=[5], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=NVILLoss(k=2))
    model.fit(binary_data, batch_size=32, epochs=2, verbose=0)
    assert float(model.signal_mean) != 0.0 and float(model.signal_variance) != 1.0
    path = os.path.join(tmp_path, "sbn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.loss) is NVILLoss and loaded.loss.k == 2
    assert float(loaded.signal_mean) == float(model.signal_mean)
    assert float(loaded.signal_variance) == float(model.signal_variance)
    for a, b in zip(model.weights, loaded.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    noise = np.random.default_rng(0).random((3, 4, 7)).astype("float32")
    names = ("z", "log_px_z", "log_pz", "log_qz", "baseline", "signal_scale")
    first = model.sample_terms(binary_data[:3], noise=noise, terms=names)
    second = loaded.sample_terms(binary_data[:3], noise=noise, terms=names)
    for name in names:
        np.testing.assert_allclose(first[name], second[name], atol=1e-6, err_msg=name)
    loaded.fit(binary_data, batch_size=32, epochs=1, verbose=0)  # training resumes with the optimizer state


def test_export_serves_first_layer_probabilities_and_a_deterministic_sampler(binary_data, tmp_path):
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4, 3], seed=0)
    target = export_encoder(model, tmp_path / "encoder")
    served = tf.saved_model.load(target)
    x = binary_data[:3]
    out = served.signatures["serving_default"](x=tf.constant(x))
    np.testing.assert_allclose(out["probs"], model.posterior_mean(x), atol=1e-6)
    eps = np.random.default_rng(0).random((3, 5, 7)).astype("float32")
    sample = served.signatures["sample"](x=tf.constant(x), eps=tf.constant(eps))
    expected = model.sample_terms(x, noise=eps, terms=("z", "log_qz"))
    np.testing.assert_array_equal(sample["z"], expected["z"])
    np.testing.assert_allclose(sample["log_qz"], expected["log_qz"], atol=1e-5)


# ------------------------------------------------------------ the shared checks
def uniform_noise(model, batch, k, seed=0):
    """The SBN's base noise: one uniform per binary unit and sample."""
    return np.random.default_rng(seed).random((batch, k, *model.posterior.noise_shape)).astype("float32")


@pytest.mark.parametrize(
    "loss, compiled_variants",
    [(NVILLoss(k=2), False), pytest.param(VIMCOLoss(k=3), True, marks=pytest.mark.slow)],
    ids=["nvil", "vimco_xla_mixed"],
)
def test_passes_the_shared_model_checks(loss, compiled_variants, binary_data, tmp_path):
    from tests.helpers import run_compiled_model_test, run_model_test

    def make(**kwargs):
        model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4, 3], hidden_units=[5], seed=0, **kwargs)
        model.initialize_output_bias(binary_data.mean(axis=0))
        return model

    if compiled_variants:
        run_compiled_model_test(make, binary_data, loss, make_noise=uniform_noise)
    else:
        run_model_test(make, binary_data, loss, tmp_path, make_noise=uniform_noise)


def test_bernoulli_posterior_passes_the_shared_posterior_checks():
    from tests.helpers import run_posterior_test

    posterior, params = run_posterior_test(
        lambda **kwargs: BernoulliPosterior([3, 2], hidden_units=[4], **kwargs), mean_is_expectation=False
    )
    assert not posterior.reparameterized and posterior.has_density


def test_nvil_trains_under_mixed_float16(binary_data):
    # NVIL's running moments of the learning signal and the prior's logits are float32 variables that the
    # model's float16 call reads without rounding (and assigns without a dtype clash).
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4, 3], seed=0, dtype="mixed_float16")
    model.compile(optimizer="adam", loss=NVILLoss(k=2))
    history = model.fit(binary_data, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.signal_variance.dtype == "float32" and float(model.signal_variance.numpy()) != 1.0
    model.prior_logits.assign(np.full(3, 0.1234567, "float32"))
    x = binary_data[:2]
    inside = model(x, seed=1)["log_pz"]
    outside = model.sample_terms(x, num_samples=2, seed=1, terms=("log_pz",))["log_pz"]
    np.testing.assert_allclose(inside, outside, rtol=1e-6)
