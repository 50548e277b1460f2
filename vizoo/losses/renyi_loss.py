import keras
from keras import ops

from vizoo.losses.bound_loss import BoundLoss, logmeanexp
from vizoo.registry import Option, register_loss
from vizoo.utils import check_finite_float

# Below this |1 - alpha| * |log w_i - mean log w| the bound is computed from expm1 (a series without
# cancellation) instead of logsumexp, whose rounding error, divided by 1 - alpha, would grow near alpha = 1.
_SERIES_RANGE = 0.5


# |alpha| beyond this overflows (1 - alpha) (log w_i - max log w) in float32; the bound is then min_i log w_i
# (alpha -> +inf) or max_i log w_i (alpha -> -inf) to float32 precision long before.
_MAX_ALPHA = 1e30


def _check_alpha(value, name):
    value = check_finite_float(value, name)
    if abs(value) > _MAX_ALPHA:
        raise ValueError(
            f"{name} must lie within +-{_MAX_ALPHA:g} (beyond, 1 - alpha times a log-weight overflows float32; the "
            f"bound reached its limit, the min or max log-weight, long before). Received: {name}={value!r}"
        )
    return value


@register_loss("renyi")
@keras.saving.register_keras_serializable(package="vizoo")
class RenyiLoss(BoundLoss):
    """Negated variational Rényi bound VR-alpha (Li & Turner 2016).

    With k samples z_1..z_k ~ q(z|x) and log-weights
    log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), the k-sample estimate of the
    Rényi bound of order alpha is

        L_alpha = 1/(1 - alpha) log (1/k sum_i w_i^(1 - alpha))
                = logmeanexp_i((1 - alpha) log w_i) / (1 - alpha),

    a power mean of the weights (exponent 1 - alpha), so on the same samples it is
    non-increasing in alpha. Special cases:
    - alpha = 1 (the limit): the ELBO, 1/k sum_i log w_i (computed exactly so, as `ELBOLoss`);
    - alpha = 0: the IWAE bound, logmeanexp_i log w_i (computed exactly as `IWAELoss`);
    - alpha -> -inf: max_i log w_i (VR-max).

    For alpha >= 0 the estimate is a lower bound on log p(x) in expectation (at alpha
    in [0, 1] it lies between the ELBO and the IWAE bound with the same k; above 1 below
    the ELBO). For alpha < 0 it is not: as k grows it tends to L_alpha >= log p(x). Then
    the loss declares `is_bound = False`, and its reported value is an estimate of a
    Rényi divergence objective, not a bound (the command line and the benchmark say so).
    The value reported is this quantity exactly; the gradient is its reparameterized
    gradient (Li & Turner's VR estimator with all k samples).

    Args:
        k: int >= 1, samples per example.
        alpha: float, the order alpha of the Rényi divergence (any finite number; 1 gives
            the ELBO, 0 the IWAE bound, < 0 an estimate that is not a bound).

    Call arguments:
        y_true: ignored.
        y_pred: the model's terms `log_px_z`, `log_pz`, `log_qz`, each `[batch, k]`.
        sample_weight: optional `[batch]`.

    Returns:
        The negated L_alpha averaged over the batch (a scalar); `bound(terms)` gives
        L_alpha per example, `[batch]`.

    Example:
        >>> model.compile(optimizer="adam", loss=RenyiLoss(k=5, alpha=0.5))
        >>> # python train.py --loss renyi --k 5 --alpha 0.5

    Reference:
        Li & Turner, "Rényi Divergence Variational Inference", NeurIPS 2016,
        https://arxiv.org/abs/1602.02311 (eq. 5 and 12; Theorem 2).
    """

    # Constructor arguments on the command line (vizoo/cli.py reads these; see vizoo.registry.Option).
    cli_options = {
        "alpha": Option(
            "--alpha",
            float,
            "order alpha of the Renyi bound: 1 the ELBO, 0 the IWAE bound, below 0 an estimate, not a bound "
            "(default 0.5)",
            check=_check_alpha,
        ),
    }

    def __init__(self, k=5, alpha=0.5, name="renyi_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)
        self.alpha = _check_alpha(alpha, "alpha")
        # Declared per instance: the capability depends on alpha.
        self.is_bound = self.alpha >= 0.0

    def bound(self, terms):
        log_w = self.log_weights(terms)  # [batch, k]
        if self.alpha == 1.0:
            return ops.mean(log_w, axis=1)  # the limit: the ELBO
        if self.alpha == 0.0:
            return logmeanexp(log_w, axis=1)  # the IWAE bound
        scale = 1.0 - self.alpha
        mean = ops.mean(log_w, axis=1, keepdims=True)  # [batch, 1]
        # Centred on the mean log-weight (exact arithmetic gives the same bound), unless that is -inf: a zero
        # weight, which the uncentred logmeanexp takes as it is (and the series below never sees).
        mean = ops.where(ops.isfinite(mean), mean, ops.zeros_like(mean))
        scaled = scale * (log_w - mean)  # [batch, k]
        general = logmeanexp(scaled, axis=1) / scale
        # Near alpha = 1: log(1 + mean(expm1(s))) has no cancellation (the first-order terms cancel exactly).
        clipped = ops.clip(scaled, -_SERIES_RANGE, _SERIES_RANGE)
        series = ops.log1p(ops.mean(ops.expm1(clipped), axis=1)) / scale
        small = ops.max(ops.abs(scaled), axis=1) <= _SERIES_RANGE
        return mean[:, 0] + ops.where(small, series, general)

    def get_config(self):
        config = super().get_config()
        config["alpha"] = self.alpha
        return config
