"""Keras models whose `sample_terms` returns log-density terms for vizoo's bounds.

`MODELS` is the registry of the model families the command line and the
benchmarks name: a new family registers here and nowhere else.
"""

from vizoo.models.latent_variable_model import LatentVariableModel
from vizoo.models.sigmoid_belief_network import SigmoidBeliefNetwork
from vizoo.models.vae import VAE

MODELS = {"vae": VAE, "sbn": SigmoidBeliefNetwork}

__all__ = ["MODELS", "LatentVariableModel", "SigmoidBeliefNetwork", "VAE"]
