"""tf.data pipelines by dataset name, with the binarizations used in the literature."""

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from vizoo.data.digits import load_digits_arrays
from vizoo.data.idx import find_split_file, load_idx_directory
from vizoo.data.tfds_source import flatten_to_unit_interval, load_tfds_arrays
from vizoo.utils import check_choice, check_non_negative_int, check_positive_int

BINARIZATIONS = ("dynamic", "static", "threshold", "none")
# Where Debian's package dataset-fashion-mnist puts the IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Validation split carved from the training set when the source has none: the
# last 10,000 examples of a seeded permutation (as is usual for MNIST's 60,000),
# or a sixth of smaller training sets.
DEFAULT_VALIDATION_SIZE = 10_000


@dataclasses.dataclass
class DataSplits:
    """Batched pipelines of x (no labels) and what a model needs to know of them.

    Attributes:
        train, validation, test: `tf.data.Dataset`s of `[batch, input_dim]`
            float32 (validation is None with `validation_size=0`).
        input_dim: int, features per example.
        train_mean: `[input_dim]` mean of the training intensities (for
            `VAE.initialize_output_bias`).
        num_train, num_validation, num_test: int, examples per split.
        binarization: how the data were binarized.
        source: where the data came from (a path or "tfds:<name>").
    """

    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]
    test: tf.data.Dataset
    input_dim: int
    train_mean: np.ndarray
    num_train: int
    num_validation: int
    num_test: int
    binarization: str
    source: str


def _idx_arrays(directory):
    train, test = load_idx_directory(directory)
    return {"train": flatten_to_unit_interval(train), "test": flatten_to_unit_interval(test)}, directory


def _fashion_mnist(data_dir):
    if data_dir:  # an explicit directory is used or refused, never replaced by another source
        if find_split_file(data_dir, "train") or find_split_file(data_dir, "test"):
            return _idx_arrays(data_dir)  # raises, naming the file, when one is missing or malformed
        if not os.path.isdir(os.path.join(data_dir, "fashion_mnist")):
            load_idx_directory(data_dir)  # raises: names the IDX files it looked for
        return load_tfds_arrays("fashion_mnist", data_dir), "tfds:fashion_mnist"
    if find_split_file(DEBIAN_FASHION_MNIST_DIR, "train"):
        return _idx_arrays(DEBIAN_FASHION_MNIST_DIR)
    return load_tfds_arrays("fashion_mnist", data_dir), "tfds:fashion_mnist"


def _source_arrays(name, data_dir):
    """({split: float32 array in [0, 1]}, source description) for a dataset name."""
    if name == "digits":
        if data_dir is not None:
            raise ValueError(
                "data_dir does not apply to digits (scikit-learn ships them); it is for fashion_mnist's IDX files "
                f"or a TFDS data directory. Received: dataset='digits', data_dir={data_dir!r}"
            )
        train, validation, test = load_digits_arrays()
        return {"train": train, "validation": validation, "test": test}, "scikit-learn digits"
    if name == "fashion_mnist":
        return _fashion_mnist(data_dir)
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a dataset name. Received: dataset={name!r}")
    return load_tfds_arrays(name, data_dir), f"tfds:{name}"


def _fixed_draw(x, seed):
    """One Bernoulli draw per pixel with the pixel intensity as probability, fixed by seed."""
    return (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)


