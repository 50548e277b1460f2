import numpy as np
import pytest

from tests.helpers import run_in_fresh_process
from vizoo.export import export_prior
from vizoo.losses import IWAELoss
from vizoo.models import VAE

PRIORS = ["standard_normal", "mixture", "vamp", "maf"]


@pytest.mark.slow  # a fresh interpreter
def test_every_prior_exports_its_trained_density_and_serves_without_vizoo(binary_data, tmp_path):
    z = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    for name in PRIORS:
        model = VAE(input_dim=64, latent_dim=3, hidden_units=[8], prior=name, seed=0)
        model.compile(optimizer="adam", loss=IWAELoss(k=2))
        model.fit(binary_data, epochs=1, verbose=0)  # exported weights are the trained ones
        export_prior(model, tmp_path / name)
        np.save(tmp_path / f"{name}.npy", np.asarray(model.prior.log_prob(z)))
    np.save(tmp_path / "z.npy", z)
    output = run_in_fresh_process(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        z = np.load({str(tmp_path / "z.npy")!r})
        for name in {PRIORS!r}:
            loaded = tf.saved_model.load({str(tmp_path)!r} + f"/{{name}}/1")
            log_pz = loaded.signatures["serving_default"](z=tf.constant(z))["log_pz"].numpy()
            np.testing.assert_allclose(log_pz, np.load({str(tmp_path)!r} + f"/{{name}}.npy"), atol=1e-5, rtol=1e-5)
            print(name, log_pz.shape)
        assert not any(m.split(".")[0] in ("vizoo", "tensorflow_probability") for m in sys.modules)
        """
    )
    assert output.splitlines() == [f"{name} (6,)" for name in PRIORS]


def test_bad_version_is_named(tmp_path):
    with pytest.raises(ValueError, match="Received: version=-1"):
        export_prior(VAE(input_dim=4, latent_dim=2, hidden_units=[]), tmp_path, version=-1)
