import keras
from keras import ops

from vizoo.layers.flow_posterior import AmortizedFlowPosterior
from vizoo.registry import register_posterior


def _radial_coefficients(a, b):
    """alpha = softplus(a) > 0 and beta = -alpha + softplus(b) >= -alpha (invertibility)."""
    alpha = ops.softplus(a)
    return alpha, ops.softplus(b) - alpha


def radial_step(z, z_ref, a, b):
    """One radial flow step f(z) = z + beta h(alpha, r) (z - z_ref) and its log |det df/dz|.

    r = |z - z_ref|, h = 1 / (alpha + r) (Rezende & Mohamed 2015), with
    alpha = softplus(a) and beta = softplus(b) - alpha so that f is invertible.
    det = (1 + beta h)^(d - 1) (1 + beta h + beta h' r) and
    1 + beta h + beta h' r = 1 + alpha beta h^2. Shapes: z, z_ref `[..., d]`,
    a, b `[..., 1]`; returns z' `[..., d]` and log_det `[...]`.
    """
    alpha, beta = _radial_coefficients(a, b)
    diff = z - z_ref
    r = ops.sqrt(ops.sum(ops.square(diff), axis=-1, keepdims=True))
    h = 1.0 / (alpha + r)
    d = ops.cast(ops.shape(z)[-1], z.dtype)
    log_det = (d - 1.0) * ops.log1p(beta * h) + ops.log1p(alpha * beta * ops.square(h))
    return z + beta * h * diff, log_det[..., 0]


def radial_inverse(y, z_ref, a, b):
    """The inverse of `radial_step` in closed form.

    |y - z_ref| = r (1 + beta / (alpha + r)) gives r as the positive root of
    r^2 + (alpha + beta - rho) r - alpha rho = 0, with rho = |y - z_ref|.
    """
    alpha, beta = _radial_coefficients(a, b)
    diff = y - z_ref
    rho = ops.sqrt(ops.sum(ops.square(diff), axis=-1, keepdims=True))
    c = alpha + beta - rho
    r = 0.5 * (-c + ops.sqrt(ops.square(c) + 4.0 * alpha * rho))
    return z_ref + diff / (1.0 + beta / (alpha + r))


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
