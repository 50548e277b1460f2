"""A hierarchical encoder exports z samples and log q^_K with all its noise (psi_0, z, reverse samples) as input."""

import numpy as np
import pytest

from tests.helpers import run_in_fresh_process
from vizoo.export import export_encoder
from vizoo.layers import HierarchicalPosterior
from vizoo.losses import IWHVILoss
from vizoo.models import VAE


@pytest.mark.slow  # a fresh interpreter
def test_hierarchical_encoder_serves_z_and_log_q_in_a_fresh_process_without_vizoo(tmp_path, binary_data):
    posterior = HierarchicalPosterior(4, aux_dim=3, hidden_units=[8], reverse_hidden_units=[8], num_reverse_samples=5)
    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16], posterior=posterior, seed=0)
    model.compile(optimizer="adam", loss=IWHVILoss(k=2, num_reverse_samples=5))
    model.fit(binary_data, batch_size=32, epochs=1, verbose=0)
    x = binary_data[:4]
    assert posterior.noise_shape == (3 + 4 + 5 * 3,)
    eps = np.random.default_rng(1).normal(size=(4, 6, 22)).astype("float32")
    encoding = model.encode(x)
    z, log_qz = posterior.transform(encoding, eps)
    served = posterior.serving_outputs(encoding)
    np.savez(tmp_path / "io.npz", x=x, eps=eps, z=z, log_qz=log_qz, **served)
    path = export_encoder(model, tmp_path / "encoder")
    output = run_in_fresh_process(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        data = np.load({str(tmp_path / "io.npz")!r})
        loaded = tf.saved_model.load({str(path)!r})
        served = loaded.signatures["serving_default"](x=tf.constant(data["x"]))
        sampled = loaded.signatures["sample"](x=tf.constant(data["x"]), eps=tf.constant(data["eps"]))
        for key, value in list(served.items()) + list(sampled.items()):
            np.testing.assert_allclose(value.numpy(), data[key], atol=1e-5, rtol=1e-5)
        print(loaded.signatures["sample"].structured_input_signature[1]["eps"].shape)
        assert not any(name.split(".")[0] in ("vizoo", "tensorflow_probability") for name in sys.modules)
        print(sorted(served), sorted(sampled))
        """
    )
    assert output.splitlines() == ["(None, None, 22)", "['loc', 'psi_loc', 'psi_log_scale'] ['log_qz', 'z']"]
