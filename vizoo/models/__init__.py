"""Keras models whose call returns log-density terms for vizoo's bounds."""

from vizoo.models.latent_variable_model import LatentVariableModel
from vizoo.models.vae import VAE

__all__ = ["LatentVariableModel", "VAE"]
