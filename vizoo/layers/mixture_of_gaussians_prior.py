import keras
from keras import ops

from vizoo.layers.prior import Prior
from vizoo.registry import Option, register_prior
from vizoo.utils import HALF_LOG_2PI, check_positive_int, draw_seed


@register_prior("mixture")
@keras.saving.register_keras_serializable(package="vizoo")
class MixtureOfGaussiansPrior(Prior):
    """A learned mixture of K diagonal Gaussians, p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2).

    Weights pi = softmax(logits) start uniform, scales at 1, and means are
    drawn from N(0, I) so that the components start apart. The interface is
    `Prior`'s.

    Args:
        num_components: int K.

    Example:
        >>> model = VAE(784, 32, prior=MixtureOfGaussiansPrior(num_components=10))
    """

    # Constructor arguments on the command line (vizoo/cli.py; see vizoo.registry.Option).
    cli_options = {
        "num_components": Option(
            "--prior-components",
            int,
            "mixture components (default 10) or VampPrior pseudo-inputs (default 500, drawn from training data)",
            check=check_positive_int,
        ),
    }

    def __init__(self, num_components=10, **kwargs):
        super().__init__(**kwargs)
        self.num_components = check_positive_int(num_components, "num_components")

    def build(self, z_shape):
        super().build(z_shape)
        shape = (self.num_components, self.latent_dim)
        self.logits = self.add_weight(name="logits", shape=(self.num_components,), initializer="zeros")
        self.means = self.add_weight(name="means", shape=shape, initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.log_scales = self.add_weight(name="log_scales", shape=shape, initializer="zeros")

    def log_prob(self, z):
        z = ops.cast(z, self.variable_dtype)[..., None, :]  # [..., 1, d] against [K, d]
        standardized = (z - self.means) * ops.exp(-self.log_scales)
        component = ops.sum(-0.5 * ops.square(standardized) - HALF_LOG_2PI - self.log_scales, axis=-1)
        return ops.logsumexp(component + ops.log_softmax(self.logits), axis=-1)

    def sample(self, num_examples, seed=None):
        num_examples = self.checked_num_examples(num_examples)
        # Two draws from one seed (an int gives each its own; no generator is made: this traces too).
        components = keras.random.categorical(self.logits[None, :], num_examples, seed=draw_seed(seed, 1))[0]
        eps = keras.random.normal((num_examples, self.latent_dim), dtype=self.variable_dtype, seed=draw_seed(seed, 2))
        return ops.take(self.means, components, axis=0) + ops.exp(ops.take(self.log_scales, components, axis=0)) * eps

    def get_config(self):
        config = super().get_config()
        config["num_components"] = self.num_components
        return config
