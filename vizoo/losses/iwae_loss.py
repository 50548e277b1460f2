import keras

from vizoo.losses.bound_loss import BoundLoss, logmeanexp


@keras.saving.register_keras_serializable(package="vizoo")
class IWAELoss(BoundLoss):
    """Negated importance-weighted bound (Burda, Grosse & Salakhutdinov 2016).

    With k samples z_1..z_k ~ q(z|x) and log-weights
    log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),

        IWAE_k = log (1/k sum_i w_i) = logsumexp_i(log w_i) - log k.

    The reported value is this bound itself (negated), not a surrogate:
    ELBO = IWAE_1 <= IWAE_k <= IWAE_{k+1} <= log p(x).

    Args:
        k: int >= 1, importance samples per example (5 and 50 in the paper).

    Example:
        >>> model.compile(optimizer="adam", loss=IWAELoss(k=5))

    Reference:
        Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    """

    def __init__(self, k=5, name="iwae_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)

    def bound(self, terms):
        return logmeanexp(self.log_weights(terms), axis=1)
