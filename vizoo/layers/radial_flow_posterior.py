import keras
from keras import ops

from vizoo.layers.flow_posterior import AmortizedFlowPosterior
from vizoo.registry import register_posterior


def _radial_coefficients(a, b):
    """alpha = softplus(a) > 0 and beta = -alpha + softplus(b) >= -alpha (invertibility)."""
    alpha = ops.softplus(a)
    return alpha, ops.softplus(b) - alpha


def _norm(x):
    """|x| over the last axis, keepdims, with gradient 0 (not 0/0) at x = 0."""
    squared = ops.sum(ops.square(x), axis=-1, keepdims=True)
    positive = squared > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, squared, ops.ones_like(squared))), ops.zeros_like(squared))


def radial_step(z, z_ref, a, b):
    """One radial flow step f(z) = z + beta h(alpha, r) (z - z_ref) and its log |det df/dz|.

    r = |z - z_ref|, h = 1 / (alpha + r) (Rezende & Mohamed 2015), with
    alpha = softplus(a) and beta = softplus(b) - alpha so that f is invertible.
    det = (1 + beta h)^(d - 1) (1 + beta h + beta h' r) and
    1 + beta h + beta h' r = 1 + alpha beta h^2. Both factors are written as ratios of
    positive terms, 1 + beta h = (r + s) / (alpha + r) and
    1 + alpha beta h^2 = (r (r + 2 alpha) + alpha s) / (alpha + r)^2 with s = softplus(b),
    so that neither cancels in float32 when s is much smaller than alpha.
    Shapes: z, z_ref `[..., d]`, a, b `[..., 1]`; returns z' `[..., d]` and log_det `[...]`.
    """
    alpha, beta = _radial_coefficients(a, b)
    s = ops.softplus(b)
    diff = z - z_ref
    r = _norm(diff)
    log_alpha_r = ops.log(alpha + r)
    d = ops.cast(ops.shape(z)[-1], z.dtype)
    log_det = (d - 1.0) * (ops.log(r + s) - log_alpha_r) + ops.log(r * (r + 2.0 * alpha) + alpha * s) - 2.0 * log_alpha_r
    return z + beta / (alpha + r) * diff, log_det[..., 0]


def radial_inverse(y, z_ref, a, b):
    """The inverse of `radial_step` in closed form.

    |y - z_ref| = r (1 + beta / (alpha + r)) gives r as the positive root of
    r^2 + (alpha + beta - rho) r - alpha rho = 0, with rho = |y - z_ref|.
    """
    alpha, s = ops.softplus(a), ops.softplus(b)
    diff = y - z_ref
    rho = _norm(diff)
    c = s - rho  # alpha + beta - rho
    root = ops.sqrt(ops.square(c) + 4.0 * alpha * rho)
    # The root without cancellation: for c > 0 the usual form subtracts two near-equal numbers.
    r = ops.where(c > 0, 2.0 * alpha * rho / ops.where(c > 0, c + root, ops.ones_like(c)), 0.5 * (root - c))
    return z_ref + diff * (alpha + r) / (r + s)


@register_posterior("radial")
@keras.saving.register_keras_serializable(package="vizoo")
class RadialFlowPosterior(AmortizedFlowPosterior):
    """Radial normalizing flow posterior (Rezende & Mohamed 2015), amortized per example.

    z_0 ~ N(mu(x), diag sigma(x)^2), then T radial steps, each contracting or
    expanding around a reference point z_ref,t; the encoder emits
    (z_ref, a, b) of every step for each example; see `radial_step`.

    Args:
        latent_dim: int, dimension of z.
        num_steps: int >= 0 (default 4), number of radial steps T.

    Call arguments:
        h: encoder features, `[batch, features]`.

    Returns:
        dict with `loc`, `log_scale` (`[batch, latent_dim]`) and `flow`
        (`[batch, num_steps, latent_dim + 2]`: z_ref, a, b of each step).

    Reference:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    @staticmethod
    def params_per_step(latent_dim):
        return latent_dim + 2

    def step(self, z, step_params):
        d = self.latent_dim
        return radial_step(z, step_params[..., :d], step_params[..., d : d + 1], step_params[..., d + 1 :])
