import math

import keras
from keras import ops

from vizoo.layers.likelihood import Likelihood
from vizoo.registry import register_likelihood
from vizoo.utils import HALF_LOG_2PI, is_finite_real


@register_likelihood("gaussian")
@keras.saving.register_keras_serializable(package="vizoo")
class GaussianLikelihood(Likelihood):
    """Isotropic Gaussian p(x|z) = N(x; mu(z), s^2 I) for real-valued data.

    With a decoder of no hidden layers this is probabilistic PCA
    (x|z ~ N(Wz + b, s^2 I)), whose log p(x) has a closed form.

    Args:
        output_dim: int, data dimension D.
        scale: `None` to learn s (one scalar, stored as log s, initialised
            to `log(initial_scale)`), or a positive float to fix it.
        initial_scale: positive float, the starting s when it is learned.

    Call arguments:
        h: decoder features, `[..., features]`.

    Returns:
        dict with `loc`, `[..., output_dim]` (float32).
    """

    def __init__(self, output_dim, scale=None, initial_scale=1.0, **kwargs):
        super().__init__(output_dim, **kwargs)
        for name, value in (("scale", scale), ("initial_scale", initial_scale)):
            if value is None and name == "scale":  # (None: a learned scale)
                continue
            if not (is_finite_real(value) and value > 0):
                raise ValueError(f"{name} must be a positive float. Received: {name}={value!r}")
        self.scale = None if scale is None else float(scale)
        self.initial_scale = float(initial_scale)
        self.loc_layer = keras.layers.Dense(output_dim, name="loc", dtype=self.dtype_policy)

    def build(self, h_shape):
        self.loc_layer.build(h_shape)
        if self.scale is None:
            self.log_scale = self.add_weight(
                name="log_scale",
                shape=(),
                initializer=keras.initializers.Constant(math.log(self.initial_scale)),
                dtype="float32",
                autocast=False,  # read in float32 inside a float16 model's call too
            )

    def call(self, h):
        return {"loc": ops.cast(self.loc_layer(h), "float32")}

    def _log_scale(self):
        if self.scale is None:
            return ops.convert_to_tensor(self.log_scale)
        return ops.convert_to_tensor(math.log(self.scale), dtype="float32")

    def log_prob(self, x, params):
        """x `[batch, D]`, params from `call` on `[batch, k, features]` -> `[batch, k]`."""
        loc = params["loc"]
        log_scale = self._log_scale()
        x = ops.expand_dims(ops.cast(x, loc.dtype), axis=-2)
        standardized = (x - loc) * ops.exp(-log_scale)
        return ops.sum(-0.5 * ops.square(standardized) - HALF_LOG_2PI - log_scale, axis=-1)

    def mean(self, params):
        return params["loc"]

    def sample(self, params, seed=None):
        """x ~ p(x|z) = N(loc, s^2 I), `[..., D]` float32."""
        loc = params["loc"]
        return loc + ops.exp(self._log_scale()) * keras.random.normal(ops.shape(loc), dtype=loc.dtype, seed=seed)

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, initial_scale=self.initial_scale)
        return config
