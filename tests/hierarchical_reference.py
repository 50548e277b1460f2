"""A tractable hierarchical posterior built from vizoo's layers: an exact reference for IWHVI and HVM.

psi ~ N(0, I_a), z|psi ~ N(A psi + c, s^2 I_d), so q(z) = N(c, A A^T + s^2 I) in closed form and
q(psi|z) = N(S A^T (z - c) / s^2, S) with S = (I + A^T A / s^2)^-1. A has orthogonal columns, so S
is diagonal and the exact q(psi|z) is a diagonal Gaussian with mean linear in z: a
`HierarchicalPosterior` with affine networks (`hidden_units=[]`) represents q and its exact
reverse model tau = q(psi|z) with no approximation. q ignores x (its weights on the features are 0).
"""

import numpy as np
from scipy import stats

from vizoo.layers import HierarchicalPosterior

LATENT_DIM, AUX_DIM = 3, 2
COLUMN_NORMS = np.array([1.5, 0.7])
NOISE_SCALE = 0.6
OFFSET = np.array([0.3, -0.5, 1.0])


def mixing_matrix(seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(LATENT_DIM, AUX_DIM)))
    return q * COLUMN_NORMS  # [d, a], orthogonal columns


def exact_log_q(z, a_matrix):
    """log q(z) = log N(z; c, A A^T + s^2 I) for z `[..., d]`."""
    covariance = a_matrix @ a_matrix.T + NOISE_SCALE**2 * np.eye(LATENT_DIM)
    return stats.multivariate_normal(OFFSET, covariance).logpdf(np.asarray(z, "float64"))


def exact_reverse(a_matrix):
    """(M [a, d], variances [a]): q(psi|z) = N(M (z - c), diag(variances))."""
    variances = 1.0 / (1.0 + np.sum(a_matrix**2, axis=0) / NOISE_SCALE**2)
    return variances[:, None] * a_matrix.T / NOISE_SCALE**2, variances


def reverse_kl(z, a_matrix, loc_offset, log_scale_offset):
    """KL(q(psi|z) || tau(psi|z)) per z `[..., d]` for the perturbed tau of `tractable_posterior`."""
    mapping, variances = exact_reverse(a_matrix)
    # tau = N(exact mean + loc_offset, exact variances * exp(2 log_scale_offset)); the means differ by loc_offset.
    ratio = np.exp(-2.0 * log_scale_offset)
    per_dim = 0.5 * (ratio + loc_offset**2 / (variances * np.exp(2 * log_scale_offset)) - 1.0 + 2.0 * log_scale_offset)
    return np.broadcast_to(np.sum(per_dim), np.shape(z)[:-1])


def tractable_posterior(a_matrix, num_features, loc_offset=0.0, log_scale_offset=0.0, **kwargs):
    """A built HierarchicalPosterior with q(psi|x) = N(0, I), q(z|psi, x) = N(A psi + c, s^2 I) and
    tau(psi|z, x) = the exact q(psi|z) with `loc_offset` added to its mean and `log_scale_offset`
    to its log standard deviations (0, 0: exact)."""
    d, a = LATENT_DIM, AUX_DIM
    posterior = HierarchicalPosterior(d, aux_dim=a, hidden_units=[], reverse_hidden_units=[], name="posterior", **kwargs)
    posterior.build((None, num_features))
    zeros = np.zeros
    posterior.auxiliary.loc_layer.set_weights([zeros((num_features, a)), zeros(a)])
    posterior.auxiliary.log_scale_layer.set_weights([zeros((num_features, a)), zeros(a)])
    conditional = posterior.conditional
    conditional.feature_layers[0].set_weights(
        [zeros((num_features, 2 * d)), np.concatenate([OFFSET, np.full(d, np.log(NOISE_SCALE))])]
    )
    conditional.condition_layers[0].set_weights([np.concatenate([a_matrix.T, zeros((a, d))], axis=1)])
    if posterior.reverse is not None:
        mapping, variances = exact_reverse(a_matrix)
        posterior.reverse.feature_layers[0].set_weights(
            [
                zeros((num_features, 2 * a)),
                np.concatenate([-mapping @ OFFSET + loc_offset, 0.5 * np.log(variances) + log_scale_offset]),
            ]
        )
        posterior.reverse.condition_layers[0].set_weights([np.concatenate([mapping.T, zeros((d, a))], axis=1)])
    return posterior
