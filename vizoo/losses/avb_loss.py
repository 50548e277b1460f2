import keras
from keras import ops

from vizoo.losses.bound_loss import BoundLoss
from vizoo.registry import Option, register_loss
from vizoo.utils import check_positive_int


def _check_switch(value, name):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")
    return value


@register_loss("avb")
@keras.saving.register_keras_serializable(package="vizoo")
class AVBLoss(BoundLoss):
    """Adversarial Variational Bayes (Mescheder, Nowozin & Geiger 2017): an ELBO *estimate*, not a bound.

    The posterior is a sampler with no density (`ImplicitPosterior`), so
    KL(q(z|x) || p(z)) = E_q[log q(z|x) - log p(z)] is estimated by the model's
    adversary T(x, z) (`vizoo.layers.Adversary`), trained by the logistic loss

        -E_{x, z ~ q(z|x)}[log sigmoid T(x, z)] - E_{x, z' ~ p(z)}[log(1 - sigmoid T(x, z'))],

    whose minimum over all functions is T*(x, z) = log q(z|x) - log p(z). The
    encoder, sampler and decoder maximize, with z reparameterized through the
    sampler,

        ELBO^(x) = 1/k sum_i [log p(x | z_i) - KL^(x, z_i)],   KL^ = T(x, z_i).

    With `adaptive_contrast=True` (section 4 of the paper), T sees z normalized by
    the sampler's per-example moments (gradient stopped), z~ = (z - mu(x)) / sigma(x),
    sigma = sqrt(var + 1e-4), contrasted against e ~ N(0, I); the KL estimate is then

        KL^(x, z) = T(x, z~) + log r(z | x) - log p(z),

    r = N(mu(x), sigma(x)^2) the moment-matched Gaussian: T has to learn only
    log q~(z~) - log N(z~; 0, I) = KL(q || r)'s integrand, far smaller than
    log q - log p when q is narrow. This needs a posterior with `has_moments`
    (`ImplicitPosterior(structure="adaptive_contrast")`).

    Both players' gradients come from one forward pass and are applied together
    (the model's step: the adversary's variables are the `adversary` gradient
    group, given the logistic loss as their surrogate; every other variable
    follows ELBO^). `adversary_steps` > 1 adds that many - 1 updates of the
    adversary alone, each on fresh samples, before the joint one (the paper's
    toy example uses 2). The reference settings: Adam with beta_1 = 0.5 for the
    adversary and twice the primal learning rate
    (`compile(group_optimizers={"adversary": Adam(2 * lr, beta_1=0.5)})`;
    train.py does this, `--adversary-lr`).

    The reported value is -ELBO^ in nats per example: an *estimate*, exact only
    at the adversary's optimum, and neither a lower nor an upper bound on
    log p(x) (`is_bound = False`; the command line, `metrics.json` and the
    benchmark say so). Each epoch also reports `adversary_loss` (the logistic
    loss, nats; 2 log 2 = 1.386 when T cannot tell q from p),
    `adversary_accuracy` (fraction of the 2k samples per example classified
    right) and `adversary_max_logit` (max |T| per example): a saturated
    adversary (accuracy near 1, loss near 0, large logits) is the first sign of
    failure, and `vizoo.callbacks.StopOnNonFinite` stops at a non-finite one,
    naming it. `vizoo.evaluate.log_likelihood` reports the adversary's KL
    estimate beside the Monte-Carlo log p(x) so the estimate can be checked.

    Args:
        k: int >= 1, samples of z (and of the contrast) per example.
        adaptive_contrast: bool, contrast against the moment-matched Gaussian (above).
        adversary_steps: int >= 1, adversary updates per training step (the n - 1 extra ones alone, each on a
            fresh forward pass); above 1 the model must be compiled with the adversary's own optimizer,
            `group_optimizers={"adversary": ...}`.

    Call arguments:
        y_true: ignored.
        y_pred: the model's terms: `log_px_z`, `adversary_q`, `adversary_p`
            (with adaptive contrast `adversary_q_normalized`,
            `adversary_p_normalized`, `log_rz` and `log_pz`), each `[batch, k]`.
        sample_weight: optional `[batch]`.

    Returns:
        -ELBO^ averaged over the batch; `bound(terms)` gives ELBO^ per example, `[batch]`.

    Example:
        >>> model = VAE(784, 8, posterior="implicit", adversary=Adversary())
        >>> model.compile(optimizer=Adam(1e-4), loss=AVBLoss(),
        ...               group_optimizers={"adversary": Adam(2e-4, beta_1=0.5)})
        >>> # python train.py --posterior implicit --loss avb

    Reference:
        Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes: Unifying Variational
        Autoencoders and Generative Adversarial Networks", ICML 2017,
        https://arxiv.org/abs/1701.04722 (eq. 3-4, Proposition 1, Algorithm 1; section 4).
    """

    is_bound = False
    needs_density = False
    needs_adversary = True
    diagnostic_meanings = {
        "adversary_loss": "the adversary's logistic loss (nats, 2 log 2 when it cannot tell q from p)",
        "adversary_accuracy": "the fraction of samples the adversary classifies right",
        "adversary_max_logit": "the largest |T(x, z)| per example, the adversary's logits",
    }
    cli_options = {
        "adaptive_contrast": Option(
            "--adaptive-contrast",
            bool,
            "AVB: contrast against the sampler's moment-matched Gaussian (needs --sampler-structure adaptive_contrast)",
        ),
        "adversary_steps": Option(
            "--adversary-steps", int, "AVB: adversary updates per training step (default 1)", check=check_positive_int
        ),
    }

    def __init__(self, k=1, adaptive_contrast=False, adversary_steps=1, name="avb_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)
        self.adaptive_contrast = _check_switch(adaptive_contrast, "adaptive_contrast")
        self.adversary_steps = check_positive_int(adversary_steps, "adversary_steps")
        # Declared per instance: the terms depend on the contrast.
        self.required_terms = (
            ("log_px_z", "log_pz", "adversary_q_normalized", "adversary_p_normalized", "log_rz")
            if self.adaptive_contrast
            else ("log_px_z", "adversary_q", "adversary_p")
        )

    @property
    def value_name(self):
        return "ELBO estimate"

    @property
    def group_steps(self):
        return {"adversary": self.adversary_steps} if self.adversary_steps > 1 else {}

    def _logits(self, terms):
        if self.adaptive_contrast:
            return terms["adversary_q_normalized"], terms["adversary_p_normalized"]
        return terms["adversary_q"], terms["adversary_p"]

    def kl_estimate(self, terms):
        """The adversary's estimate of log q(z_i|x) - log p(z_i), `[batch, k]`."""
        if self.adaptive_contrast:
            return terms["adversary_q_normalized"] + terms["log_rz"] - terms["log_pz"]
        return terms["adversary_q"]

    def bound(self, terms):
        return ops.mean(terms["log_px_z"] - self.kl_estimate(terms), axis=1)

    def adversary_loss(self, terms):
        """The logistic loss per example, `[batch]`: softplus(-T(x, z)) + softplus(T(x, z')), averaged over k."""
        t_q, t_p = self._logits(terms)
        return ops.mean(ops.softplus(-t_q) + ops.softplus(t_p), axis=1)

    def objectives(self, terms):
        # The adversary maximizes the negated logistic loss; every other group follows ELBO^ (the bound).
        return {"adversary": -self.adversary_loss(terms)}

    def diagnostics(self, terms):
        t_q, t_p = self._logits(terms)
        right = ops.cast(t_q > 0, t_q.dtype) + ops.cast(t_p < 0, t_p.dtype)
        return {
            "adversary_loss": self.adversary_loss(terms),
            "adversary_accuracy": ops.mean(right, axis=1) / 2.0,
            "adversary_max_logit": ops.maximum(ops.max(ops.abs(t_q), axis=1), ops.max(ops.abs(t_p), axis=1)),
        }

    def get_config(self):
        config = super().get_config()
        config.update(adaptive_contrast=self.adaptive_contrast, adversary_steps=self.adversary_steps)
        return config
