import keras

from vizoo.utils import check_positive_int


class Posterior(keras.layers.Layer):
    """Base of vizoo's amortized posteriors q(z|x): standard-normal base noise eps -> z.

    The interface models and exported encoders rely on:
    - `call(h)` -> dict of parameters from encoder features h (always `loc`);
    - `transform(params, eps)` -> `(z, log_qz)`: a deterministic map from base
      noise eps `[batch, k, latent_dim]` to samples `[batch, k, latent_dim]` and
      their log-density `[batch, k]` (subclasses implement it);
    - `sample_noise(params, k, seed)` -> eps ~ N(0, I);
    - `mean(params)` -> E_q[z], `[batch, latent_dim]`;
    - `serving_outputs(params)` -> the dict an exported encoder serves;
    - `kl_divergence(params, prior)` -> closed-form KL(q || prior) `[batch]`, or None;
    - `log_prob(params, z)` -> log q(z|x) at any z broadcastable against the
      parameters, where `has_density` is True (Gaussians; not flows).

    Args:
        latent_dim: int, dimension of z.
    """

    has_density = False

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")

    def sample_noise(self, params, k, seed=None):
        batch = keras.ops.shape(params["loc"])[0]
        return keras.random.normal((batch, k, self.latent_dim), seed=seed)

    def transform(self, params, eps):
        raise NotImplementedError

    def mean(self, params):
        return params["loc"]

    def serving_outputs(self, params):
        return {"loc": params["loc"], "log_scale": params["log_scale"]}

    def kl_divergence(self, params, prior):
        return None

    def log_prob(self, params, z):
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form log q(z|x) at arbitrary z (only at its own samples, "
            "through transform). Use a Gaussian posterior (diagonal or full_covariance) where one is needed."
        )

    def get_config(self):
        config = super().get_config()
        config["latent_dim"] = self.latent_dim
        return config
