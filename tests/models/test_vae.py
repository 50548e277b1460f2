import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (
    assert_terms_close, run_compiled_model_test, run_in_fresh_process, run_model_test, run_serialization_test,
)
from vizoo.layers import GaussianLikelihood
from vizoo.losses import ELBOLoss, IWAELoss
from vizoo import evaluate
from vizoo.models import VAE


def small_vae(**kwargs):
    kwargs = {"input_dim": 64, "latent_dim": 4, "hidden_units": [16], "seed": 0, **kwargs}
    return VAE(**kwargs)


@pytest.mark.parametrize(
    "posterior, prior, loss, compiled_variants",
    [
        ("diagonal", "standard_normal", IWAELoss(k=3, gradient_estimator="dreg"), False),
        ("full_covariance", "vamp", ELBOLoss(k=2), False),
        ("radial", "mixture", ELBOLoss(k=1), False),
        pytest.param("diagonal", "standard_normal", IWAELoss(k=4), True, marks=pytest.mark.slow),
        pytest.param("iaf", "maf", IWAELoss(k=2), True, marks=pytest.mark.slow),
    ],
    ids=["diagonal_dreg", "full_covariance_vamp", "radial_mixture", "diagonal_xla_mixed", "iaf_maf_xla_mixed"],
)
def test_vae_passes_the_shared_model_checks(posterior, prior, loss, compiled_variants, binary_data, tmp_path):
    # Terms, given noise, training, serialization, .keras and evaluation (tests/helpers.py); the
    # compiled variants also train under XLA and under mixed_float16 (one plain, one flow model).
    make = lambda **kwargs: small_vae(posterior=posterior, prior=prior, **kwargs)  # noqa: E731
    if compiled_variants:
        run_compiled_model_test(make, binary_data, loss)
    else:
        run_model_test(make, binary_data, loss, tmp_path)


def test_terms_have_batch_first_shapes_and_k_from_the_loss(binary_data):
    model = small_vae()
    terms = model(binary_data[:3])
    assert {key: tuple(value.shape) for key, value in terms.items()} == {
        "log_px_z": (3, 1), "log_pz": (3, 1), "log_qz": (3, 1), "kl": (3, 1),
    }
    model.compile(optimizer="adam", loss=IWAELoss(k=7))
    assert model(binary_data[:3])["log_px_z"].shape == (3, 7)
    assert model(binary_data[:3], num_samples=2)["log_qz"].shape == (3, 2)


def test_recompiling_with_another_k_changes_the_samples_drawn(binary_data):
    model = small_vae()
    model.compile(optimizer="adam", loss=IWAELoss(k=3))
    model.fit(binary_data, epochs=1, verbose=0)
    assert model.predict(binary_data[:5], verbose=0)["log_pz"].shape == (5, 3)
    model.compile(optimizer="adam", loss=ELBOLoss(k=2))
    model.fit(binary_data, epochs=1, verbose=0)
    assert model.predict(binary_data[:5], verbose=0)["log_pz"].shape == (5, 2)


def test_fit_needs_no_targets_and_reports_the_bound(binary_data):
    model = small_vae()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=IWAELoss(k=5))
    history = model.fit(binary_data, batch_size=32, epochs=15, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] - 5.0
    # The reported loss is the negated IWAE-5 bound, in nats per example.
    value = model.evaluate(binary_data, batch_size=96, verbose=0)
    terms = model(binary_data, num_samples=5)
    log_w = np.asarray(terms["log_px_z"] + terms["log_pz"] - terms["log_qz"], "float64")
    direct = -np.mean(np.log(np.mean(np.exp(log_w), axis=1)))
    assert value == pytest.approx(direct, abs=0.3)  # different noise draws


def test_fit_accepts_x_x_pairs_datasets_and_validation_data(binary_data):
    model = small_vae()
    model.compile(optimizer="adam", loss=ELBOLoss(k=2, analytic_kl=True))
    model.fit(binary_data, binary_data, epochs=1, verbose=0)
    train = tf.data.Dataset.from_tensor_slices(binary_data).batch(32)
    validation = tf.data.Dataset.from_tensor_slices((binary_data, binary_data)).batch(32)
    history = model.fit(train, validation_data=validation, epochs=2, verbose=0)
    # val_loss is the bound on the validation data (other noise draws than evaluate's).
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(validation, verbose=0), abs=1.0)
    history = model.fit(binary_data, validation_data=(binary_data,), epochs=1, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(binary_data, verbose=0), abs=1.0)


