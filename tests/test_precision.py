"""Precision: mixed bfloat16/float16 train and evaluate with float32 densities; copies keep the weights."""

import numpy as np
import pytest

import vizoo
from vizoo.losses import IWAELoss
from vizoo.models import VAE
from vizoo.precision import with_precision


def small_vae(**kwargs):
    return VAE(**{"input_dim": 64, "latent_dim": 4, "hidden_units": [32, 16], "seed": 0, **kwargs})


@pytest.mark.slow  # trains a flow model in each mixed policy
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_policies_train_and_evaluate_with_float32_heads(policy, binary_data):
    model = small_vae(dtype=policy, posterior="iaf", prior="mixture")
    model.compile(optimizer="adam", loss=IWAELoss(k=3))
    history = model.fit(binary_data, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    compute = policy.split("_")[1]
    assert model.encoder_layers[0].compute_dtype == compute and model.decoder_layers[0].compute_dtype == compute
    assert model.input_dtype == "float32"  # the likelihood scores the data, not the data rounded
    params = model.encode(binary_data[:2])
    assert {value.dtype.name for value in params.values()} == {"float32"}  # the posterior's head
    assert model.likelihood(np.zeros((2, 1, 32), compute))["logits"].dtype.name == "float32"
    assert model.prior.compute_dtype == "float32"
    assert {value.dtype.name for value in model(binary_data[:2]).values()} == {"float32"}
    result = vizoo.evaluate.log_likelihood(model, binary_data[:16], k=20, batch_size=8)
    assert np.isfinite(result["nll"]) and result["log_likelihood"] >= result["elbo"]


def test_with_precision_copies_the_weights_and_leaves_the_model_alone(binary_data):
    model = small_vae(prior="maf")
    model.build((None, 64))
    assert with_precision(model, "float32") is model
    copy = with_precision(model, "mixed_bfloat16")
    assert copy is not model and model.dtype_policy.name == "float32"
    assert copy.dtype_policy.name == "mixed_bfloat16" and copy.decoder_layers[0].compute_dtype == "bfloat16"
    for a, b in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    eps = np.random.default_rng(0).normal(size=(8, 4, 4)).astype("float32")
    exact, rounded = model.sample_terms(binary_data[:8], noise=eps), copy.sample_terms(binary_data[:8], noise=eps)
    for name in exact:  # the same model, computed with 8-bit mantissas in the dense layers
        np.testing.assert_allclose(rounded[name], exact[name], rtol=0.02, atol=0.3, err_msg=name)


def test_bfloat16_evaluation_of_a_float32_model_is_close(trained_vae, binary_data):
    model = trained_vae
    results = [
        vizoo.evaluate.log_likelihood(model, binary_data, k=200, seed=1, precision=precision)
        for precision in (None, "mixed_bfloat16")
    ]
    # Same samples (the noise is drawn in float32 from the same seed); only the rounding differs.
    assert abs(results[0]["nll"] - results[1]["nll"]) < 0.02  # measured: 4e-4 nats


def test_unknown_precision_is_named(binary_data):
    with pytest.raises(ValueError, match="Received: precision='float8'"):
        vizoo.evaluate.log_likelihood(small_vae(), binary_data[:4], k=2, precision="float8")
