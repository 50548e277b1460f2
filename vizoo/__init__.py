"""vizoo: improved variational inference for deep latent-variable models (Keras 3 + TensorFlow)."""

__version__ = "0.1.0"

from vizoo._startup import import_tensorflow_quietly as _import_tensorflow_quietly

# TensorFlow's start-up notices (CUDA probes, oneDNN, CPU features) filtered out, unless the user set
# TF_CPP_MIN_LOG_LEVEL (see vizoo/_startup.py). Before anything below loads TensorFlow.
_import_tensorflow_quietly()

from vizoo import callbacks, data, distribute, evaluate, export, layers, losses, models  # noqa: E402,F401
from vizoo import optimizers, precision, runs  # noqa: E402,F401
from vizoo.evaluate import log_likelihood  # noqa: E402,F401
from vizoo.saving import load_model  # noqa: E402,F401
