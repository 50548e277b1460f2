"""vizoo: improved variational inference for deep latent-variable models (Keras 3 + TensorFlow)."""

__version__ = "0.1.0"

from vizoo._startup import import_tensorflow_quietly as _import_tensorflow_quietly

# TensorFlow's start-up notices (CUDA probes, oneDNN, CPU features) filtered out, unless the user set
# TF_CPP_MIN_LOG_LEVEL (see vizoo/_startup.py). Before anything below loads TensorFlow.
_import_tensorflow_quietly()

# `python -m vizoo.evaluate RUN_DIR` runs the module that this package imports below; runpy warns that it
# was imported first ("may result in unpredictable behaviour"). Its `__main__` block only calls vizoo.ais.main,
# which uses the imported module, so the warning says nothing about that command.
import warnings as _warnings  # noqa: E402

_warnings.filterwarnings("ignore", message="'vizoo.evaluate' found in sys.modules", category=RuntimeWarning)

from vizoo import callbacks, data, distribute, evaluate, export, layers, losses, models  # noqa: E402,F401
from vizoo import optimizers, precision, runs  # noqa: E402,F401
from vizoo.evaluate import log_likelihood  # noqa: E402,F401
from vizoo.saving import load_model  # noqa: E402,F401
