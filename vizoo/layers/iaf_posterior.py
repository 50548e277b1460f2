import keras
import tensorflow_probability as tfp
from keras import ops

from vizoo.layers.autoregressive_flow import chain_with_reversals, memoize_last
from vizoo.layers.flow_posterior import FlowPosterior
from vizoo.layers.made import MADE
from vizoo.registry import Option, register_posterior
from vizoo.utils import check_activation, check_bool, check_finite_float, check_hidden_units, check_positive_int

tfb = tfp.bijectors


@register_posterior("iaf")
@keras.saving.register_keras_serializable(package="vizoo")
class IAFPosterior(FlowPosterior):
    """Inverse autoregressive flow posterior (Kingma et al. 2016), conditioned on the encoder's h.

    The encoder emits (mu, sigma, h). z_0 = mu + sigma * eps, then T steps,
    each `tfb.Invert(tfb.MaskedAutoregressiveFlow(...))` whose MADE network
    reads z_{t-1} and the context h, with `tfb.Permute` reversing the order
    between steps, all composed with `tfb.Chain`. Each step is one MADE
    evaluation per sample (the network is memoized).

    Gated update (default, the paper's numerically stable form):
        [m, s] = MADE_t(z, h),  sigma = sigmoid(s + forget_bias),
        z <- sigma * z + (1 - sigma) * m,      log det = sum log sigma.
    Affine update (`gated=False`, TFP's convention for MAF's inverse):
        [m, s] = MADE_t(z, h),  z <- (z - m) * exp(-s),   log det = -sum s.

    log q(z_T|x) = log q(z_0|x) - sum_t log det_t. With `num_steps=0` this is
    the diagonal Gaussian posterior.

    Args:
        latent_dim: int, dimension of z.
        num_steps: int >= 0, number of IAF steps T.
        hidden_units: list of ints, hidden layers of each step's MADE.
        activation: MADE (and context head) activation; ELU as in the paper.
        gated: bool, the gated (LSTM-like) update instead of the affine one.
        forget_bias: float added to s before the sigmoid, so that each step
            starts close to the identity (sigma near 1).
        context_units: int or None. None: h is the encoder's last hidden
            features; an int adds a learned head of that size.

    Call arguments:
        h: encoder features, `[batch, features]`.

    Returns:
        dict with `loc`, `log_scale` (`[batch, latent_dim]`, the base Gaussian)
        and `context` (`[batch, context size]`).

    Example:
        >>> model = VAE(784, 32, posterior=IAFPosterior(32, num_steps=2, hidden_units=[320, 320]))

    Reference:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved
        Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    """

    # Constructor arguments on the command line (vizoo/cli.py; see vizoo.registry.Option).
    cli_options = {
        "hidden_units": Option(
            "--flow-hidden-units", int, "hidden layers of each IAF step's MADE (default 320 320)", nargs="+",
            check=check_hidden_units,
        ),
    }

    def __init__(
        self,
        latent_dim,
        num_steps=2,
        hidden_units=(320, 320),
        activation="elu",
        gated=True,
        forget_bias=1.0,
        context_units=None,
        **kwargs,
    ):
        super().__init__(latent_dim, num_steps, **kwargs)
        self.hidden_units = check_hidden_units(hidden_units)
        if not self.hidden_units:
            raise ValueError(f"IAF's MADE needs at least one hidden layer. Received: hidden_units={hidden_units!r}")
        check_activation(activation)  # (named here: with num_steps=0 and no context no layer would check it)
        self.activation = activation
        self.gated = check_bool(gated, "gated")
        self.forget_bias = check_finite_float(forget_bias, "forget_bias")
        self.context_units = None if context_units is None else check_positive_int(context_units, "context_units")
        # Flows compute in full precision: their log-dets are part of log q.
        precision = self.variable_dtype
        self.context_layer = None
        if self.context_units is not None:
            self.context_layer = keras.layers.Dense(
                self.context_units, activation=activation, name="context", dtype=self.dtype_policy
            )
        self.networks = [
            MADE(params=2, hidden_units=self.hidden_units, activation=activation, name=f"made_{t}", dtype=precision)
            for t in range(self.num_steps)
        ]

    def build(self, h_shape):
        super().build(h_shape)
        context_shape = (None, self.context_units or int(h_shape[-1]))
        if self.context_layer is not None:
            self.context_layer.build(h_shape)
        for network in self.networks:
            network.build((None, self.latent_dim), context_shape)

    def call(self, h):
        params = super().call(h)
        context = h if self.context_layer is None else self.context_layer(h)
        params["context"] = ops.cast(context, self.variable_dtype)
        return params

    def _step(self, network, context):
        made = memoize_last(lambda z: network(z, context=context))
        if not self.gated:
            return tfb.Invert(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made))

        def gated_update(z):
            m, s = ops.unstack(made(z), 2, axis=-1)
            s = s + self.forget_bias
            # MAF's inverse (IAF's forward) applies this bijector's inverse: z -> sigma z + (1 - sigma) m.
            update = tfb.Chain([tfb.Shift(ops.sigmoid(-s) * m), tfb.Scale(log_scale=ops.log_sigmoid(s))])
            return tfb.Invert(update)

        return tfb.Invert(tfb.MaskedAutoregressiveFlow(bijector_fn=gated_update))

    def bijector(self, params):
        """The TFP bijector z_0 -> z_T for the encodings `params` (z `[batch, k, latent_dim]`)."""
        context = params["context"][:, None, :]  # broadcasts over the k samples
        return chain_with_reversals([self._step(network, context) for network in self.networks], self.latent_dim)

    def flow(self, params, z):
        if not self.num_steps:
            return z, self._zero_log_det(z)
        bijector = self.bijector(params)
        z_t = bijector.forward(z)
        return z_t, bijector.forward_log_det_jacobian(z, event_ndims=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_units=list(self.hidden_units),
            activation=self.activation,
            gated=self.gated,
            forget_bias=self.forget_bias,
            context_units=self.context_units,
        )
        return config
