"""A VAE with a 2-D latent and a nonlinear decoder whose log p(x) is computed by dense quadrature.

p(z) = N(0, I_2), x|z ~ N(f(z), s^2 I_D) with f a tanh MLP at a seeded initialisation, its weights
scaled up so that the posterior is curved. log p(x) = log of the integral of p(x|z) p(z) over a grid
on [-R, R]^2 (the prior's mass outside is below 1e-7); the posteriors' widths (>= 0.05 here) are
many grid steps wide, so the rectangle rule is exact to well below 1e-3 nats (checked against a grid
twice as fine: `test_quadrature_is_converged`).
"""

import numpy as np
import tensorflow as tf

from vizoo.layers import GaussianLikelihood
from vizoo.models import VAE

DATA_DIM = 4
NOISE_SCALE = 0.3
GRID_RADIUS = 6.0
GRID_POINTS = 301


def nonlinear_vae(seed=0, weight_scale=2.5):
    """The model; every weight drawn from `seed` (q's too: a random encoder, a poor proposal)."""
    model = VAE(
        input_dim=DATA_DIM,
        latent_dim=2,
        hidden_units=[8],
        likelihood=GaussianLikelihood(DATA_DIM, scale=NOISE_SCALE, name="likelihood"),
        seed=seed,
    )
    model.build((None, DATA_DIM))
    rng = np.random.default_rng(seed)
    for layer in model.decoder_layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([weight_scale * rng.normal(size=kernel.shape), rng.normal(size=bias.shape)])
    # The output layer and the encoder, independent of Keras's global initializer state; q(z|x) is close to
    # N(0, I) for every x (a proposal that knows nothing of x).
    model.likelihood.set_weights([rng.normal(size=w.shape) for w in model.likelihood.get_weights()])
    for layer in list(model.encoder_layers) + [model.posterior]:
        layer.set_weights([0.1 * rng.normal(size=w.shape) for w in layer.get_weights()])
    return model


def quadrature_log_px(model, x, points=GRID_POINTS, radius=GRID_RADIUS):
    """log p(x) `[n]` (float64) by the rectangle rule on a `points` x `points` grid over [-radius, radius]^2."""
    axis = np.linspace(-radius, radius, points)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2).astype("float32")
    log_cell = 2.0 * np.log(axis[1] - axis[0])
    z = tf.constant(grid)[None]  # [1, G, 2]
    values = []
    for row in np.asarray(x, "float32"):
        terms = model.joint_terms(tf.constant(row[None]), z)
        log_joint = (terms["log_px_z"] + terms["log_pz"]).numpy().astype(np.float64)[0]
        values.append(np.logaddexp.reduce(log_joint) + log_cell)
    return np.array(values)