def test_sample_weight_is_honoured(binary_data):
    model = small_vae()
    model.compile(optimizer="adam", loss=ELBOLoss())
    zeros = np.zeros(96)
    assert model.evaluate(binary_data, binary_data, sample_weight=zeros, verbose=0) == 0.0
    # Without targets too (the usual call): Keras alone drops the weights of array data given no y.
    assert model.evaluate(binary_data, sample_weight=zeros, verbose=0) == 0.0
    history = model.fit(
        binary_data, sample_weight=zeros, validation_data=(binary_data, None, zeros), epochs=1, batch_size=32, verbose=0
    )
    assert history.history["loss"] == [0.0] and history.history["val_loss"] == [0.0]
    assert model.evaluate(binary_data, verbose=0) > 10.0  # unweighted, the bound itself


@pytest.mark.parametrize(
    "call", ["evaluate", "fit_validation", "train_on_batch", "test_on_batch", "dataset"],
)
def test_bad_sample_weight_is_named_in_every_entry_point(call, binary_data):
    model = small_vae()
    model.compile(optimizer="adam", loss=ELBOLoss())
    weights = np.ones(96)
    weights[3] = np.nan
    with pytest.raises(ValueError, match="sample_weight (of x )?must be finite and non-negative numbers"):
        if call == "evaluate":
            model.evaluate(binary_data, sample_weight=weights, verbose=0)
        elif call == "fit_validation":
            model.fit(binary_data, validation_data=(binary_data, None, -np.ones(96)), verbose=0)
        elif call == "train_on_batch":  # a NaN weight would make every weight NaN; a negative one, ascend the bound
            model.train_on_batch(binary_data, sample_weight=-np.ones(96))
        elif call == "test_on_batch":
            model.test_on_batch(binary_data, sample_weight=weights)
        else:
            model.fit(tf.data.Dataset.from_tensor_slices((binary_data, binary_data, weights)).batch(32), verbose=0)


def test_mixed_precision_computes_in_float16_and_keeps_densities_in_float32(binary_data):
    # Training under mixed_float16 is run_compiled_model_test above; here, where each part computes.
    model = small_vae(dtype="mixed_float16")
    assert model.encoder_layers[0].compute_dtype == "float16"
    assert model.likelihood.logits_layer.compute_dtype == "float16"
    assert {value.dtype.name for value in model(binary_data[:2]).values()} == {"float32"}
    flows = small_vae(posterior="iaf", prior="maf", dtype="mixed_float16")
    assert {value.dtype.name for value in flows(binary_data[:2], num_samples=2).values()} == {"float32"}
    assert flows.posterior.networks[0].compute_dtype == "float32"  # flows keep full precision


def linear_gaussian_log_px(model, x):
    """Exact log p(x) of a VAE with a linear decoder and Gaussian likelihood: N(b, W W^T + s^2 I)."""
    from scipy import stats

    kernel, bias = (np.asarray(v, "float64") for v in model.likelihood.loc_layer.weights)
    scale = float(np.exp(np.asarray(model.likelihood.log_scale, "float64")))
    covariance = kernel.T @ kernel + scale**2 * np.eye(len(bias))
    return stats.multivariate_normal(bias, covariance).logpdf(np.asarray(x, "float64"))


def test_gaussian_likelihood_model_trains_on_real_valued_data():
    # Linear decoder, learned scale: log p(x) is exact for any weights, so training and the
    # importance-sampled estimate are checked against it, not just for finiteness.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 2)) @ rng.normal(size=(2, 6)) + 0.5 * rng.normal(size=(64, 6))).astype("float32")
    model = VAE(input_dim=6, latent_dim=2, hidden_units=[], likelihood="gaussian", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=IWAELoss(k=3))
    model.build((None, 6))
    before = linear_gaussian_log_px(model, x).mean()
    model.fit(x, batch_size=32, epochs=25, verbose=0)
    exact = linear_gaussian_log_px(model, x).mean()
    assert exact > before + 1.0, (before, exact)
    estimate = evaluate.log_likelihood(model, x, k=200, seed=0)["log_likelihood"]
    assert exact - 0.5 < estimate < exact + 0.05, (estimate, exact)  # a stochastic lower bound, and close (0.06 below)


