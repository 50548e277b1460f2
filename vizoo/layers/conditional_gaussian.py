import keras
from keras import ops

from vizoo.utils import HALF_LOG_2PI, check_activation, check_hidden_units, check_positive_int


@keras.saving.register_keras_serializable(package="vizoo")
class ConditionalGaussian(keras.layers.Layer):
    """Diagonal Gaussian N(mu, diag sigma^2) whose parameters are an MLP of features h and a per-sample c.

    The building block of auxiliary samplers: q(z|psi, x) (c = psi) and the
    reverse model tau(psi|z, x) (c = z) of `HierarchicalPosterior`. h is one
    vector per example (the encoder's features of x); c has any number of
    sample axes after the batch axis. c enters every hidden layer, as in
    Sobolev & Vetrov's code:

        a_0 = h,   a_l = act(W_l a_{l-1} + U_l c + b_l)  (l = 1..L),
        [mu, log sigma] = W a_L + b                    (L >= 1),
        [mu, log sigma] = W h + U c + b                (L = 0).

    (c does not enter the head directly when there are hidden layers: an
    unbounded linear path from z to tau's log-scale made untrained bounds
    overflow.)

    The first layer's h-part is computed once per example and broadcast over
    the samples, so a layer costs one per-sample projection of c. With
    `hidden_units=[]` the parameters are affine in h and c (e.g. z|psi ~
    N(A psi + c_0, s^2 I), a linear-Gaussian model with a closed-form marginal).
    Outputs are cast to the variable dtype (float32 under mixed precision).

    Args:
        units: int, dimension of the Gaussian variable.
        hidden_units: list of ints, hidden layer sizes (`[]`: affine).
        activation: activation of the hidden layers.
        head_initializer: initializer of the weights that produce
            `[mu, log sigma]` (the head's kernel, and c's projection when
            there is no hidden layer). `"zeros"` makes the output 0 at
            initialisation whatever h and c: a residual correction that
            starts at nothing (`HierarchicalPosterior`'s reverse model).

    Call arguments:
        features: `[batch, features]`, one vector per example.
        condition: `[batch, ..., condition_dim]`, any sample axes.

    Returns:
        dict with `loc` and `log_scale`, each `[batch, ..., units]` (the
        condition's sample axes).

    Example:
        >>> layer = ConditionalGaussian(4, hidden_units=[32])
        >>> params = layer(ops.ones((8, 16)), ops.ones((8, 5, 3)))  # loc: [8, 5, 4]
        >>> log_density = ConditionalGaussian.log_prob(value, params)

    Reference:
        Sobolev & Vetrov, "Importance Weighted Hierarchical Variational
        Inference", NeurIPS 2019.
    """

    def __init__(self, units, hidden_units=(), activation="tanh", head_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int(units, "units")
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        self._activation = check_activation(activation)
        # Kept serialized: each head weight gets an initializer instance of its own.
        try:
            initializer = keras.initializers.get(head_initializer)
        except (ValueError, TypeError):
            raise ValueError(
                "head_initializer must be a Keras initializer or its name, e.g. 'zeros'. "
                f"Received: head_initializer={head_initializer!r}"
            ) from None
        self.head_initializer = keras.initializers.serialize(initializer)
        policy = self.dtype_policy
        sizes = self.hidden_units + [2 * self.units]  # the last layer is the [loc, log_scale] head
        head = len(sizes) - 1

        def kernel(i):
            return keras.initializers.get(self.head_initializer) if i == head else "glorot_uniform"

        self.feature_layers = [
            keras.layers.Dense(size, kernel_initializer=kernel(i), name=f"features_{i}", dtype=policy)
            for i, size in enumerate(sizes)
        ]
        # c enters every hidden layer (or the head alone when there is none).
        self.condition_layers = [
            keras.layers.Dense(size, use_bias=False, kernel_initializer=kernel(i), name=f"condition_{i}", dtype=policy)
            for i, size in enumerate(sizes[: max(1, len(self.hidden_units))])
        ]

    def build(self, features_shape, condition_shape):
        shape = tuple(features_shape)
        for layer in self.feature_layers:
            layer.build(shape)
            shape = (None, layer.units)
        for layer in self.condition_layers:
            layer.build(tuple(condition_shape))

    def call(self, features, condition):
        sample_axes = len(condition.shape) - 2
        hidden = self.feature_layers[0](features)
        for _ in range(sample_axes):  # [batch, size] -> [batch, 1, ..., size]: one per example
            hidden = ops.expand_dims(hidden, axis=1)
        hidden = hidden + self.condition_layers[0](condition)
        for i, layer in enumerate(self.feature_layers[1:], start=1):
            hidden = layer(self._activation(hidden))
            if i < len(self.condition_layers):
                hidden = hidden + self.condition_layers[i](condition)
        hidden = ops.cast(hidden, self.variable_dtype)  # the head's output in float32 (its matmul in the policy's dtype)
        return {"loc": hidden[..., : self.units], "log_scale": hidden[..., self.units :]}

    @staticmethod
    def log_prob(value, params):
        """log N(value; loc, diag exp(log_scale)^2), broadcasting, summed over the last axis -> `[...]`."""
        standardized = (value - params["loc"]) * ops.exp(-params["log_scale"])
        return ops.sum(-0.5 * ops.square(standardized) - HALF_LOG_2PI - params["log_scale"], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            hidden_units=list(self.hidden_units),
            activation=self.activation,
            head_initializer=self.head_initializer,
        )
        return config
