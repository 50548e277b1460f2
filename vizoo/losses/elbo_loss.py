import keras
from keras import ops

from vizoo.losses.bound_loss import BoundLoss


@keras.saving.register_keras_serializable(package="vizoo")
class ELBOLoss(BoundLoss):
    """Negated evidence lower bound (Kingma & Welling 2014).

    With k samples z_1..z_k ~ q(z|x) the bound is the average log-weight

        ELBO = 1/k sum_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)].

    With `analytic_kl=True` the model's closed-form `kl` term (KL(q(z|x) || p(z)),
    shape `[batch, 1]`, present when the posterior/prior pair has one) replaces
    the Monte-Carlo estimate of the KL part:

        ELBO = 1/k sum_i log p(x|z_i) - KL(q(z|x) || p(z)).

    Args:
        k: int >= 1, samples per example.
        analytic_kl: bool, use the closed-form KL term.

    Example:
        >>> model.compile(optimizer="adam", loss=ELBOLoss(k=1, analytic_kl=True))

    Reference:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    """

    def __init__(self, k=1, analytic_kl=False, name="elbo_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)
        if not isinstance(analytic_kl, bool):
            raise ValueError(f"analytic_kl must be a bool. Received: analytic_kl={analytic_kl!r}")
        self.analytic_kl = analytic_kl
        if analytic_kl:
            self.required_terms = ("log_px_z", "kl")

    def bound(self, terms):
        if self.analytic_kl:
            return ops.mean(terms["log_px_z"], axis=1) - terms["kl"][:, 0]
        return ops.mean(self.log_weights(terms), axis=1)

    def get_config(self):
        config = super().get_config()
        config["analytic_kl"] = self.analytic_kl
        return config
