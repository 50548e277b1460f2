import keras
from keras import ops

from vizoo.layers.likelihood import Likelihood


@keras.saving.register_keras_serializable(package="vizoo")
class BernoulliLikelihood(Likelihood):
    """Factorized Bernoulli p(x|z) on logits, for binary (or [0, 1]) data.

    A dense head maps decoder features to one logit per data dimension;
    log p(x|z) = sum_d [x_d * l_d - softplus(l_d)] (the Bernoulli log-pmf,
    written on the logits so it is exact and stable for any logit).

    Args:
        output_dim: int, data dimension D.

    Call arguments:
        h: decoder features, `[..., features]`.

    Returns:
        dict with `logits`, `[..., output_dim]` (float32).
    """

    requires_unit_interval = True

    def __init__(self, output_dim, **kwargs):
        super().__init__(output_dim, **kwargs)
        self.logits_layer = keras.layers.Dense(output_dim, name="logits", dtype=self.dtype_policy)

    def build(self, h_shape):
        self.logits_layer.build(h_shape)

    def call(self, h):
        return {"logits": ops.cast(self.logits_layer(h), "float32")}

    def log_prob(self, x, params):
        """x `[batch, D]`, params from `call` on `[batch, k, features]` -> `[batch, k]`."""
        logits = params["logits"]
        x = ops.expand_dims(ops.cast(x, logits.dtype), axis=-2)
        return ops.sum(x * logits - ops.softplus(logits), axis=-1)

    def mean(self, params):
        return ops.sigmoid(params["logits"])

    def set_bias_from_mean(self, data_mean, eps=1e-3):
        """Initialise the logit bias to logit(mean of the training data), clipped to [eps, 1-eps].

        Starting from the marginal means speeds up early training (Burda et al.).
        """
        import numpy as np

        mean = np.clip(np.asarray(data_mean, dtype="float64").reshape(-1), eps, 1.0 - eps)
        if mean.shape != (self.output_dim,):
            raise ValueError(
                f"data_mean must have {self.output_dim} values. Received: data_mean.shape={mean.shape}"
            )
        self.logits_layer.bias.assign(np.log(mean) - np.log1p(-mean))
