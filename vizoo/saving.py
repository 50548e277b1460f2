"""`vizoo.load_model(path)`: `keras.saving.load_model` with one named error for a missing or corrupt file.

Keras reports a damaged `.keras` archive as "File not found" (or an h5py or
zip traceback); this checks the archive first and names the file and what is
wrong with it.
"""

import os
import zipfile

# What Keras 3 writes into every .keras archive.
_REQUIRED_MEMBERS = ("config.json", "model.weights.h5")


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_keras_archive(path):
    """Raise a ValueError naming `path` unless it is a complete `.keras` (zip) archive; return `path`."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ValueError(f"model file does not exist. Received: path={name!r}")
    if os.path.isdir(name):
        raise ValueError(f"model file is a directory, not a .keras archive. Received: path={name!r}")
    with open(name, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(name):
        if head == b"PK\x03\x04":  # a zip's first entry, with no central directory at the end
            raise ValueError(f"model file is truncated (a .keras archive cut short). Received: path={name!r}")
        kind = "empty" if not head else "not a zip file"
        raise ValueError(f"model file is not a valid .keras archive ({kind}). Received: path={name!r}")
    try:
        with zipfile.ZipFile(name) as archive:
            members = set(archive.namelist())
            missing = [member for member in _REQUIRED_MEMBERS if member not in members]
            if missing:
                raise ValueError(
                    f"model file is not a valid .keras archive (it has no {', '.join(missing)}). Received: path={name!r}"
                )
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(
            f"model file is a truncated or corrupt .keras archive ({_first_line(error)}). Received: path={name!r}"
        ) from None
    if bad is not None:
        raise ValueError(f"model file is a corrupt .keras archive (member {bad} fails its CRC check). Received: path={name!r}")
    return path


def load_model(path, **kwargs):
    """Load a `.keras` model file saved by vizoo (or Keras), with named errors.

    The archive is checked first: a missing file, a directory, an empty or
    non-zip file ("not a valid .keras archive"), a zip cut short
    ("truncated"), a member failing its CRC, or an archive without
    `config.json` is a one-line ValueError naming the file. Errors Keras
    raises while rebuilding the model (an unknown class, weights of another
    shape) are also turned into one line naming the file.

    Args:
        path: str or path-like, a `.keras` file.
        **kwargs: passed to `keras.saving.load_model` (`custom_objects`, `compile`, `safe_mode`).

    Returns:
        The model.

    Raises:
        ValueError: naming the file and what is wrong with it.

    Example:
        >>> model = vizoo.load_model("runs/latest/model.keras")
    """
    import keras

    import vizoo  # noqa: F401  (registers vizoo's classes, which the archive names)

    name = os.fspath(path)
    if name.endswith(".keras"):
        check_keras_archive(name)
    elif not os.path.exists(name):
        raise ValueError(f"model file does not exist. Received: path={name!r}")
    elif os.path.isdir(name):  # (an exported SavedModel, a checkpoint: Keras would take it for an Orbax checkpoint)
        raise ValueError(
            "model file must be a .keras file, not a directory (an exported encoder or prior is a TensorFlow SavedModel: "
            f"load it with tf.saved_model.load). Received: path={name!r}"
        )
    try:
        return keras.saving.load_model(name, **kwargs)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"model file cannot be loaded ({_first_line(error)}). Received: path={name!r}") from None
