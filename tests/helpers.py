"""Shared test helpers: every layer, loss and model goes through the same checks."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_serialization_test(obj):
    """get_config -> from_config -> get_config is the identity, also through keras.saving."""
    config = obj.get_config()
    json.dumps(config)  # must be plain JSON
    restored = type(obj).from_config(config)
    assert restored.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(revived) is type(obj)
    assert revived.get_config() == config
    return restored


def run_in_fresh_process(code, env=None, timeout=300):
    """Run Python `code` in a new interpreter (cwd = repo root); return its stdout."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"fresh process failed:\n{result.stderr[-4000:]}"
    return result.stdout


def assert_terms_close(a, b, atol=1e-5):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=atol, err_msg=key)
