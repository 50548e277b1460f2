"""tf.data pipelines of the datasets vizoo trains on (offline ones and TFDS)."""

from vizoo.data.datasets import BINARIZATIONS, DEBIAN_FASHION_MNIST_DIR, DataSplits, load, load_from_config
from vizoo.data.idx import read_idx, write_idx
from vizoo.data.tfds_builder import store_idx_as_tfds

__all__ = ["BINARIZATIONS", "DEBIAN_FASHION_MNIST_DIR", "DataSplits", "load", "read_idx", "store_idx_as_tfds", "write_idx"]
