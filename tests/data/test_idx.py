import gzip

import numpy as np
import pytest

from vizoo.data import read_idx, write_idx
from vizoo.data.idx import load_idx_directory


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    array = (np.random.default_rng(0).random((3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    restored = read_idx(path)
    assert restored.dtype == array.dtype
    np.testing.assert_array_equal(restored, array)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    old = np.arange(8, dtype="uint8").reshape(2, 2, 2)
    write_idx(path, old)
    original = gzip.GzipFile.write

    def disk_full(self, data):
        original(self, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gzip.GzipFile, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_idx(path, np.zeros((5, 2, 2), "uint8"))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_idx(path), old)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_reads_the_mnist_header_byte_for_byte(tmp_path):
    # The header of an MNIST image file: magic 0x00000803, then 2, 28, 28 (big-endian).
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(range(256)) * 6 + bytes(32)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(raw)
    images = read_idx(path)
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8
    assert images[0, 0, :3].tolist() == [0, 1, 2]


def test_bad_files_are_named(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match=r"bad magic number\). Received: path="):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0]))
    with pytest.raises(ValueError, match=r"truncated in its header \(3 dimensions, 6 of their 12 bytes\)"):
        read_idx(path)
    with pytest.raises(ValueError, match="data_dir has no train-images-idx3-ubyte"):
        load_idx_directory(tmp_path)


def test_a_body_cut_inside_a_value_or_too_long_is_named(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 3]) + bytes(5))  # three int16 values need 6 bytes
    with pytest.raises(ValueError, match=r"truncated: header says shape \(3,\) of 2-byte values \(6 bytes\), "
                                         r"found 5 bytes. Received: path="):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3]) + bytes(4))
    with pytest.raises(ValueError, match=r"longer than its header says: .* found 4 bytes. Received: path="):
        read_idx(path)


@pytest.mark.parametrize("split", ["train", "t10k"])
def test_an_empty_images_file_is_named(split, tmp_path):
    shapes = {"train": (4, 3, 3), "t10k": (2, 3, 3)}
    shapes[split] = (0, 3, 3)
    for name, shape in shapes.items():
        write_idx(tmp_path / f"{name}-images-idx3-ubyte", np.zeros(shape, "uint8"))
    with pytest.raises(ValueError, match=rf"at least one image of at least one pixel; {split}-images-idx3-ubyte holds "
                                         r"shape \(0, 3, 3\). Received: path="):
        load_idx_directory(tmp_path)


def test_images_other_than_bytes_are_refused(tmp_path):
    # vizoo's own write_idx stores float32; the loaders scale by 255, which would shrink [0, 1] data to 1/255.
    write_idx(tmp_path / "train-images-idx3-ubyte", np.full((2, 3, 3), 0.5, "float32"))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 3, 3), "uint8"))
    with pytest.raises(ValueError, match="IDX images must be unsigned bytes.*holds float32. Received: path="):
        load_idx_directory(tmp_path)
