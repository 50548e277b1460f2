import keras

from vizoo.layers.posterior import Posterior
from vizoo.layers.prior import Prior


class GaussianPosterior(Posterior):
    """Base of the Gaussian posteriors: standard-normal base noise and a density at any z.

    Gives the Gaussian defaults of the `Posterior` interface: eps ~ N(0, I)
    of shape `[batch, k, latent_dim]`, E_q[z] = `loc`, an exported encoder
    serving `loc` and `log_scale`, and a closed-form KL against the standard
    normal prior. Subclasses implement `call`, `transform`, `log_prob` and
    `kl_divergence`.

    Args:
        latent_dim: int, dimension of z.
    """

    has_log_prob = True

    def sample_noise(self, params, k, seed=None):
        loc = params["loc"]
        # In the parameters' dtype: float32 under mixed precision (the heads are), float64 in float64.
        return keras.random.normal((keras.ops.shape(loc)[0], k) + self.noise_shape, dtype=loc.dtype, seed=seed)

    def mean(self, params):
        return params["loc"]

    def serving_outputs(self, params):
        return {"loc": params["loc"], "log_scale": params["log_scale"]}

    def has_analytic_kl(self, prior):
        return isinstance(prior, Prior) and prior.is_standard_normal  # a vizoo prior that declares N(0, I)
