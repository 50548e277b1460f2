"""Keras models whose `sample_terms` returns log-density terms for vizoo's bounds.

`MODELS` is the registry of the model families the command line and the
benchmarks name. A family registers itself in its own file with
`@vizoo.registry.register_model("name")`; this package imports every module it
holds, so a new family is one new file here and nothing else.
"""

from vizoo.models.latent_variable_model import LatentVariableModel
from vizoo.registry import MODELS, import_package_modules, register_model

_REGISTERED = import_package_modules(__name__, __path__)  # every module of the package: their classes register
globals().update(_REGISTERED)  # vizoo.models.VAE, vizoo.models.SigmoidBeliefNetwork, ... by class name

__all__ = ["MODELS", "LatentVariableModel", "register_model", *sorted(_REGISTERED)]
