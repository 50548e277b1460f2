"""Datasets through tensorflow-datasets, failing fast when they are not local and there is no network."""

import os
import socket

import numpy as np

# TFDS fetches prepared data and most MNIST-family sources from Google Cloud
# Storage: if it cannot be reached, a download would only retry for minutes.
_PROBE_ADDRESS = ("storage.googleapis.com", 443)
_PROBE_TIMEOUT_SECONDS = 3.0

# Datasets whose TFDS images are already 0/1 (not 0..255).
_BINARY = {"binarized_mnist"}
# vizoo reads these splits; a builder that has not been prepared (or is mocked)
# carries no split metadata, so datasets with a validation split are named here.
_SPLITS = ("train", "validation", "test")
_HAS_VALIDATION = {"binarized_mnist"}


def network_available():
    """True if the TFDS download host answers within a few seconds."""
    try:
        with socket.create_connection(_PROBE_ADDRESS, timeout=_PROBE_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def flatten_to_unit_interval(images, scale=255.0):
    """Images `[n, ...]` of values 0..scale -> float32 `[n, features]` in [0, 1]."""
    return (np.asarray(images).reshape(len(images), -1).astype(np.float32) / scale).clip(0.0, 1.0)


def _images_to_unit_interval(images, name):
    images = np.asarray(images)
    if name == "omniglot":
        # 105x105 RGB, dark strokes on white -> 28x28 grayscale strokes (as in Burda et al.).
        import tensorflow as tf

        gray = images.astype(np.float32).mean(axis=-1, keepdims=True) / 255.0
        images = 1.0 - tf.image.resize(gray, (28, 28), method="area").numpy()
        return images.reshape(len(images), -1).astype(np.float32)
    return flatten_to_unit_interval(images, scale=1.0 if name in _BINARY else 255.0)


def load_tfds_arrays(name, data_dir=None):
    """{split name: float32 [n, features] array in [0, 1]} of a TFDS image dataset.

    Uses the local TFDS copy when there is one; downloads it otherwise, but first
    checks within seconds that the network can be reached and, if not, raises a
    ValueError that says how to get the data.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError):  # (ValueError: not a TFDS name, e.g. "fashion-mnist")
        raise ValueError(f"Unknown dataset: not a vizoo or TFDS dataset name. Received: dataset={name!r}") from None
    if "image" not in builder.info.features:
        raise ValueError(f"vizoo trains on image datasets; {name!r} has no 'image' feature. Received: dataset={name!r}")
    if not builder.is_prepared():
        if not network_available():
            raise ValueError(
                f"Dataset {name!r} is not in the TFDS data directory ({builder.data_dir}) and the "
                "network cannot be reached to download it. Either run once where there is network "
                f"(python -c \"import tensorflow_datasets as tfds; tfds.load('{name}')\") and copy "
                f"{os.path.dirname(os.path.dirname(builder.data_dir))} here, or pass data_dir= (--data-dir) "
                "pointing at a TFDS data directory. For Fashion-MNIST offline: "
                "apt-get install dataset-fashion-mnist (Debian), or data_dir= a directory of IDX files. "
                f"Received: dataset={name!r}"
            )
        builder.download_and_prepare()
    available = set(builder.info.splits) or {"train", "test"} | ({"validation"} if name in _HAS_VALIDATION else set())

    def images(split):
        # Batches, not batch_size=-1: TFDS's mocked generator aborts on the latter.
        batches = builder.as_dataset(split=split, shuffle_files=False).map(lambda f: f["image"]).batch(4096)
        return _images_to_unit_interval(np.concatenate(list(tfds.as_numpy(batches))), name)

    return {split: images(split) for split in _SPLITS if split in available}
