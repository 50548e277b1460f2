import os
import subprocess
import sys

import numpy as np
import pytest

from vizoo.export import export_encoder
from vizoo.losses import IWAELoss
from vizoo.models import VAE


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = (rng.random((40, 64)) < 0.3).astype("float32")
    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16, 16], seed=0)
    model.compile(optimizer="adam", loss=IWAELoss(k=3))
    model.fit(x, epochs=1, verbose=0)
    directory = tmp_path_factory.mktemp("export")
    path = export_encoder(model, directory / "encoder", version=3)
    return model, x, path


def test_export_uses_the_tensorflow_serving_layout(exported):
    _, _, path = exported
    assert os.path.basename(path) == "3"
    assert os.path.exists(os.path.join(path, "saved_model.pb"))


@pytest.mark.slow  # runs saved_model_cli
def test_saved_model_cli_lists_the_signatures(exported):
    _, _, path = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed beside this interpreter")
    result = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "signature_def['serving_default']" in result.stdout
    assert "signature_def['sample']" in result.stdout
    assert "eps" in result.stdout


def test_bad_version_is_named(exported, tmp_path):
    model, _, _ = exported
    with pytest.raises(ValueError, match="Received: version=0"):
        export_encoder(model, tmp_path, version=0)


def test_full_covariance_encoder_exports_its_cholesky_factor(tmp_path):
    import tensorflow as tf

    model = VAE(input_dim=64, latent_dim=3, hidden_units=[8], posterior="full_covariance", seed=0)
    x = (np.random.default_rng(0).random((4, 64)) < 0.3).astype("float32")
    eps = np.random.default_rng(1).normal(size=(4, 2, 3)).astype("float32")
    loaded = tf.saved_model.load(export_encoder(model, tmp_path / "encoder"))
    served = loaded.signatures["serving_default"](x=tf.constant(x))
    expected = model.posterior(model.encoder_layers[0](x))
    assert sorted(served) == ["loc", "log_scale", "scale_tril"]
    np.testing.assert_allclose(served["scale_tril"].numpy(), expected["scale_tril"], atol=1e-5)
    sampled = loaded.signatures["sample"](x=tf.constant(x), eps=tf.constant(eps))
    z, log_qz = model.posterior.transform(expected, eps)
    np.testing.assert_allclose(sampled["z"].numpy(), z, atol=1e-5)
    np.testing.assert_allclose(sampled["log_qz"].numpy(), log_qz, atol=1e-5)


def test_served_inputs_of_another_shape_are_named(exported):
    # A served signature does not enforce its spec's shape (nor can it check a rank): the export checks sizes.
    import tensorflow as tf

    _, x, path = exported
    loaded = tf.saved_model.load(path)
    eps = np.zeros((2, 3, 4), "float32")
    cases = [
        ("serving_default", {"x": x[0]}, "x must have shape \\[batch, 64\\]; received another shape"),
        ("serving_default", {"x": x[None, :2]}, "x must have shape \\[batch, 64\\]; received another shape"),
        ("sample", {"x": x[:2], "eps": eps[:, 0]}, "eps must have shape \\[batch, k, 4\\].*another shape"),
        ("sample", {"x": x[:2], "eps": eps[None]}, "eps must have shape \\[batch, k, 4\\].*another shape"),
        ("sample", {"x": x[:2], "eps": np.zeros((2, 3, 5), "float32")}, "eps must have shape.*another shape"),
    ]
    for signature, inputs, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.signatures[signature](**{key: tf.constant(value) for key, value in inputs.items()})
    # (Some other shapes TensorFlow refuses itself, with a TypeError that names eps's spec.)
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError), match="eps"):
        loaded.signatures["sample"](x=tf.constant(x[:2]), eps=tf.constant(eps[:, :, None]))