def test_output_bias_starts_at_the_data_mean(binary_data):
    model = small_vae()
    model.initialize_output_bias(binary_data.mean(axis=0))
    probabilities = keras.ops.sigmoid(model.likelihood.logits_layer.bias)
    np.testing.assert_allclose(probabilities, np.clip(binary_data.mean(0), 1e-3, 1 - 1e-3), rtol=1e-4)
    with pytest.raises(ValueError, match="Bernoulli likelihood. Received: likelihood=GaussianLikelihood"):
        small_vae(likelihood="gaussian").initialize_output_bias(binary_data.mean(0))


def test_generate_decodes_prior_samples():
    images = np.asarray(small_vae().generate(5, seed=1))
    assert images.shape == (5, 64) and np.all((images >= 0) & (images <= 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"hidden_units": [], "likelihood": GaussianLikelihood(64, scale=0.1, name="likelihood")},
        {"dtype": "mixed_float16"},
        {"hidden_units": [], "decoder_hidden_units": [16, 8]},
    ],
    ids=["bernoulli", "linear_gaussian", "mixed_precision", "decoder_units"],
)
def test_serialization(kwargs, binary_data):
    model = small_vae(**kwargs)
    model(binary_data[:2])
    restored = run_serialization_test(model)
    restored.build((None, 64))
    assert len(restored.weights) == len(model.weights)
    assert type(restored.likelihood) is type(model.likelihood)
    assert restored.likelihood.dtype_policy.name == model.likelihood.dtype_policy.name


def test_decoder_hidden_units_default_to_the_encoders_reversed(binary_data):
    default = small_vae(hidden_units=[16, 8])
    assert default.decoder_hidden_units == [8, 16]
    model = small_vae(hidden_units=[], decoder_hidden_units=[16, 8])
    model(binary_data[:2])
    assert not model.encoder_layers
    assert [layer.units for layer in model.decoder_layers] == [16, 8]
    assert model.decoder_layers[0].kernel.shape == (4, 16)  # z -> 16 -> 8 -> the likelihood
    assert model.posterior.loc_layer.kernel.shape == (64, 4)  # x straight to q(z|x)
    # A config saved before the option existed loads with the encoder's sizes reversed.
    config = default.get_config()
    del config["decoder_hidden_units"]
    assert VAE.from_config(config).decoder_hidden_units == [8, 16]


POSTERIORS_AND_PRIORS = [
    ("full_covariance", "standard_normal"),
    ("iaf", "standard_normal"),
    ("planar", "mixture"),
    ("radial", "maf"),
    ("diagonal", "vamp"),
    ("full_covariance", "vamp"),
]


@pytest.mark.parametrize("posterior, prior", POSTERIORS_AND_PRIORS)
def test_every_posterior_and_prior_gives_both_bounds_and_every_gradient(posterior, prior, binary_data):
    # One forward and backward pass per bound (the training below is the slow tier's).
    model = small_vae(posterior=posterior, prior=prior)
    model.build((None, 64))
    for loss in (ELBOLoss(k=2), IWAELoss(k=3)):
        model.compile(optimizer="adam", loss=loss)
        with tf.GradientTape() as tape:
            terms = model(binary_data[:8])
            value = model.compute_loss(y_pred=terms)
        assert {name: tuple(v.shape) for name, v in terms.items() if name in CORE} == {name: (8, loss.k) for name in CORE}
        assert float(value) == pytest.approx(float(loss(None, terms)))
        gradients = tape.gradient(value, model.trainable_variables)
        silent = [v.path for v, g in zip(model.trainable_variables, gradients) if g is None or not np.any(np.asarray(g))]
        assert not silent, (type(loss).__name__, silent)


CORE = ("log_px_z", "log_pz", "log_qz")


@pytest.mark.slow  # 12 short trainings (eager)
@pytest.mark.parametrize("posterior, prior", POSTERIORS_AND_PRIORS)
def test_every_posterior_and_prior_trains_with_every_bound(posterior, prior, binary_data):
    # The compiled training step is run_model_test's (above); this grid checks the combinations
    # themselves, eagerly (no tracing), with both bounds on one model.
    model = small_vae(posterior=posterior, prior=prior)
    assert ("kl" in model.available_terms) == (posterior == "full_covariance" and prior == "standard_normal")
    for loss in (ELBOLoss(k=2), IWAELoss(k=3)):
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, run_eagerly=True)
        before = float(model.evaluate(binary_data, batch_size=96, verbose=0))
        history = model.fit(binary_data, batch_size=32, epochs=2, verbose=0)
        assert model(binary_data[:4])["log_qz"].shape == (4, loss.k)
        assert np.all(np.isfinite(history.history["loss"]))
        assert float(model.evaluate(binary_data, batch_size=96, verbose=0)) < before, type(loss).__name__
    assert np.asarray(model.generate(3, seed=0)).shape == (3, 64)