def load(
    name="digits",
    batch_size=100,
    binarization="dynamic",
    seed=0,
    eval_batch_size=None,
    data_dir=None,
    validation_size=None,
):
    """Train/validation/test pipelines of a dataset, by name.

    Names:
    - `"digits"`: scikit-learn's bundled 8x8 digits (offline; fixed splits of
      1,297 / 200 / 300 images).
    - `"fashion_mnist"`: with `data_dir`, from its MNIST-style IDX files
      (`train-images-idx3-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`; 3-D images
      of one size in train and test) or, when it is a TFDS data directory
      holding `fashion_mnist/`, through TFDS; otherwise it is refused with the
      reason (never replaced by another source). Without `data_dir`: Debian's
      `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), else TFDS.
    - `"mnist"`, `"binarized_mnist"`, `"omniglot"` (resized to 28x28 and
      inverted, strokes = 1) or any other TFDS image dataset, by its TFDS name,
      through TFDS (`data_dir` is then the TFDS data directory). A dataset that
      is not local fails within seconds when there is no network.

    Args:
        name: dataset name, see above.
        batch_size: int, training batch size.
        binarization: `"dynamic"` (a fresh Bernoulli draw of the training
            images every epoch, Burda et al.; validation and test drawn once,
            fixed by seed), `"static"` (one fixed draw for every split),
            `"threshold"` (pixel > 0.5) or `"none"` (intensities in [0, 1]).
        seed: int, seed of the validation split, shuffling and binarization. The
            split and the test set's fixed binarization depend on it alone; the
            training order and its per-epoch binarization also on TensorFlow's
            global seed (tf.data's op seeds combine with it): set
            `keras.utils.set_random_seed(seed)` first, as `train.py` does, for
            the pipeline of `train.py --seed seed`.
        eval_batch_size: int, batch size of validation/test; default batch_size.
        data_dir: optional directory, see Names (refused for `"digits"`).
        validation_size: int, examples held out of the training set when the
            source has no validation split (default: the last 10,000 of a
            seeded permutation, or a sixth of a smaller training set); 0 for none.

    Returns:
        A `DataSplits`.
    """
    check_choice(binarization, "binarization", BINARIZATIONS)
    batch_size = check_positive_int(batch_size, "batch_size")
    eval_batch_size = batch_size if eval_batch_size is None else check_positive_int(eval_batch_size, "eval_batch_size")
    seed = check_non_negative_int(seed, "seed")
    if validation_size is not None and (isinstance(validation_size, bool) or not isinstance(validation_size, int) or validation_size < 0):
        raise ValueError(f"validation_size must be a non-negative integer. Received: validation_size={validation_size!r}")
    if data_dir is not None:
        given, data_dir = data_dir, os.path.expanduser(os.fspath(data_dir))
        if not os.path.isdir(data_dir):
            raise ValueError(f"data_dir must be an existing directory. Received: data_dir={given!r}")
    arrays, source = _source_arrays(name, data_dir)
    if "test" not in arrays:
        raise ValueError(f"Dataset {name!r} has no test split (splits: {sorted(arrays)}). Received: dataset={name!r}")
    x_train, x_validation, x_test = arrays["train"], arrays.get("validation"), arrays["test"]
    if x_validation is None or validation_size is not None:
        if x_validation is not None:  # an explicit size re-splits train + validation
            x_train = np.concatenate([x_train, x_validation])
        size = min(DEFAULT_VALIDATION_SIZE, len(x_train) // 6) if validation_size is None else validation_size
        if size >= len(x_train):
            raise ValueError(
                f"validation_size must be smaller than the {len(x_train)} training examples. "
                f"Received: validation_size={size}"
            )
        x_train = x_train[np.random.default_rng(seed).permutation(len(x_train))]
        x_train, x_validation = x_train[: len(x_train) - size], x_train[len(x_train) - size :]
    train_mean = x_train.mean(axis=0)

    if binarization == "threshold":
        x_train, x_validation, x_test = [(x > 0.5).astype(np.float32) for x in (x_train, x_validation, x_test)]
    elif binarization in ("static", "dynamic"):
        # Validation/test get a fixed draw each (seeded), so evaluations compare.
        x_validation, x_test = _fixed_draw(x_validation, seed + 1), _fixed_draw(x_test, seed + 2)
        if binarization == "static":
            x_train = _fixed_draw(x_train, seed)

    train = tf.data.Dataset.from_tensor_slices(x_train)
    train = train.shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if binarization == "dynamic":
        noise_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        train = tf.data.Dataset.zip(train, noise_seeds).map(
            lambda x, s: tf.cast(tf.random.stateless_uniform(tf.shape(x), seed=s) < x, tf.float32),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    train = train.prefetch(tf.data.AUTOTUNE)

    def eval_pipeline(x):
        if not len(x):
            return None
        return tf.data.Dataset.from_tensor_slices(x).batch(eval_batch_size).prefetch(tf.data.AUTOTUNE)

    return DataSplits(
        train=train,
        validation=eval_pipeline(x_validation),
        test=eval_pipeline(x_test),
        input_dim=int(x_train.shape[1]),
        train_mean=train_mean,
        num_train=len(x_train),
        num_validation=len(x_validation),
        num_test=len(x_test),
        binarization=binarization,
        source=source,
    )


def load_from_config(config):
    """The splits of a run's `config.json` (train.py's data options: dataset, batch size, binarization,
    seed, data_dir, validation_size), each defaulting as `train.py` does."""
    return load(
        config.get("dataset", "digits"),
        batch_size=config.get("batch_size", 100),
        binarization=config.get("binarization", "dynamic"),
        seed=config.get("seed", 0),
        data_dir=config.get("data_dir"),
        validation_size=config.get("validation_size"),
    )
