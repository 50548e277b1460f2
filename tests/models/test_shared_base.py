"""Families compose one base: VAE and SigmoidBeliefNetwork differ by components and options, not copied methods."""

import numpy as np
import pytest

from vizoo.models import MODELS, LatentVariableModel, SigmoidBeliefNetwork, VAE

SHARED = ("encode", "decode", "posterior_mean", "joint_terms", "_sample_terms", "generate", "initialize_output_bias")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_families_do_not_copy_the_shared_methods(name):
    cls = MODELS[name]
    assert issubclass(cls, LatentVariableModel)
    copied = [method for method in SHARED if method in cls.__dict__]
    assert not copied, f"{cls.__name__} redefines {copied}: move what differs into a component or a hook"


def test_shared_config_keys_and_generation(binary_data):
    vae = VAE(input_dim=64, latent_dim=3, hidden_units=[8], seed=1)
    sbn = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4, 2], hidden_units=[5], seed=1)
    for model in (vae, sbn):
        config = model.get_config()
        assert {key: config[key] for key in ("input_dim", "hidden_units", "activation", "seed")} == {
            "input_dim": 64, "hidden_units": model.hidden_units, "activation": "tanh", "seed": 1
        }
        images = np.asarray(model.generate(3, seed=0))
        assert images.shape == (3, 64) and np.all((images >= 0) & (images <= 1))
        model.initialize_output_bias(binary_data.mean(axis=0))
    # The SBN's decoder reads h_1 only; its prior draws every layer.
    assert tuple(sbn.sample_prior(5, seed=0).shape) == (5, 6)
    assert tuple(sbn.decoder_input(np.zeros((2, 3, 6), "float32")).shape) == (2, 3, 4)
    assert tuple(sbn.encode(binary_data[:2])["logits"].shape) == (2, 4) and sbn.encoder_layers == []
