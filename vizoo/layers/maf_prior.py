import keras
import tensorflow_probability as tfp
from keras import ops

from vizoo.layers.autoregressive_flow import chain_with_reversals, memoize_last
from vizoo.layers.made import MADE
from vizoo.layers.prior import Prior
from vizoo.registry import Option, register_prior
from vizoo.utils import HALF_LOG_2PI, check_hidden_units, check_non_negative_int, check_positive_int

tfb = tfp.bijectors


@register_prior("maf")
@keras.saving.register_keras_serializable(package="vizoo")
class MAFPrior(Prior):
    """A learned flow prior: a masked autoregressive flow (Papamakarios et al. 2017) on N(0, I).

    z = f_T(... f_1(u)), u ~ N(0, I), each step a
    `tfb.MaskedAutoregressiveFlow` whose shift and log-scale come from a MADE
    layer, with `tfb.Permute` reversing the order between steps. Density
    evaluation (the direction training needs) is one MADE pass per step:

        log p(z) = log N(f^-1(z); 0, I) + log |det d f^-1(z) / dz|.

    Sampling is sequential (latent_dim passes per step). The interface is
    `Prior`'s.

    Args:
        num_steps: int >= 0, number of MAF steps (0 gives N(0, I)).
        hidden_units: list of ints, hidden layers of each MADE.
        activation: MADE activation.

    Example:
        >>> model = VAE(784, 32, prior=MAFPrior(num_steps=2, hidden_units=[64, 64]))

    Reference:
        Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for
        Density Estimation", NeurIPS 2017.
    """

    # Constructor arguments on the command line (vizoo/cli.py; see vizoo.registry.Option).
    cli_options = {
        "num_steps": Option("--prior-flow-steps", int, "MAF steps of the maf prior", default=2, check=check_positive_int),
    }

    def __init__(self, num_steps=2, hidden_units=(64, 64), activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.num_steps = check_non_negative_int(num_steps, "num_steps")
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        self.networks = [
            MADE(params=2, hidden_units=self.hidden_units, activation=activation, name=f"made_{t}", dtype=self.variable_dtype)
            for t in range(self.num_steps)
        ]

    def build(self, z_shape):
        super().build(z_shape)
        for network in self.networks:
            network.build((None, self.latent_dim))

    def bijector(self):
        """The TFP bijector u -> z."""
        steps = [tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=memoize_last(network)) for network in self.networks]
        return chain_with_reversals(steps, self.latent_dim)

    def log_prob(self, z):
        z = ops.cast(z, self.variable_dtype)
        bijector = self.bijector()
        u = bijector.inverse(z)
        base = ops.sum(-0.5 * ops.square(u) - HALF_LOG_2PI, axis=-1)
        return base + bijector.inverse_log_det_jacobian(z, event_ndims=1)

    def sample(self, num_examples, seed=None):
        num_examples = self.checked_num_examples(num_examples)
        u = keras.random.normal((num_examples, self.latent_dim), dtype=self.variable_dtype, seed=seed)
        return self.bijector().forward(u)

    def get_config(self):
        config = super().get_config()
        config.update(num_steps=self.num_steps, hidden_units=list(self.hidden_units), activation=self.activation)
        return config
