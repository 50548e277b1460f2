"""Base class of vizoo's bounds: a Keras loss that reduces a model's log-density terms."""

import keras
from keras import ops

from vizoo.utils import check_positive_int


class BoundLoss(keras.losses.Loss):
    """A negated lower bound on log p(x), in nats per example.

    Models return a dict of per-sample log-density terms shaped `[batch, k]`
    (`log_px_z`, `log_pz`, `log_qz`, ...). A `BoundLoss` only reduces them:
    subclasses implement `bound(terms)`, returning the bound for each example
    (shape `[batch]`); the loss value is its negation, averaged over the batch
    (weighted by `sample_weight` when given).

    The loss's `k` is the number of samples per example the model draws when it
    is compiled with this loss: `model.compile(loss=IWAELoss(k=5))` alone sets
    it for `fit` and `evaluate`.

    Args:
        k: int, number of samples of z per example (>= 1).
        required_terms: tuple of the term names `bound` reads.
        name, reduction, dtype: as for `keras.losses.Loss`.

    Call arguments:
        y_true: ignored (may be `None`): the bounds are unsupervised, so
            `fit(x)` and `fit(x, x)` both work.
        y_pred: the dict of terms returned by the model.
        sample_weight: optional per-example weights, shape `[batch]`.
    """

    required_terms = ("log_px_z", "log_pz", "log_qz")

    def __init__(self, k=1, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._k = check_positive_int(k, "k")

    @property
    def k(self):
        """Number of samples of z per example (read-only: compile again with a new loss)."""
        return self._k

    def __call__(self, y_true=None, y_pred=None, sample_weight=None):
        if not isinstance(y_pred, dict):
            raise ValueError(
                f"{type(self).__name__} reduces the dict of log-density terms "
                "returned by a vizoo model (keys log_px_z, log_pz, log_qz, ...). "
                f"Received: y_pred of type {type(y_pred).__name__}"
            )
        # The bounds are unsupervised: y_true is ignored and may be None.
        return super().__call__({}, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        missing = [name for name in self.required_terms if name not in y_pred]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the terms {list(self.required_terms)} "
                f"from the model; missing {missing}. Received: terms with keys "
                f"{sorted(y_pred)}"
            )
        return -self.bound(y_pred)

    def bound(self, terms):
        """The bound for each example, shape `[batch]`."""
        raise NotImplementedError

    @staticmethod
    def log_weights(terms):
        """log w = log p(x|z) + log p(z) - log q(z|x), shape `[batch, k]`."""
        return terms["log_px_z"] + terms["log_pz"] - terms["log_qz"]

    def get_config(self):
        config = super().get_config()
        config["k"] = self.k
        return config


def logmeanexp(values, axis):
    """log(mean(exp(values))) along `axis`, computed stably."""
    count = ops.cast(ops.shape(values)[axis], values.dtype)
    return ops.logsumexp(values, axis=axis) - ops.log(count)
