"""TFP plumbing shared by the MADE-based flows (IAF posterior, MAF prior)."""

import numpy as np
import tensorflow_probability as tfp

tfb = tfp.bijectors


def memoize_last(network):
    """`network` with its last result cached by input identity.

    TFP's `MaskedAutoregressiveFlow` asks its network for the same z twice in
    the one-pass direction (once for the transform, once for the log-det);
    this makes that one evaluation.
    """
    cache = {}

    def memoized(z, **kwargs):
        if cache.get("z") is not z:
            cache["z"], cache["out"] = z, network(z, **kwargs)
        return cache["out"]

    return memoized


def chain_with_reversals(steps, dim):
    """A `tfb.Chain` applying `steps` in order, with `tfb.Permute` reversing the `dim` coordinates between them."""
    bijectors = []
    for t, step in enumerate(steps):
        if t:
            bijectors.append(tfb.Permute(permutation=np.arange(dim)[::-1]))
        bijectors.append(step)
    return tfb.Chain(bijectors[::-1])  # Chain applies its last bijector first
