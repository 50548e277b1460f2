"""VampPrior pseudo-inputs can be set before the model is built (the README's snippet)."""

import numpy as np
import pytest

from vizoo.layers import VampPrior
from vizoo.models import VAE


def test_initialize_pseudo_inputs_on_an_unbuilt_model():
    model = VAE(input_dim=6, latent_dim=2, hidden_units=[4], posterior="full_covariance", prior=VampPrior(3))
    assert not model.built
    x = (np.random.default_rng(0).random((3, 6)) < 0.5).astype("float32")
    model.prior.initialize_pseudo_inputs(x)
    assert model.built
    np.testing.assert_array_equal(model.prior.pseudo_inputs.numpy(), x)
    assert np.isfinite(np.asarray(model(x)["log_pz"])).all()
    with pytest.raises(ValueError, match="Received: x.shape=\\(2, 6\\)"):
        model.prior.initialize_pseudo_inputs(x[:2])
