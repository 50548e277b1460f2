"""Quiet TensorFlow's start-up: its C++ notices (CUDA probes, oneDNN, CPU features) go to stderr
through absl before any log level applies, so `TF_CPP_MIN_LOG_LEVEL` alone no longer hides them.

`import vizoo` loads TensorFlow with stderr captured at the file-descriptor level and writes back
every captured line except the known start-up notices below; nothing else is lost, and an import
error shows all of it. A user who sets `TF_CPP_MIN_LOG_LEVEL` (e.g. 0) gets TensorFlow's own
behaviour, unfiltered.
"""

import os
import re
import sys
import tempfile

# Lines TensorFlow 2.21 prints on every start on a machine without a GPU (and on many with one);
# TensorFlow 2.18 reports the failed cuInit from cuda_driver.cc.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|port\.cc:\d+\] oneDNN custom operations|cudart_stub\.cc"
    r"|cpu_feature_guard\.cc|^To enable the following instructions|rebuild TensorFlow with the appropriate compiler"
    r"|cuda_(platform|driver)\.cc:\d+\] failed call to cuInit|cuda_executor\.cc|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc"
    r"|computation_placer\.cc|Unable to register cu(DNN|FFT|BLAS) factory"
)


def import_tensorflow_quietly():
    """Import TensorFlow (and find its devices) with its start-up notices filtered out of stderr."""
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # and TensorFlow's own INFO/WARNING logs after start-up
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (some notebooks, embedded interpreters)
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device probing (cuInit) prints here, not at first use
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = lines if failed else [line for line in lines if not _NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
