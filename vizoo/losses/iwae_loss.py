import keras
from keras import ops

from vizoo.losses.bound_loss import GRADIENT_GROUPS, BoundLoss, logmeanexp
from vizoo.losses.elbo_loss import ELBOLoss
from vizoo.losses.kl_schedule import check_kl_options
from vizoo.registry import Option, register_loss
from vizoo.utils import check_choice

GRADIENT_ESTIMATORS = (None, "dreg", "stl")


@register_loss("iwae")
@keras.saving.register_keras_serializable(package="vizoo")
class IWAELoss(BoundLoss):
    """Negated importance-weighted bound (Burda, Grosse & Salakhutdinov 2016).

    With k samples z_1..z_k ~ q(z|x) and log-weights
    log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),

        IWAE_k = log (1/k sum_i w_i) = logsumexp_i(log w_i) - log k.

    The reported value is this bound itself (negated), not a surrogate:
    ELBO = IWAE_1 <= IWAE_k <= IWAE_{k+1} <= log p(x).

    `gradient_estimator` changes only the encoder's gradient (the `inference`
    group; the decoder and prior always get the IWAE gradient). With
    normalized weights w~_i = w_i / sum_j w_j and log w'_i the log-weight
    with q's parameters stopped (z_i still a function of them, the model's
    `log_qz_detached` term):
    - `"dreg"` (Tucker et al. 2019): maximize sum_i stop(w~_i^2) log w'_i.
      Unbiased for the IWAE gradient; zero when q is the exact posterior.
    - `"stl"` (Roeder et al. 2017, "sticking the landing"): maximize
      sum_i stop(w~_i) log w'_i, the path derivative alone. Unbiased at k=1
      (the ELBO); for k > 1 it is biased (Tucker et al. 2019): prefer DReG.
    Both need log q(z|x) at a sample with q's parameters stopped: Gaussian
    posteriors (diagonal, full covariance) have it. Flows know log q only at
    their own samples and are refused with a named error at compile time,
    as are priors that share the encoder's variables (VampPrior), whose
    gradient these estimators do not cover.

    KL warm-up (`kl_warmup_epochs=N`) trains on the tempered log-weights
    log w_i^beta = log p(x|z_i) + beta (log p(z_i) - log q(z_i|x)) inside the
    logsumexp, beta rising linearly from 0 to 1 over N epochs (the model's
    `kl_weight`, set by `vizoo.callbacks.KLWarmup`, which `fit` adds); the
    reported loss stays the exact IWAE bound. It does not combine with a
    `gradient_estimator`.

    Args:
        k: int >= 1, importance samples per example (5 and 50 in the paper).
        gradient_estimator: None (the plain reparameterized IWAE gradient),
            `"dreg"` or `"stl"`.
        kl_warmup_epochs: int >= 0, epochs of KL warm-up; 0 for none.

    Example:
        >>> model.compile(optimizer="adam", loss=IWAELoss(k=50, gradient_estimator="dreg"))
        >>> model.compile(optimizer="adam", loss=IWAELoss(k=5, kl_warmup_epochs=10))

    References:
        Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
        Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient
        Estimators for Monte Carlo Objectives", ICLR 2019.
        Roeder, Wu & Duvenaud, "Sticking the Landing", NeurIPS 2017.
    """

    # Constructor arguments on the command line (vizoo/cli.py reads these; see vizoo.registry.Option).
    cli_options = {
        "gradient_estimator": Option(
            "--gradient-estimator",
            str,
            "iwae: the encoder's gradient, dreg (Tucker et al. 2019) or stl (Roeder et al. 2017), default the plain "
            "reparameterized gradient; iwhvi: the reverse model's, auto (the default: dreg for a learned tau), dreg "
            "or plain",
        ),
        "kl_warmup_epochs": ELBOLoss.cli_options["kl_warmup_epochs"],
    }

    def __init__(self, k=5, gradient_estimator=None, kl_warmup_epochs=0, name="iwae_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)
        self.gradient_estimator = check_choice(gradient_estimator, "gradient_estimator", GRADIENT_ESTIMATORS)
        self.kl_warmup_epochs = check_kl_options(kl_warmup_epochs)[0]
        if self.kl_warmup_epochs and gradient_estimator is not None:
            raise ValueError(
                "kl_warmup_epochs does not combine with a gradient_estimator (it changes the objective the "
                f"estimator is unbiased for). Received: kl_warmup_epochs={self.kl_warmup_epochs}, "
                f"gradient_estimator={gradient_estimator!r}"
            )
        if gradient_estimator is not None:
            self.required_terms = BoundLoss.required_terms + ("log_qz_detached",)
        if self.kl_warmup_epochs:
            self.required_terms = BoundLoss.required_terms + ("kl_weight",)

    def bound(self, terms):
        return logmeanexp(self.log_weights(terms), axis=1)

    def objectives(self, terms):
        if self.kl_warmup_epochs:
            beta = terms["kl_weight"]  # [batch, 1]
            tempered = terms["log_px_z"] + beta * (terms["log_pz"] - terms["log_qz"])
            surrogate = logmeanexp(tempered, axis=1)
            return {group: surrogate for group in GRADIENT_GROUPS}
        if self.gradient_estimator is None:
            return None
        log_w = self.log_weights(terms)
        normalized = ops.stop_gradient(ops.exp(log_w - ops.logsumexp(log_w, axis=1, keepdims=True)))  # w~_i, [batch, k]
        weights = ops.square(normalized) if self.gradient_estimator == "dreg" else normalized
        log_w_detached = terms["log_px_z"] + terms["log_pz"] - terms["log_qz_detached"]
        return {"inference": ops.sum(weights * log_w_detached, axis=1)}

    def get_config(self):
        config = super().get_config()
        config["gradient_estimator"] = self.gradient_estimator
        config["kl_warmup_epochs"] = self.kl_warmup_epochs
        return config
