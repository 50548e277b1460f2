"""IDX files (the MNIST / Fashion-MNIST format), gzipped or not.

Format: two zero bytes, a type code, the number of dimensions n, then n big-endian
int32 sizes and the data in C order, big-endian.
"""

import gzip
import os
import zlib

import numpy as np

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}

# The file names of the MNIST family (the names Debian's dataset-fashion-mnist ships).
SPLIT_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def _open(path):
    path = os.fspath(path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path):
    """The array stored in an IDX file (`.gz` is decompressed).

    Raises:
        ValueError: naming the file when it is not IDX (bad magic number), is
            truncated, or (`.gz`) is not gzip data or a truncated gzip stream.
    """
    try:
        with _open(path) as f:
            header = f.read(4)
            if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] not in _TYPES:
                raise ValueError(f"Not an IDX file (bad magic number). Received: path={os.fspath(path)!r}")
            dims = f.read(4 * header[3])
            if len(dims) != 4 * header[3]:
                raise ValueError(
                    f"IDX file is truncated in its header ({header[3]} dimensions, {len(dims)} of their "
                    f"{4 * header[3]} bytes). Received: path={os.fspath(path)!r}"
                )
            shape = tuple(int(v) for v in np.frombuffer(dims, dtype=">i4"))
            body = f.read()
    except gzip.BadGzipFile as error:
        raise ValueError(f"IDX file is not gzip data ({error}). Received: path={os.fspath(path)!r}") from None
    except EOFError:
        raise ValueError(
            f"IDX file is a truncated gzip file (the compressed stream ends early). Received: path={os.fspath(path)!r}"
        ) from None
    except zlib.error as error:
        raise ValueError(f"IDX file is a corrupt gzip file ({error}). Received: path={os.fspath(path)!r}") from None
    dtype = np.dtype(_TYPES[header[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        state = "truncated" if len(body) < expected else "longer than its header says"
        raise ValueError(
            f"IDX file is {state}: header says shape {shape} of {dtype.itemsize}-byte values ({expected} bytes), "
            f"found {len(body)} bytes. Received: path={os.fspath(path)!r}"
        )
    data = np.frombuffer(body, dtype=dtype)
    return data.reshape(shape).astype(data.dtype.newbyteorder("="))


def write_idx(path, array):
    """Write `array` as an IDX file (gzipped if `path` ends in `.gz`), atomically: a kill leaves the old file."""
    from vizoo.callbacks import _write_atomically

    array = np.asarray(array)
    code = _CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}. Received: array.dtype={array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open

    def write(tmp_path):
        with opener(tmp_path, "wb") as f:
            f.write(header + array.astype(_TYPES[code]).tobytes())

    _write_atomically(os.fspath(path), write)


def find_split_file(directory, split):
    """Path of the images of `split` ("train" or "test") in directory, gzipped or not, or None."""
    for suffix in (".gz", ""):
        path = os.path.join(directory, SPLIT_FILES[split] + suffix)
        if os.path.exists(path):
            return path
    return None


def load_idx_directory(directory):
    """(train, test) uint8 image arrays from a directory of MNIST-style IDX files.

    Raises:
        ValueError: a file is missing or unreadable (named), an images file is
            not 3-D (count, rows, cols) or empty, or train and test differ in image size.
    """
    paths = {split: find_split_file(directory, split) for split in SPLIT_FILES}
    missing = [SPLIT_FILES[split] + "[.gz]" for split, path in paths.items() if path is None]
    if missing:
        raise ValueError(
            f"data_dir has no {' and no '.join(missing)}. Received: data_dir={os.fspath(directory)!r}"
        )
    arrays = {}
    for split, path in paths.items():
        images = read_idx(path)
        if images.dtype != np.uint8:  # the loaders scale by 255: other types would be silently rescaled or clipped
            raise ValueError(
                f"IDX images must be unsigned bytes (0-255, as MNIST's files are); {os.path.basename(path)} holds "
                f"{images.dtype}. Received: path={os.fspath(path)!r}"
            )
        if images.ndim != 3:
            raise ValueError(
                f"IDX images must be 3-D (count, rows, cols); {os.path.basename(path)} holds shape {images.shape} "
                f"(a labels file?). Received: path={os.fspath(path)!r}"
            )
        if 0 in images.shape:
            raise ValueError(
                f"IDX images must hold at least one image of at least one pixel; {os.path.basename(path)} holds "
                f"shape {images.shape}. Received: path={os.fspath(path)!r}"
            )
        arrays[split] = images
    if arrays["train"].shape[1:] != arrays["test"].shape[1:]:
        raise ValueError(
            f"train and test images differ in size: {os.path.basename(paths['train'])} has "
            f"{arrays['train'].shape[1:]}, {os.path.basename(paths['test'])} has {arrays['test'].shape[1:]}. "
            f"Received: data_dir={os.fspath(directory)!r}"
        )
    return arrays["train"], arrays["test"]
