"""Training-objective options of the bounds: KL warm-up (beta) and free bits (lambda).

They change only the gradients a loss sends (its `objectives`); the value a
loss reports stays the exact bound. Shared by `ELBOLoss` and `IWAELoss`.
"""

import math
import numbers

from keras import ops

from vizoo.utils import check_non_negative_int, check_positive_int


def check_kl_options(kl_warmup_epochs, free_bits=0.0, free_bits_groups=None):
    """Checked `(kl_warmup_epochs, free_bits, free_bits_groups)`; errors name the argument and the value."""
    kl_warmup_epochs = check_non_negative_int(kl_warmup_epochs, "kl_warmup_epochs")
    if isinstance(free_bits, bool) or not isinstance(free_bits, numbers.Real) or not (
        math.isfinite(free_bits) and free_bits >= 0
    ):
        raise ValueError(f"free_bits must be a non-negative number of nats. Received: free_bits={free_bits!r}")
    if free_bits_groups is not None:
        free_bits_groups = check_positive_int(free_bits_groups, "free_bits_groups")
        if not free_bits:
            raise ValueError(
                "free_bits_groups applies with free_bits > 0. "
                f"Received: free_bits={free_bits!r}, free_bits_groups={free_bits_groups}"
            )
    return kl_warmup_epochs, float(free_bits), free_bits_groups


def kl_per_group(kl_per_dim, num_groups):
    """Sum `[batch, latent_dim]` per-dimension KLs over `num_groups` contiguous groups -> `[batch, groups]`.

    Group sizes differ by at most one (the first `latent_dim % num_groups`
    groups take one more dimension); None: one group per dimension.
    """
    latent_dim = kl_per_dim.shape[-1]
    if num_groups is None or num_groups == latent_dim:
        return kl_per_dim
    if num_groups > latent_dim:
        raise ValueError(
            f"free_bits_groups must be at most the latent dimension ({latent_dim}). "
            f"Received: free_bits_groups={num_groups}"
        )
    size, extra = divmod(latent_dim, num_groups)
    bounds = [0]
    for group in range(num_groups):
        bounds.append(bounds[-1] + size + (group < extra))
    return ops.stack(
        [ops.sum(kl_per_dim[:, start:stop], axis=-1) for start, stop in zip(bounds[:-1], bounds[1:])], axis=-1
    )


def free_bits_penalty(kl_per_dim, free_bits, num_groups):
    """Per-example surrogate `[batch]` whose batch mean has the gradient of sum_g max(lambda, mean_batch KL_g).

    max(lambda, m_g) has gradient 1{m_g > lambda} dm_g, so each example
    contributes its groups' KLs where the group's minibatch mean exceeds
    lambda (Kingma et al. 2016, appendix C), and nothing where it does not.
    """
    kl_groups = kl_per_group(kl_per_dim, num_groups)  # [batch, groups]
    active = ops.stop_gradient(ops.cast(ops.mean(kl_groups, axis=0) > free_bits, kl_groups.dtype))  # [groups]
    return ops.sum(kl_groups * active, axis=-1)
