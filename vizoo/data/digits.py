"""scikit-learn's bundled 8x8 digits (1,797 images, 64 pixels): offline, real, tiny."""

import numpy as np

# Fixed splits, the same whatever the training seed: a permutation drawn with
# this seed, then the last 300 images are the test set, the 200 before them
# the validation set and the first 1,297 the training set.
_SPLIT_SEED = 0
_NUM_TEST = 300
_NUM_VALIDATION = 200


def load_digits_arrays():
    """(train, validation, test) float32 arrays `[n, 64]` of intensities in [0, 1]."""
    from sklearn.datasets import load_digits

    images = load_digits().data.astype(np.float32) / 16.0  # pixel values 0..16
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    images = images[order]
    num_train = len(images) - _NUM_TEST - _NUM_VALIDATION
    return (
        images[:num_train],
        images[num_train : num_train + _NUM_VALIDATION],
        images[num_train + _NUM_VALIDATION :],
    )