def test_posterior_latent_dim_and_likelihood_output_dim_must_match_the_model():
    from vizoo.layers import IAFPosterior

    with pytest.raises(ValueError, match="Received: posterior.latent_dim=3"):
        small_vae(posterior=IAFPosterior(3))
    with pytest.raises(ValueError, match=r"output_dim must be the model's input_dim \(64\). Received: likelihood.output_dim=7"):
        small_vae(likelihood=GaussianLikelihood(7))


def test_sample_terms_and_joint_terms_take_what_users_pass(binary_data):
    x = binary_data[:4]
    model = small_vae()  # not built: sample_terms builds it (as call does)
    latent_dim = model.latent_dim
    noise = np.random.default_rng(0).normal(size=(4, 2, latent_dim))  # NumPy's float64
    values = model.sample_terms(x, terms=("log_px_z", "log_qz"), noise=noise)
    assert values["log_qz"].shape == (4, 2) and values["log_qz"].dtype == "float32"
    # Noise of unknown k in a traced function, with num_samples given.
    traced = tf.function(lambda x, eps: model.sample_terms(x, 2, terms=("log_qz",), noise=eps)["log_qz"],
                         input_signature=[tf.TensorSpec([None, 64]), tf.TensorSpec([None, None, latent_dim])])
    assert traced(x, noise.astype("float32")).shape == (4, 2)
    # z without its k axis would broadcast examples against each other ([4, 4] terms): named instead.
    with pytest.raises(ValueError, match=rf"z of shape \[batch, k, latent_dim\] = \[4, k, {latent_dim}\]. Received: z.shape=\(4, {latent_dim}\)"):
        model.joint_terms(x, noise[:, 0].astype("float32"))


@pytest.mark.slow  # a fresh interpreter
def test_keras_files_round_trip_in_a_fresh_process(binary_data, tmp_path):
    """A diagonal VAE, an IAF posterior with a MAF prior and a full-covariance one with a VampPrior load in
    another interpreter (one for the three: a start costs seconds) with the same terms, compiled, and train on."""
    from vizoo.layers import IAFPosterior, VampPrior

    models = {
        "diagonal": (small_vae(hidden_units=[16, 8]), 6),
        "iaf_maf": (small_vae(posterior=IAFPosterior(4, num_steps=2, hidden_units=[8], name="posterior"), prior="maf"), 2),
        "vamp": (small_vae(posterior="full_covariance", prior=VampPrior(num_components=5, name="prior")), 2),
    }
    for name, (model, k) in models.items():
        model.compile(optimizer="adam", loss=IWAELoss(k=k))
        model.fit(binary_data, epochs=1, verbose=0)
        model.save(tmp_path / f"{name}.keras")
        eps = np.random.default_rng(0).normal(size=(4, k, 4)).astype("float32")
        expected = model.sample_terms(binary_data[:4], noise=eps)
        np.savez(tmp_path / f"{name}.npz", eps=eps, **{key: np.asarray(v) for key, v in expected.items()})
    np.save(tmp_path / "x.npy", binary_data)
    output = run_in_fresh_process(
        f"""
        import warnings
        import keras, numpy as np
        import vizoo
        warnings.simplefilter("error")  # no silent skips while loading
        x = np.load({str(tmp_path / "x.npy")!r})
        for name in {list(models)!r}:
            expected = dict(np.load({str(tmp_path)!r} + f"/{{name}}.npz"))
            eps = expected.pop("eps")
            model = keras.models.load_model({str(tmp_path)!r} + f"/{{name}}.keras")
            terms = model.sample_terms(x[:4], noise=eps)
            assert sorted(terms) == sorted(expected), name
            for key, value in terms.items():
                np.testing.assert_allclose(np.asarray(value), expected[key], atol=1e-5, err_msg=name + key)
            k = eps.shape[1]
            assert type(model.loss).__name__ == "IWAELoss" and model.loss.k == k, model.loss
            assert model.predict(x[:3], verbose=0)["log_px_z"].shape == (3, k)
            history = model.fit(x, epochs=1, verbose=0)  # compiled on load: training continues
            assert np.isfinite(history.history["loss"][0])
            print(name, type(model.posterior).__name__, type(model.prior).__name__)
        """
    )
    assert output.splitlines() == [
        "diagonal DiagonalGaussianPosterior StandardNormalPrior",
        "iaf_maf IAFPosterior MAFPrior",
        "vamp FullCovarianceGaussianPosterior VampPrior",
    ]


