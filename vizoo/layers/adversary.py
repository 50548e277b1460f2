import keras
from keras import ops

from vizoo.utils import check_activation, check_hidden_units, check_positive_int


@keras.saving.register_keras_serializable(package="vizoo")
class Adversary(keras.layers.Layer):
    """The adversary (discriminator) T(x, z) of Adversarial Variational Bayes.

        T(x, z) = <f(x), g(z)> + t_x(x) + t_z(z) + 0.5 ||z||^2,

    f and t_x read one MLP of x, g and t_z one MLP of z (each `hidden_units`,
    then a linear map to `feature_dim` features and to a scalar). The last term
    is -log N(z; 0, I) up to its constant, added explicitly: trained with the
    logistic loss that separates (x, z ~ q(z|x)) from (x, z ~ N(0, I)), the
    optimal T is log q(z|x) - log N(z; 0, I), so the networks only have to learn
    log q(z|x) (+ const). A model contrasting against another prior p(z) adds
    its correction -log p(z) - 0.5 ||z||^2 - d/2 log(2 pi) to T itself
    (`LatentVariableModel`), so that T* = log q(z|x) - log p(z) there too.

    It is a layer of the model (a Keras loss owns no variables): its variables are
    the model's `adversary` gradient group, trained by `vizoo.losses.AVBLoss` with
    an optimizer of its own (`compile(group_optimizers={"adversary": ...})`). It
    computes in full precision (its logits enter the logistic loss and the ELBO
    estimate).

    Args:
        hidden_units: list of ints, the hidden layers of each of the two MLPs.
        feature_dim: int, size of f(x) and g(z) (the inner product's).
        activation: activation of the hidden layers.

    Call arguments:
        x: `[batch, input_dim]`.
        z: `[batch, k, latent_dim]`.

    Returns:
        T(x, z), `[batch, k]` (float32 logits).

    Example:
        >>> model = VAE(784, 8, posterior="implicit", adversary=Adversary(hidden_units=[256, 256]))
        >>> model.compile(optimizer=Adam(1e-4), loss=AVBLoss(),
        ...               group_optimizers={"adversary": Adam(2e-4, beta_1=0.5)})

    Reference:
        Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes: Unifying Variational
        Autoencoders and Generative Adversarial Networks", ICML 2017,
        https://arxiv.org/abs/1701.04722 (section 3, Proposition 1; appendix: the
        adversary's inner-product structure).
    """

    def __init__(self, hidden_units=(256, 256), feature_dim=64, activation="leaky_relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = check_hidden_units(hidden_units)
        self.feature_dim = check_positive_int(feature_dim, "feature_dim")
        self.activation = activation
        check_activation(activation)  # fails early on an unknown name
        dtype = self.variable_dtype  # full precision: logits enter a logistic loss and the ELBO estimate

        def stack(prefix):
            return [
                keras.layers.Dense(units, activation=activation, name=f"{prefix}_dense_{i}", dtype=dtype)
                for i, units in enumerate(self.hidden_units)
            ]

        self.x_layers, self.z_layers = stack("x"), stack("z")
        self.x_features = keras.layers.Dense(self.feature_dim, name="x_features", dtype=dtype)
        self.z_features = keras.layers.Dense(self.feature_dim, name="z_features", dtype=dtype)
        self.x_term = keras.layers.Dense(1, name="x_term", dtype=dtype)
        self.z_term = keras.layers.Dense(1, name="z_term", dtype=dtype)

    @property
    def input_dtype(self):
        # Keras casts a layer's inputs to its compute dtype before `call`: under a mixed policy x and z
        # would reach the full-precision networks rounded to 16 bits (T off by up to 0.06 nats).
        return self.variable_dtype

    def build(self, x_shape, z_shape):
        for layers, heads, width in (
            (self.x_layers, (self.x_features, self.x_term), int(x_shape[-1])),
            (self.z_layers, (self.z_features, self.z_term), int(z_shape[-1])),
        ):
            shape = (None, width)
            for layer in layers:
                layer.build(shape)
                shape = (None, layer.units)
            for head in heads:
                head.build(shape)

    @staticmethod
    def _mlp(layers, h):
        for layer in layers:
            h = layer(h)
        return h

    def call(self, x, z):
        dtype = self.variable_dtype
        x, z = ops.cast(x, dtype), ops.cast(z, dtype)
        batch, k, latent_dim = ops.shape(z)[0], ops.shape(z)[1], z.shape[-1]
        hx = self._mlp(self.x_layers, x)  # [batch, H]
        hz = self._mlp(self.z_layers, ops.reshape(z, (-1, latent_dim)))  # [batch * k, H]: rows, one fused matmul
        f = self.x_features(hx)[:, None, :]  # [batch, 1, F]
        g = ops.reshape(self.z_features(hz), (batch, k, self.feature_dim))  # [batch, k, F]
        t_z = ops.reshape(self.z_term(hz), (batch, k))
        return ops.sum(f * g, axis=-1) + self.x_term(hx) + t_z + 0.5 * ops.sum(ops.square(z), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=list(self.hidden_units), feature_dim=self.feature_dim, activation=self.activation)
        return config
