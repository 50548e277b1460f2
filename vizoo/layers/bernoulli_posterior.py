import keras
from keras import ops

from vizoo.layers.posterior import Posterior
from vizoo.utils import check_activation, check_hidden_units


def bernoulli_log_prob(value, logits):
    """Factorized Bernoulli log-pmf summed over the last axis: sum_i [b_i l_i - softplus(l_i)].

    Exact and stable for any logit l (log sigmoid(l) = l - softplus(l)); `value`
    holds 0/1 entries broadcastable against `logits` `[..., units]` -> `[...]`.
    """
    return ops.sum(value * logits - ops.softplus(logits), axis=-1)


def check_latent_dims(latent_dims, name="latent_dims"):
    """`latent_dims` as a non-empty list of positive ints, else a ValueError naming it."""
    dims = check_hidden_units(latent_dims, name)
    if not dims:
        raise ValueError(f"{name} must name at least one stochastic layer. Received: {name}={latent_dims!r}")
    return dims


class _MLP(keras.layers.Layer):
    """Dense hidden layers (`activation`) then a linear layer of `units` outputs, on inputs of any rank.

    (A building block of the SBN's conditionals; `keras.Sequential` would pin the input's rank.)
    """

    def __init__(self, units, hidden_units=(), activation="tanh", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden_units = list(hidden_units)
        self.activation = activation
        self.dense_layers = [
            keras.layers.Dense(u, activation=activation, name=f"dense_{i}", dtype=self.dtype_policy)
            for i, u in enumerate(self.hidden_units)
        ]
        self.dense_layers.append(keras.layers.Dense(units, name="logits", dtype=self.dtype_policy))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        self.built = True

    def call(self, inputs):
        h = inputs
        for layer in self.dense_layers:
            h = layer(h)
        return h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, hidden_units=self.hidden_units, activation=self.activation)
        return config


def mlp(units, hidden_units, activation, name, dtype):
    """An MLP named `name`: Dense hidden layers, then `units` linear outputs."""
    return _MLP(units, hidden_units, activation, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="vizoo")
class BernoulliPosterior(Posterior):
    """Layers of binary units sampled top-down from x: q(h|x) = q(h_1|x) q(h_2|h_1) ... q(h_L|h_{L-1}).

    Each conditional is a factorized Bernoulli whose logits an MLP computes
    from the layer below (x for the first):

        q(h_l | h_{l-1}) = prod_i sigmoid(a_l,i)^h_l,i (1 - sigmoid(a_l,i))^(1 - h_l,i),
        a_l = MLP_l(h_{l-1}),

    with `hidden_units` deterministic layers in each MLP (none: the logistic
    regressions of a sigmoid belief network). A sample is drawn from uniform
    noise u ~ U(0, 1), h_l,i = 1[u_l,i < sigmoid(a_l,i)], layer by layer, so
    `transform` is deterministic given the noise (exported encoders take it as
    an input). z is the concatenation (h_1, ..., h_L). The samples are
    discrete: no gradient flows through them (`reparameterized = False`), and
    losses must use score-function estimators (`VIMCOLoss`, `NVILLoss`);
    log q(z|x) is exact at any binary z (`has_log_prob`).

    Args:
        latent_dims: list of ints, the sizes of h_1 (next to x) to h_L.
        hidden_units: list of ints, deterministic hidden layers inside each
            conditional's MLP (`[]` by default).
        activation: activation of those hidden layers.

    Call arguments:
        x: the data (or encoder features), `[batch, features]`.

    Returns:
        dict with `logits`, `[batch, latent_dims[0]]` (in the variable dtype: float32 under mixed precision): the first
        layer's logits, the part of q that depends on x alone (the upper
        layers' logits depend on the samples and are computed in `transform`).

    Example:
        >>> q = BernoulliPosterior([200, 200])
        >>> params = q(x)                                   # {"logits": [batch, 200]}
        >>> z, log_qz = q.transform(params, q.sample_noise(params, k=5))  # [batch, 5, 400], [batch, 5]

    Reference:
        Mnih & Gregor, "Neural Variational Inference and Learning in Belief
        Networks", ICML 2014 (section 2: the inference network).
    """

    reparameterized = False
    has_log_prob = True

    def __init__(self, latent_dims, hidden_units=(), activation="tanh", **kwargs):
        latent_dims = check_latent_dims(latent_dims)
        super().__init__(sum(latent_dims), **kwargs)
        self.latent_dims = latent_dims
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        check_activation(activation)  # fails early on an unknown name
        self.networks = [
            mlp(units, self.hidden_units, activation, f"q_h{i + 1}", self.dtype_policy)
            for i, units in enumerate(latent_dims)
        ]

    def build(self, x_shape):
        shapes = [tuple(x_shape)] + [(None, units) for units in self.latent_dims[:-1]]
        for network, shape in zip(self.networks, shapes):
            if not network.built:
                network.build(shape)
        self.built = True

    def call(self, x):
        return {"logits": ops.cast(self.networks[0](x), self.variable_dtype)}  # float32 under mixed precision

    def split(self, z):
        """z `[..., sum(latent_dims)]` -> [h_1, ..., h_L]."""
        bounds = [sum(self.latent_dims[: i + 1]) for i in range(len(self.latent_dims) - 1)]
        return ops.split(z, bounds, axis=-1) if bounds else [z]

    def sample_noise(self, params, k, seed=None):
        logits = params["logits"]
        return keras.random.uniform((ops.shape(logits)[0], k) + self.noise_shape, dtype=logits.dtype, seed=seed)

    def transform(self, params, eps):
        """Uniform noise `[batch, k, latent_dim]` -> binary z `[batch, k, latent_dim]` and log q(z|x) `[batch, k]`."""
        logits = ops.expand_dims(params["logits"], axis=1)  # [batch, 1, d_1]: the same q(h_1|x) for every sample
        layers, log_qz = [], 0.0
        for i, u in enumerate(self.split(eps)):
            if i:
                logits = ops.cast(self.networks[i](layers[-1]), self.variable_dtype)  # [batch, k, d_i]
            # A comparison has no gradient: the samples are constants of the parameters.
            h = ops.stop_gradient(ops.cast(u < ops.sigmoid(logits), logits.dtype))
            log_qz = log_qz + bernoulli_log_prob(h, logits)
            layers.append(h)
        return ops.concatenate(layers, axis=-1), log_qz

    def log_prob(self, z, params):
        """log q(z|x) at binary z `[..., latent_dim]` broadcastable against the parameters -> `[...]`."""
        layers = self.split(ops.cast(z, self.variable_dtype))
        log_q = bernoulli_log_prob(layers[0], params["logits"])
        for network, below, h in zip(self.networks[1:], layers[:-1], layers[1:]):
            log_q = log_q + bernoulli_log_prob(h, ops.cast(network(below), self.variable_dtype))
        return log_q

    @property
    def mean_dim(self):
        return self.latent_dims[0]

    def mean(self, params):
        """E_q[h_1|x] = sigmoid(logits), `[batch, latent_dims[0]]` (the first layer's units only)."""
        return ops.sigmoid(params["logits"])

    def serving_outputs(self, params):
        return {"logits": params["logits"], "probs": ops.sigmoid(params["logits"])}

    def get_config(self):
        config = super().get_config()
        del config["latent_dim"]  # the sum of latent_dims
        config.update(latent_dims=list(self.latent_dims), hidden_units=list(self.hidden_units), activation=self.activation)
        return config