# ------------------------------------------------------------------ bad input


def test_wrong_feature_size_is_named(binary_data):
    model = small_vae()
    model.compile(optimizer="adam", loss=IWAELoss())
    with pytest.raises(ValueError, match=r"x must have shape \(num_examples, 64\). Received: x.shape=\(96, 63\)"):
        model.fit(binary_data[:, :63], verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(binary_data[:, :10]).batch(8)
    with pytest.raises(ValueError, match=r"x must yield batches of shape \(batch, 64\). Received: x with element shape \(None, 10\)"):
        model.fit(dataset, verbose=0)
    with pytest.raises(ValueError, match=r"input_dim=64\). Received: inputs.shape=\(2, 3\)"):
        model(np.zeros((2, 3), "float32"))
    features = tf.data.Dataset.from_tensor_slices({"image": binary_data}).batch(8)  # as TFDS yields them
    with pytest.raises(ValueError, match=r"x must yield dense batches x of shape \(batch, 64\).*map a dataset of "
                                         r"feature dicts to its images first.*Received: x with elements \{'image'"):
        model.fit(features, verbose=0)


def test_non_finite_inputs_are_named(binary_data):
    model = small_vae()
    model.compile(optimizer="adam", loss=IWAELoss())
    bad = binary_data.copy()
    bad[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"x must be finite. Received: x\[5, 2\]=inf"):
        model.fit(bad, verbose=0)
    with pytest.raises(ValueError, match="validation_data must be finite"):
        model.fit(binary_data, validation_data=(bad,), verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(bad).batch(16)
    with pytest.raises(ValueError, match="x must be finite. Received: a batch of x containing non-finite values"):
        model.fit(dataset, verbose=0)


def test_data_outside_unit_interval_is_named_for_bernoulli(binary_data):
    model = small_vae()
    model.compile(optimizer="adam", loss=ELBOLoss())
    bad = binary_data * 255.0
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\] for the Bernoulli likelihood. Received: x with min=0, max=255"):
        model.fit(bad, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(bad - 1.0).batch(16)
    with pytest.raises(ValueError, match=r"^x must lie in \[0, 1\] for the Bernoulli likelihood. Received: a batch of x with min=-1, max=254$"):
        model.evaluate(dataset, verbose=0)
    with pytest.raises(ValueError, match="must lie in"):
        model.predict(bad, verbose=0)
    gaussian = small_vae(likelihood="gaussian")
    gaussian.compile(optimizer="adam", loss=ELBOLoss())
    gaussian.fit(bad, verbose=0)  # real-valued data is fine for a Gaussian likelihood


def test_losses_other_than_bounds_are_rejected():
    with pytest.raises(ValueError, match="Received: loss='mse'"):
        small_vae().compile(optimizer="adam", loss="mse")


def test_fit_without_compiled_loss_says_what_to_do(binary_data):
    model = small_vae()
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="call model.compile"):
        model.fit(binary_data, verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dim": 0}, "Received: latent_dim=0"),
        ({"input_dim": -1}, "Received: input_dim=-1"),
        ({"hidden_units": 200}, "Received: hidden_units=200"),
        ({"hidden_units": [200, 0]}, r"Received: hidden_units=\[200, 0\]"),
        ({"decoder_hidden_units": 8}, "Received: decoder_hidden_units=8"),
        ({"likelihood": "poisson"}, "Received: likelihood='poisson'"),
        ({"posterior": "flowy"}, "Received: posterior='flowy'"),
        ({"prior": 3}, "Received: prior=3"),
        ({"activation": "nope"}, "nope"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_vae(**kwargs)


def test_bad_num_samples_is_named(binary_data):
    with pytest.raises(ValueError, match="Received: num_samples=0"):
        small_vae()(binary_data[:2], num_samples=0)


def test_a_policy_outside_the_supported_precisions_is_named():
    # float64 computed log p(x|z) in float32 and the rest in float64: evaluation failed deep in TensorFlow.
    with pytest.raises(ValueError, match="Received: dtype='float64'"):
        small_vae(dtype="float64")
