import keras
from keras import ops

from vizoo.losses.bound_loss import GRADIENT_GROUPS, BoundLoss
from vizoo.losses.kl_schedule import check_kl_options, free_bits_penalty
from vizoo.registry import Option, register_loss
from vizoo.utils import check_non_negative_int, check_positive_int


@register_loss("elbo")
@keras.saving.register_keras_serializable(package="vizoo")
class ELBOLoss(BoundLoss):
    """Negated evidence lower bound (Kingma & Welling 2014).

    With k samples z_1..z_k ~ q(z|x) the bound is the average log-weight

        ELBO = 1/k sum_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)].

    With `analytic_kl=True` the model's closed-form `kl` term (KL(q(z|x) || p(z)),
    shape `[batch, 1]`, present when the posterior/prior pair has one) replaces
    the Monte-Carlo estimate of the KL part:

        ELBO = 1/k sum_i log p(x|z_i) - KL(q(z|x) || p(z)).

    Two options change the training objective only; the reported loss is
    always the exact bound above (they act through `objectives`, whose
    surrogate every gradient group follows):

    - KL warm-up (`kl_warmup_epochs=N`): the objective
      1/k sum_i [log p(x|z_i) + beta (log p(z_i) - log q(z_i|x))], with beta
      the model's `kl_weight`, which `fit` raises linearly from 0 to 1 over N
      epochs (`vizoo.callbacks.KLWarmup`).
    - Free bits (`free_bits=lambda`, Kingma et al. 2016): the latent
      dimensions are split into `free_bits_groups` contiguous groups (default:
      one per dimension) and the objective is
      E_q log p(x|z) - beta sum_g max(lambda, mean over the minibatch of KL_g),
      KL_g the closed-form KL of group g. A group whose KL is below lambda
      nats is not pushed further down. Needs a factorized posterior with a
      closed-form per-dimension KL: the diagonal Gaussian with the N(0, I)
      prior (others are refused at `compile` with the reason).

    Args:
        k: int >= 1, samples per example.
        analytic_kl: bool, use the closed-form KL term.
        kl_warmup_epochs: int >= 0, epochs of linear KL warm-up; 0 for none.
        free_bits: float >= 0, lambda in nats per group; 0 for none.
        free_bits_groups: optional int, number of contiguous groups of latent
            dimensions for free bits; default one group per dimension.

    Example:
        >>> model.compile(optimizer="adam", loss=ELBOLoss(k=1, analytic_kl=True))
        >>> # Warm-up over 10 epochs and 0.25 nats of free bits per group of 5 dimensions:
        >>> model.compile(optimizer="adam", loss=ELBOLoss(kl_warmup_epochs=10, free_bits=0.25, free_bits_groups=10))
        >>> model.fit(train_ds, epochs=100)  # reported loss: the exact -ELBO

    References:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
        Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016 (KL warm-up).
        Kingma et al., "Improved Variational Inference with Inverse
        Autoregressive Flow", NeurIPS 2016, appendix C (free bits).
    """

    # Constructor arguments on the command line (vizoo/cli.py reads these; see vizoo.registry.Option).
    cli_options = {
        "analytic_kl": Option("--analytic-kl", bool, "ELBO with the closed-form KL term"),
        "kl_warmup_epochs": Option(
            "--kl-warmup-epochs",
            int,
            "linear KL warm-up: beta from 0 to 1 over this many epochs, in the training objective only",
            check=check_non_negative_int,
        ),
        "free_bits": Option("--free-bits", float, "free bits lambda, nats per group of latent dimensions"),
        "free_bits_groups": Option(
            "--free-bits-groups",
            int,
            "contiguous groups of latent dimensions for free bits (default one per dimension)",
            check=check_positive_int,
        ),
    }

    def __init__(
        self,
        k=1,
        analytic_kl=False,
        kl_warmup_epochs=0,
        free_bits=0.0,
        free_bits_groups=None,
        name="elbo_loss",
        **kwargs,
    ):
        super().__init__(k=k, name=name, **kwargs)
        if not isinstance(analytic_kl, bool):
            raise ValueError(f"analytic_kl must be a bool. Received: analytic_kl={analytic_kl!r}")
        self.analytic_kl = analytic_kl
        self.kl_warmup_epochs, self.free_bits, self.free_bits_groups = check_kl_options(
            kl_warmup_epochs, free_bits, free_bits_groups
        )
        terms = ("log_px_z", "kl") if analytic_kl else BoundLoss.required_terms
        if self.kl_warmup_epochs:
            terms += ("kl_weight",)
        if self.free_bits:
            terms += ("kl_per_dim",)
        self.required_terms = terms

    def posterior_support(self, posterior):
        latent_dim = getattr(posterior, "latent_dim", None)
        if self.free_bits and self.free_bits_groups is not None and isinstance(latent_dim, int):
            if self.free_bits_groups > latent_dim:  # (refused at compile, not at the first step)
                return (
                    f"free_bits_groups must be at most the latent dimension ({latent_dim}). "
                    f"Received: free_bits_groups={self.free_bits_groups}"
                )
        return None

    def bound(self, terms):
        if self.analytic_kl:
            return ops.mean(terms["log_px_z"], axis=1) - terms["kl"][:, 0]
        return ops.mean(self.log_weights(terms), axis=1)

    def objectives(self, terms):
        if not (self.kl_warmup_epochs or self.free_bits):
            return None
        reconstruction = ops.mean(terms["log_px_z"], axis=1)
        beta = terms["kl_weight"][:, 0] if self.kl_warmup_epochs else 1.0
        if self.free_bits:
            surrogate = reconstruction - beta * free_bits_penalty(terms["kl_per_dim"], self.free_bits, self.free_bits_groups)
        elif self.analytic_kl:
            surrogate = reconstruction - beta * terms["kl"][:, 0]
        else:
            surrogate = reconstruction + beta * ops.mean(terms["log_pz"] - terms["log_qz"], axis=1)
        return {group: surrogate for group in GRADIENT_GROUPS}  # every variable follows the surrogate

    def get_config(self):
        config = super().get_config()
        config.update(
            analytic_kl=self.analytic_kl,
            kl_warmup_epochs=self.kl_warmup_epochs,
            free_bits=self.free_bits,
            free_bits_groups=self.free_bits_groups,
        )
        return config
