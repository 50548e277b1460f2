"""tf.data pipelines of the datasets vizoo trains on."""

from vizoo.data.datasets import ARRAY_LOADERS, BINARIZATIONS, DataSplits, load

__all__ = ["ARRAY_LOADERS", "BINARIZATIONS", "DataSplits", "load"]
