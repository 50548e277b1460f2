import keras
import numpy as np
from keras import ops
from keras.backend import standardize_dtype

from vizoo.layers.flow_posterior import AmortizedFlowPosterior
from vizoo.registry import register_posterior


def planar_step(z, u, w, b):
    """One planar flow step f(z) = z + u_hat tanh(w^T z + b) and its log |det df/dz|.

    u_hat = u + (m(w^T u) - w^T u) w / |w|^2 with m(a) = -1 + softplus(a)
    enforces w^T u_hat > -1, which makes f invertible (Rezende & Mohamed 2015,
    appendix A). Shapes: z, u, w `[..., d]`, b `[..., 1]` (broadcasting);
    returns z' `[..., d]` and log_det `[...]`.
    """
    wu = ops.sum(w * u, axis=-1)
    squared_norm = ops.sum(ops.square(w), axis=-1)
    # |w|^2 floored at the dtype's smallest normal number: at w = 0 (e.g. an encoder's features of a blank
    # image with zero biases) the step is the shift u tanh(b), u_hat = u and log det = 0, not 0/0.
    floored = ops.maximum(squared_norm, np.finfo(standardize_dtype(w.dtype)).tiny)
    u_hat = u + ((ops.softplus(wu) - 1.0 - wu) / floored)[..., None] * w
    activation = ops.tanh(ops.sum(w * z, axis=-1) + b[..., 0])
    # det(I + u_hat psi^T) = 1 + psi^T u_hat with psi = (1 - tanh^2) w, and w^T u_hat = wu + ratio
    # (softplus(wu) - 1 - wu), ratio = |w|^2 / floored (1 unless w = 0). At ratio 1 this is
    # tanh^2 + (1 - tanh^2) softplus(wu) > 0, written so: 1 + (1 - tanh^2)(softplus(wu) - 1) cancels to 0 in
    # float32 when softplus(wu) and tanh^2 are both small (log det -inf, where it is about wu).
    ratio = squared_norm / floored
    squared = ops.square(activation)
    det = ratio * (squared + (1.0 - squared) * ops.softplus(wu)) + (1.0 - ratio) * (1.0 + (1.0 - squared) * wu)
    return z + u_hat * activation[..., None], ops.log(det)


@register_posterior("planar")
@keras.saving.register_keras_serializable(package="vizoo")
class PlanarFlowPosterior(AmortizedFlowPosterior):
    """Planar normalizing flow posterior (Rezende & Mohamed 2015), amortized per example.

    z_0 ~ N(mu(x), diag sigma(x)^2), then T planar steps
    z_t = z_{t-1} + u_hat_t tanh(w_t^T z_{t-1} + b_t), whose parameters
    (u_t, w_t, b_t) the encoder emits for each example; see `planar_step`
    for the invertibility constraint. log q(z_T|x) = log q(z_0|x) - sum_t
    log |1 + u_hat_t^T psi_t(z_{t-1})|.

    Args:
        latent_dim: int, dimension of z.
        num_steps: int >= 0 (default 4), number of planar steps T.

    Call arguments:
        h: encoder features, `[batch, features]`.

    Returns:
        dict with `loc`, `log_scale` (`[batch, latent_dim]`) and `flow`
        (`[batch, num_steps, 2 * latent_dim + 1]`: u, w, b of each step).

    Reference:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    """

    @staticmethod
    def params_per_step(latent_dim):
        return 2 * latent_dim + 1

    def step(self, z, step_params):
        d = self.latent_dim
        return planar_step(z, step_params[..., :d], step_params[..., d : 2 * d], step_params[..., 2 * d :])
