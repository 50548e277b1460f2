import keras
from keras import ops

from vizoo.layers.posterior import Posterior
from vizoo.registry import register_posterior
from vizoo.utils import check_hidden_units, check_positive_int


@register_posterior("implicit")
@keras.saving.register_keras_serializable(package="vizoo")
class ImplicitPosterior(Posterior):
    """An implicit posterior: a sampler z = f(h, eps) with no density.

        eps ~ N(0, I_m),   z = f([h, eps]),

    f an MLP on the encoder's features h and the noise concatenated (tanh hidden
    layers, linear output). Samples are reparameterized, but q(z|x) has no
    closed form: `has_density` is False, so `transform` returns `(z, None)`, the
    model gives no `log_qz` term, and losses that read log q (`needs_density`:
    ELBO, IWAE, ...) are refused at `compile` with the reason. It trains with a
    loss that needs no density (e.g. the adversarial objective of AVB, whose
    value is an estimate, not a bound). `vizoo.evaluate.log_likelihood`
    estimates log p(x) with a Gaussian proposal fitted to its samples
    (`result["proposal"] == "fitted_gaussian"`), and its exported encoder's
    `sample` signature gives z alone.

    Args:
        latent_dim: int, dimension of z.
        noise_dim: int, dimension m of eps (default latent_dim).
        hidden_units: list of ints, hidden layers of f.
        activation: activation of those layers.

    Returns (of `call`):
        dict with `features`, `[batch, features]` (h, float32): f reads them per sample.

    Example:
        >>> model = VAE(784, 8, posterior=ImplicitPosterior(8, noise_dim=8, hidden_units=[64]))

    Reference:
        Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes", ICML 2017, section 3
        (the sampler z = f(x, eps) of AVB's "implicit" posterior).
    """

    has_density = False
    exact_density = False
    has_log_prob = False

    def __init__(self, latent_dim, noise_dim=None, hidden_units=(64,), activation="tanh", **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.noise_dim = self.latent_dim if noise_dim is None else check_positive_int(noise_dim, "noise_dim")
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        keras.activations.get(activation)  # fails early on an unknown name
        # Full precision (like every probabilistic head): z enters log p(x|z) and log p(z).
        self.hidden_layers = [
            keras.layers.Dense(units, activation=activation, name=f"dense_{i}", dtype=self.variable_dtype)
            for i, units in enumerate(self.hidden_units)
        ]
        self.output_layer = keras.layers.Dense(self.latent_dim, name="z", dtype=self.variable_dtype)
        self.feature_dim = None  # F, known at build

    def build(self, h_shape):
        self.feature_dim = int(h_shape[-1])
        shape = (None, self.feature_dim + self.noise_dim)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = (None, layer.units)
        self.output_layer.build(shape)

    def call(self, h):
        return {"features": ops.cast(h, self.variable_dtype)}

    @property
    def noise_shape(self):
        return (self.noise_dim,)

    def sample_noise(self, params, k, seed=None):
        features = params["features"]
        return keras.random.normal((ops.shape(features)[0], k, self.noise_dim), dtype=features.dtype, seed=seed)

    def _sampler(self, features, eps):
        """f([h, eps]): features `[batch, F]`, eps `[batch, k, m]` -> z `[batch, k, latent_dim]`."""
        eps = ops.cast(eps, features.dtype)
        tiled = ops.broadcast_to(features[:, None, :], (ops.shape(eps)[0], ops.shape(eps)[1], ops.shape(features)[1]))
        h = ops.concatenate([tiled, eps], axis=-1)
        for layer in self.hidden_layers:
            h = layer(h)
        return self.output_layer(h)

    def transform(self, params, eps):
        """`(z [batch, k, latent_dim], None)`: no density."""
        return self._sampler(params["features"], eps), None

    def mean(self, params):
        """f([h, 0]): the image of the noise's mean, a location summary (E_q[z] has no closed form)."""
        features = params["features"]
        return self._sampler(features, ops.zeros((ops.shape(features)[0], 1, self.noise_dim), features.dtype))[:, 0]

    def serving_outputs(self, params):
        return {"loc": self.mean(params)}

    def sample_elements(self, **sampler_options):
        return max([self.latent_dim, self.noise_dim + (self.feature_dim or 0)] + self.hidden_units)

    def get_config(self):
        config = super().get_config()
        config.update(
            noise_dim=self.noise_dim, hidden_units=list(self.hidden_units), activation=self.activation
        )
        return config
