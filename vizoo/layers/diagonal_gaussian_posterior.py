import keras
import tensorflow as tf
from keras import ops

from vizoo.layers.gaussian_posterior import GaussianPosterior
from vizoo.registry import register_posterior
from vizoo.utils import HALF_LOG_2PI


@register_posterior("diagonal")
@keras.saving.register_keras_serializable(package="vizoo")
class DiagonalGaussianPosterior(GaussianPosterior):
    """Amortized diagonal Gaussian q(z|x) = N(mu(x), diag(sigma(x)^2)).

    Maps encoder features h to the posterior's parameters and draws
    reparameterized samples z = mu + sigma * eps with eps ~ N(0, I), so that
    gradients flow through the samples. sigma = exp(log_sigma), as in Burda et al.

    The interface every posterior has is `Posterior`'s; the Gaussian defaults
    are `GaussianPosterior`'s.

    Args:
        latent_dim: int, dimension of z.

    Call arguments:
        h: encoder features, `[batch, features]`.

    Returns:
        dict with `loc` and `log_scale`, each `[batch, latent_dim]`.
    """

    factorized = True  # kl_divergence_per_dim: one closed-form KL per latent dimension

    def __init__(self, latent_dim, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.loc_layer = keras.layers.Dense(latent_dim, name="loc", dtype=self.dtype_policy)
        self.log_scale_layer = keras.layers.Dense(latent_dim, name="log_scale", dtype=self.dtype_policy)

    def build(self, h_shape):
        self.loc_layer.build(h_shape)
        self.log_scale_layer.build(h_shape)

    def call(self, h):
        # The head's outputs are cast to float32 under mixed precision (its matmuls run in 16 bits): the
        # samples and densities computed from them are float32.
        loc = ops.cast(self.loc_layer(h), self.variable_dtype)
        log_scale = ops.cast(self.log_scale_layer(h), self.variable_dtype)
        return {"loc": loc, "log_scale": log_scale}

    def transform(self, params, eps):
        loc = params["loc"][:, None, :]
        log_scale = params["log_scale"][:, None, :]
        z = loc + ops.exp(log_scale) * eps
        # log N(z; mu, sigma) = log N(eps; 0, 1) - log sigma, exact from eps.
        log_qz = ops.sum(-0.5 * ops.square(eps) - HALF_LOG_2PI - log_scale, axis=-1)
        return z, log_qz

    def log_prob(self, z, params):
        """log q(z|x) for any z broadcastable against the parameters `[..., latent_dim]` -> `[...]`."""
        loc, log_scale = params["loc"], params["log_scale"]
        standardized = (z - loc) * ops.exp(-log_scale)
        return ops.sum(-0.5 * ops.square(standardized) - HALF_LOG_2PI - log_scale, axis=-1)

    def mixture_log_prob(self, z, params):
        """`log_prob` of z `[..., d]` under each of J components `[J, d]`, `[..., J]`, as two matmuls.

        sum_i (z_i - mu_ji)^2 w_ji = z^2 . w_j - 2 z . (mu_j w_j) + mu_j^2 . w_j with w = 1 / sigma^2: two
        `[..., d] x [d, J]` products instead of a `[..., J, d]` tensor (20 times faster for the VampPrior's 500
        components). In float64: each term reaches |z|^2 / sigma^2 and they cancel to the squared distance.
        """
        loc = ops.cast(params["loc"], "float64")
        log_scale = ops.cast(params["log_scale"], "float64")
        weight = ops.exp(-2.0 * log_scale)  # [J, d]
        flat = tf.reshape(tf.cast(z, tf.float64), [-1, self.latent_dim])  # [n, d]
        quadratic = (
            ops.matmul(ops.square(flat), ops.transpose(weight))
            - 2.0 * ops.matmul(flat, ops.transpose(loc * weight))
            + ops.sum(ops.square(loc) * weight, axis=-1)[None, :]
        )
        log_q = -0.5 * quadratic - ops.sum(log_scale, axis=-1)[None, :] - HALF_LOG_2PI * self.latent_dim
        shape = tf.concat([tf.shape(z)[:-1], tf.shape(loc)[:1]], axis=0)
        return tf.cast(tf.reshape(log_q, shape), z.dtype)

    def kl_divergence(self, params, prior):
        if not self.has_analytic_kl(prior):
            return None
        return ops.sum(self.kl_divergence_per_dim(params, prior), axis=-1)

    def kl_divergence_per_dim(self, params, prior):
        """KL(q(z_j|x) || p(z_j)) for each latent dimension j, `[batch, latent_dim]` (None without a closed form).

        A factorized q against the N(0, I) prior: the KL is the sum of these (free bits group them).
        """
        if not self.has_analytic_kl(prior):
            return None
        loc, log_scale = params["loc"], params["log_scale"]
        # KL(N(mu, s^2) || N(0, 1)) = 1/2 (mu^2 + s^2 - 1) - log s, per dimension.
        return 0.5 * (ops.square(loc) + ops.exp(2.0 * log_scale) - 1.0) - log_scale
