import keras
from keras import ops

from vizoo.losses.bound_loss import BoundLoss, logmeanexp
from vizoo.registry import register_loss


def leave_one_out_bounds(log_w):
    """VIMCO's per-sample baselines L_{-j}, `[batch, k]`, from log-weights `[batch, k]` (k >= 2).

    L_{-j} is the k-sample bound with log w_j replaced by the mean of the other
    log-weights (the geometric mean of the other weights, Mnih & Rezende 2016, eq. 10):

        L_{-j} = log 1/k (sum_{i != j} w_i + exp(1/(k-1) sum_{i != j} log w_i)).

    Built as a `[batch, k, k]` array whose row j is log w with entry j swapped,
    so each row is an ordinary stable logmeanexp (memory k^2 per example).
    """
    k = log_w.shape[1]
    diagonal = ops.eye(k, dtype="bool")[None]
    rows = ops.broadcast_to(log_w[:, None, :], (ops.shape(log_w)[0], k, k))  # [batch, j, i]
    # Summed without entry j rather than as sum - log w_j, which is NaN when a log-weight is -inf.
    others_mean = ops.sum(ops.where(diagonal, ops.zeros_like(rows), rows), axis=2) / (k - 1)  # [batch, k]
    swapped = ops.where(diagonal, others_mean[:, :, None], rows)
    return logmeanexp(swapped, axis=2)


@register_loss("vimco")
@keras.saving.register_keras_serializable(package="vizoo")
class VIMCOLoss(BoundLoss):
    """Negated k-sample bound with VIMCO's score-function gradient (Mnih & Rezende 2016).

    The value is the importance-weighted bound of `IWAELoss`, exactly:

        L = log 1/k sum_j w_j,   log w_j = log p(x, h_j) - log q(h_j|x),   h_j ~ q(h|x).

    Its gradient with respect to q's parameters phi, for samples that carry
    no gradient (discrete h), is E[sum_j L grad log q(h_j|x) + grad L]. VIMCO
    replaces L in the score term of sample j by the learning signal L - L_{-j},
    where the baseline L_{-j} is the bound with log w_j replaced by the mean of
    the other log-weights (the geometric-mean variant, eq. 10 of the paper; the
    arithmetic-mean variant is not used). L_{-j} does not depend on h_j, so the
    estimator stays unbiased:

        grad_phi ~= sum_j (L - L_{-j}) grad log q(h_j|x) - sum_j w~_j grad log q(h_j|x),

    with w~_j = w_j / sum_i w_i. As a surrogate for the `inference` group:
    sum_j stop(L - L_{-j}) log q(h_j|x) + L. The decoder and prior (every other
    group) get the plain gradient of L. The reported loss is -L.

    The model's samples must carry no gradient (a discrete posterior with
    `reparameterized = False`, e.g. `SigmoidBeliefNetwork`); compiling a model
    with a reparameterized posterior is refused with a named error.

    Args:
        k: int >= 2, samples per example (5 and 50 in the paper); the
            leave-one-out baseline needs at least two.

    Example:
        >>> model = SigmoidBeliefNetwork(input_dim=784, latent_dims=[200, 200, 200])
        >>> model.compile(optimizer="adam", loss=VIMCOLoss(k=5))

    Reference:
        Mnih & Rezende, "Variational Inference for Monte Carlo Objectives", ICML 2016.
    """

    requires_reparameterization = False
    # Differentiates log q(h|x) at the samples: the samples must carry no gradient.
    score_function = True

    def __init__(self, k=5, name="vimco_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)
        if self.k < 2:
            raise ValueError(f"VIMCOLoss needs k >= 2 (its baselines leave one sample out). Received: k={k}")

    def bound(self, terms):
        return logmeanexp(self.log_weights(terms), axis=1)

    def objectives(self, terms):
        log_w = self.log_weights(terms)  # [batch, k]
        bound = logmeanexp(log_w, axis=1)  # [batch]
        signal = ops.stop_gradient(bound[:, None] - leave_one_out_bounds(log_w))  # [batch, k]
        return {"inference": ops.sum(signal * terms["log_qz"], axis=1) + bound}
