"""A TFDS-native route to local IDX files: store them as a TFDS dataset, then `tfds` reads them.

    from vizoo.data import store_idx_as_tfds
    builder = store_idx_as_tfds("/usr/share/datasets/fashion-mnist", "~/tensorflow_datasets")
    # later, anywhere, with plain TFDS:
    ds = tfds.builder_from_directory(builder.data_dir).as_dataset(split="train")
    # or vizoo.data.load("fashion_mnist_local", data_dir="~/tensorflow_datasets") ... via tfds.load
"""

import os

import numpy as np

from vizoo.data.idx import load_idx_directory


def store_idx_as_tfds(idx_dir, data_dir, name="fashion_mnist_local", version="1.0.0"):
    """Write the MNIST-style IDX images in `idx_dir` as TFDS dataset `name` under `data_dir`.

    Features: `image`, uint8 `[28, 28, 1]` (like TFDS's `fashion_mnist`); splits
    `train` and `test`. Returns the builder; `tfds.builder_from_directory(
    builder.data_dir)` or `tfds.load(name, data_dir=data_dir)` reads it back.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    train, test = load_idx_directory(idx_dir)
    height, width = train.shape[1:3]
    features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(height, width, 1), dtype=np.uint8)})

    def split(images):
        return tf.data.Dataset.from_tensor_slices({"image": images[..., None].astype(np.uint8)})

    return tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version=version,
        features=features,
        split_datasets={"train": split(train), "test": split(test)},
        data_dir=os.path.expanduser(os.fspath(data_dir)),
        description=f"MNIST-style IDX images from {os.fspath(idx_dir)}, stored by vizoo.",
        disable_shuffling=True,
    )
