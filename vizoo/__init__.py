"""vizoo: improved variational inference for deep latent-variable models (Keras 3 + TensorFlow)."""

__version__ = "0.1.0"

from vizoo import data, evaluate, export, layers, losses, models  # noqa: E402,F401
from vizoo.evaluate import log_likelihood  # noqa: E402,F401
