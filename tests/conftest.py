import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)


@pytest.fixture
def binary_data():
    """Binary data of 64 features: 96 examples with some structure (two prototypes)."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((2, 64))
    which = rng.integers(0, 2, size=96)
    return (rng.random((96, 64)) < prototypes[which]).astype("float32")
