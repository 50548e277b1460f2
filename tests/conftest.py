"""Shared fixtures, the `slow` tier, and bounded memory for the one pytest process.

Tiers: `python -m pytest -q` runs everything (what CI runs); `python -m pytest -q -m "not slow"`
is the fast tier to run after every change. A test is `slow` when it starts another process
(train.py, a fresh interpreter, the README snippets), runs a benchmark script, trains for many
steps, or draws thousands of samples for a statistical (z-score) check.
"""

import ctypes
import gc
import os
import resource
import time

import vizoo  # noqa: E402,F401  (first: it imports TensorFlow with its start-up notices filtered, in every worker)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)


def _resident_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _freeze_what_imports_made():
    # Every module's clean-up runs a full garbage collection, which traverses every tracked object: the
    # million that importing TensorFlow, Keras and vizoo made (0.23 s a module) as well as the module's
    # garbage. Frozen, they are skipped (0.05 s). Collections must come each module: garbage left for
    # several modules took 40 s to collect at once (a worker of the full suite, TensorFlow's graphs).
    gc.collect()
    gc.freeze()


_freeze_what_imports_made()


@pytest.fixture(autouse=True, scope="module")
def _release_models_after_each_module(request):
    """Free the models a module built: Keras's global graph state and the garbage they hold.

    Without this the process grows with every model the suite builds (to about 7 GB); with it,
    memory stays bounded by the largest module.
    """
    yield
    _forget_custom_gradients()
    before, start = _resident_mib(), time.perf_counter()
    keras.backend.clear_session(free_memory=True)  # also collects garbage (see _freeze_what_imports_made)
    _return_freed_memory_to_the_system()
    if os.environ.get("VIZOO_TEST_MEMORY"):  # VIZOO_TEST_MEMORY=1 pytest -s: resident size after each module
        print(f"\n{request.module.__name__}: {before:.0f} MiB resident, {_resident_mib():.0f} MiB after clean-up "
              f"({time.perf_counter() - start:.1f} s)")


def _forget_custom_gradients():
    # Every graph traced through a `tf.custom_gradient` (vizoo's sum_softplus, Keras's own) registers its
    # gradient function under a new name in TensorFlow's global gradient registry, and that function
    # holds the traced graph: no model of a finished module is ever freed (about 11 MB per small VAE
    # trained and evaluated; the suite's workers grew to 3 GB). The module's models are gone, so their
    # gradient functions are dropped. (TensorFlow-private; a test-suite measure, skipped if it moves.)
    try:
        from tensorflow.python.framework import ops as tf_ops

        registry = tf_ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return
    for name in [name for name in registry if name.startswith("CustomGradient-")]:
        del registry[name]


def _return_freed_memory_to_the_system():
    # glibc keeps freed heap pages in its arenas, so the process's resident size only grows;
    # malloc_trim hands them back (a no-op elsewhere).
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _binary_data():
    rng = np.random.default_rng(0)
    prototypes = rng.random((2, 64))
    which = rng.integers(0, 2, size=96)
    return (rng.random((96, 64)) < prototypes[which]).astype("float32")


@pytest.fixture
def binary_data():
    """Binary data of 64 features: 96 examples with some structure (two prototypes)."""
    return _binary_data()


@pytest.fixture(scope="session")
def trained_vae():
    """A small VAE (64-16-4) trained for 3 epochs with IWAE-3 on `binary_data`, shared by the tests that only read it.

    Tests must not train or recompile it (they would change it for the others).
    """
    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    keras.utils.set_random_seed(0)
    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16], seed=0)
    model.compile(optimizer="adam", loss=IWAELoss(k=3))
    model.fit(_binary_data(), batch_size=32, epochs=3, verbose=0)
    return model


# Peak resident memory of each pytest process (the suite must stay within ~2.5 GB per process):
# under pytest-xdist each worker reports its own to the controller, which prints them all.
_WORKER_PEAKS = {}


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput["peak_rss_mib"] = _peak_mib()


def pytest_testnodedown(node, error):
    peak = getattr(node, "workeroutput", {}).get("peak_rss_mib")
    if peak is not None:
        _WORKER_PEAKS[node.gateway.id] = peak


def pytest_terminal_summary(terminalreporter):
    peaks = {"controller" if _WORKER_PEAKS else "pytest": _peak_mib(), **_WORKER_PEAKS}
    terminalreporter.write_line("peak RSS: " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in sorted(peaks.items())))


# The files that take longest, first (measured 2026-11-29, seconds of one process): with
# `--dist loadfile` each worker takes the next file when it is free, so long files left to the end
# keep one worker busy while the other idles (longest-first is the classic fix). A file not listed
# keeps its place after these; a renamed one only loses its head start.
_LONGEST_FILES_FIRST = [
    "tests/models/test_vae.py",  # 86 s
    "tests/test_train_runs.py",  # 70
    "tests/test_benchmarks.py",  # 58
    "tests/test_readme.py",  # 43
    "tests/test_multi_worker.py",  # 40
    "tests/test_reliability.py",  # 38
    "tests/layers/test_hierarchical_posterior.py",  # 38
    "tests/export/test_serving.py",  # 30
    "tests/models/test_sigmoid_belief_network.py",  # 35
    "tests/test_cli.py",  # 31
    "tests/models/test_avb.py",  # 29
    "tests/test_group_optimizers.py",  # 25
]


def pytest_collection_modifyitems(session, config, items):
    rank = {path: i for i, path in enumerate(_LONGEST_FILES_FIRST)}

    def key(item):
        path = os.path.relpath(str(item.path), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return rank.get(path.replace(os.sep, "/"), len(rank))

    items.sort(key=key)  # stable: tests keep their order within a file, other files theirs
