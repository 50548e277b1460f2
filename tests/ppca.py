"""Probabilistic PCA built from vizoo's pieces: an exact reference for bounds and estimators.

z ~ N(0, I_d), x|z ~ N(W z + b, s^2 I_D). Then p(x) = N(b, W W^T + s^2 I) in closed form,
and the posterior is p(z|x) = N(M^-1 W^T (x - b), s^2 M^-1) with M = W^T W + s^2 I.
W has orthogonal columns, so M is diagonal and the exact posterior is a diagonal Gaussian
that a linear encoder can represent. W's last column is zero: that latent unit carries no
information (its posterior is the prior), so it is inactive.
"""

import numpy as np
from scipy import stats

from vizoo.layers import GaussianLikelihood
from vizoo.models import VAE

DATA_DIM = 5
COLUMN_NORMS = np.array([2.0, 1.0, 0.0])
NOISE_SCALE = 0.5


def ppca_parameters(seed=0, orthogonal=True):
    """(W [D, d], b [D]); with orthogonal=False the exact posterior has a full covariance."""
    rng = np.random.default_rng(seed)
    if not orthogonal:
        return rng.normal(size=(DATA_DIM, 2)), rng.normal(size=DATA_DIM)
    q, _ = np.linalg.qr(rng.normal(size=(DATA_DIM, len(COLUMN_NORMS))))
    weights = q * COLUMN_NORMS  # [D, d], orthogonal columns
    bias = rng.normal(size=DATA_DIM)
    return weights, bias


def exact_log_px(x, weights, bias):
    covariance = weights @ weights.T + NOISE_SCALE**2 * np.eye(DATA_DIM)
    return stats.multivariate_normal(bias, covariance).logpdf(np.asarray(x, "float64"))


def sample_data(num_examples, weights, bias, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(num_examples, weights.shape[1]))
    return (z @ weights.T + bias + NOISE_SCALE * rng.normal(size=(num_examples, DATA_DIM))).astype("float32")


def ppca_decoder_vae(weights, bias, posterior, seed=0):
    """A VAE whose decoder is the pPCA model (frozen) and whose encoder is at its initialisation."""
    model = VAE(
        input_dim=DATA_DIM,
        latent_dim=weights.shape[1],
        hidden_units=[],
        posterior=posterior,
        likelihood=GaussianLikelihood(DATA_DIM, scale=NOISE_SCALE, name="likelihood"),
        seed=seed,
    )
    model.build((None, DATA_DIM))
    model.likelihood.loc_layer.set_weights([weights.T, bias])
    model.likelihood.trainable = False
    return model


def ppca_vae(weights, bias, loc_offset=0.0, log_scale_offset=0.0, seed=0):
    """A VAE whose decoder is the pPCA model and whose q is the exact posterior (+ offsets)."""
    latent_dim = weights.shape[1]
    model = VAE(
        input_dim=DATA_DIM,
        latent_dim=latent_dim,
        hidden_units=[],
        likelihood=GaussianLikelihood(DATA_DIM, scale=NOISE_SCALE, name="likelihood"),
        seed=seed,
    )
    model.build((None, DATA_DIM))
    m_diag = np.sum(weights**2, axis=0) + NOISE_SCALE**2
    posterior_map = (weights / m_diag).T  # M^-1 W^T, [d, D]
    model.posterior.loc_layer.set_weights([posterior_map.T, -posterior_map @ bias + loc_offset])
    model.posterior.log_scale_layer.set_weights(
        [np.zeros((DATA_DIM, latent_dim)), np.log(NOISE_SCALE) - 0.5 * np.log(m_diag) + log_scale_offset]
    )
    model.likelihood.loc_layer.set_weights([weights.T, bias])
    return model
