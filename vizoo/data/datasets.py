"""tf.data pipelines by dataset name, with the binarizations used in the literature."""

import dataclasses

import numpy as np
import tensorflow as tf

from vizoo.data.digits import load_digits_arrays
from vizoo.utils import check_choice, check_positive_int

# name -> function returning (train, validation, test) float32 arrays in [0, 1].
ARRAY_LOADERS = {"digits": load_digits_arrays}
BINARIZATIONS = ("dynamic", "static", "threshold", "none")


@dataclasses.dataclass
class DataSplits:
    """Batched pipelines of x (no labels) and what a model needs to know of them.

    Attributes:
        train, validation, test: `tf.data.Dataset`s of `[batch, input_dim]` float32.
        input_dim: int, features per example.
        train_mean: `[input_dim]` mean of the training intensities (for
            `VAE.initialize_output_bias`).
        num_train, num_validation, num_test: int, examples per split.
        binarization: how the data were binarized.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    input_dim: int
    train_mean: np.ndarray
    num_train: int
    num_validation: int
    num_test: int
    binarization: str


def _fixed_draw(x, seed):
    """One Bernoulli draw per pixel with the pixel intensity as probability, fixed by seed."""
    return (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)


def load(name="digits", batch_size=100, binarization="dynamic", seed=0, eval_batch_size=None):
    """Train/validation/test pipelines of a dataset, by name.

    Args:
        name: dataset name; `"digits"` is scikit-learn's bundled 8x8 digits
            (offline; fixed splits of 1,297 / 200 / 300 images).
        batch_size: int, training batch size.
        binarization: `"dynamic"` (a fresh Bernoulli draw of the training
            images every epoch, Burda et al.; validation and test drawn once,
            fixed), `"static"` (one fixed draw for every split), `"threshold"`
            (pixel > 0.5) or `"none"` (raw intensities in [0, 1]).
        seed: int, seed of shuffling and of the binarization draws.
        eval_batch_size: int, batch size of validation/test; default batch_size.

    Returns:
        A `DataSplits`.
    """
    loader = ARRAY_LOADERS[check_choice(name, "dataset", ARRAY_LOADERS)]
    check_choice(binarization, "binarization", BINARIZATIONS)
    batch_size = check_positive_int(batch_size, "batch_size")
    eval_batch_size = check_positive_int(eval_batch_size or batch_size, "eval_batch_size")
    x_train, x_validation, x_test = loader()
    train_mean = x_train.mean(axis=0)

    if binarization == "threshold":
        x_train, x_validation, x_test = [(x > 0.5).astype(np.float32) for x in (x_train, x_validation, x_test)]
    elif binarization in ("static", "dynamic"):
        # Validation/test get a fixed draw each (seeded), so evaluations compare.
        x_validation = _fixed_draw(x_validation, seed + 1)
        x_test = _fixed_draw(x_test, seed + 2)
        if binarization == "static":
            x_train = _fixed_draw(x_train, seed)

    train = tf.data.Dataset.from_tensor_slices(x_train).cache()
    train = train.shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if binarization == "dynamic":
        noise_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        train = tf.data.Dataset.zip(train, noise_seeds).map(
            lambda x, s: tf.cast(tf.random.stateless_uniform(tf.shape(x), seed=s) < x, tf.float32),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    train = train.prefetch(tf.data.AUTOTUNE)

    def eval_pipeline(x):
        return tf.data.Dataset.from_tensor_slices(x).batch(eval_batch_size).cache().prefetch(tf.data.AUTOTUNE)

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
    )
