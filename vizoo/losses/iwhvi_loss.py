import keras
from keras import ops

from vizoo.losses.bound_loss import BoundLoss, logmeanexp
from vizoo.losses.iwae_loss import IWAELoss
from vizoo.registry import Option, register_loss
from vizoo.utils import check_choice, check_non_negative_int

# "plain": the reparameterized gradient of the bound for every variable (None is the same, the spelling of
# IWAELoss and of configs saved before "auto" became the default); "dreg": tau's doubly reparameterized
# gradient; "auto": "dreg" when the posterior has a learned tau, else (SIVI) nothing to estimate.
GRADIENT_ESTIMATORS = ("auto", "dreg", "plain", None)


@register_loss("iwhvi")
@keras.saving.register_keras_serializable(package="vizoo")
class IWHVILoss(BoundLoss):
    """Negated importance weighted hierarchical variational bound (IWHVI, Sobolev & Vetrov 2019).

    For a hierarchical posterior q(z|x) = ∫ q(z|psi, x) q(psi|x) dpsi and a
    reverse model tau(psi|z, x): per outer sample z_i (drawn with psi_i0), K
    reverse samples psi_i1..iK ~ tau(psi|z_i, x) give the upper bound (in
    expectation) on log q(z_i|x)

        log v_ij = log q(z_i|psi_ij, x) + log q(psi_ij|x) - log tau(psi_ij|z_i, x),
        log q^_K(z_i|x) = logmeanexp_{j=0..K} log v_ij,

    and the k-sample outer bound is the IWAE bound with it:

        IWHVI_{k,K} = logmeanexp_{i=1..k} [log p(x, z_i) - log q^_K(z_i|x)] <= log p(x).

    It increases with K (to the IWAE bound with the exact q) and with k;
    `IWHVILoss(k=1, num_reverse_samples=0)` is `HVMLoss()`. With the posterior's
    `reverse_model="sivi"` (tau = q(psi|x)) it is the bound of semi-implicit
    VI (Yin & Zhou 2018). The value reported is this bound exactly.
    Compiling with this loss makes the model's `HierarchicalPosterior`
    sample with `num_reverse_samples=K` (as the loss's k sets the samples
    of z); a posterior without an auxiliary variable is refused at `compile`.

    tau is trained jointly on the same bound (it is the `control` gradient
    group; maximizing over tau tightens the bound on log q), by default
    (`gradient_estimator="auto"` or `"dreg"`) with a doubly reparameterized
    estimator of that same gradient, as Sobolev & Vetrov train it (`"plain"`
    for the plain one; on the tractable model of benchmarks/hierarchical_tau.py,
    DReG doubles how much tighter than SIVI's the learned tau's estimate is
    after 300 steps): with outer normalized weights w~_i,
    inner ones v~_ij = v_ij / sum_l v_il and log v'_ij the log-weight with
    tau's parameters stopped in its density (psi_ij keeps its gradient),
    tau maximizes

        sum_i [-stop(w~_i v~_i0) log v_i0
               + sum_{j>=1} stop(w~_i^2 v~_ij^2 - 2 w~_i v~_ij^2) log v'_ij],

    which replaces the score terms of the reverse samples by their
    reparameterized form (Tucker et al. 2019, applied to the reverse
    samples; the free psi_i0 keeps its score term). Unbiased (tested); q and
    the decoder get the plain gradient. A SIVI posterior has no tau: `"auto"`
    then changes nothing, and `"dreg"` is refused at `compile` (it would
    silently do nothing).

    Args:
        k: int >= 1, outer samples of z per example.
        num_reverse_samples: int K >= 0, reverse samples per z.
        gradient_estimator: tau's gradient: `"auto"` (the default: `"dreg"`
            for a learned tau, nothing for SIVI's), `"dreg"` (a posterior
            without a learned tau is refused at `compile`) or `"plain"` (the
            reparameterized gradient of the bound, for every variable; None
            is the same).

    Example:
        >>> model = VAE(784, 50, posterior=HierarchicalPosterior(50, aux_dim=10))
        >>> model.compile(optimizer="adam", loss=IWHVILoss(k=5, num_reverse_samples=10))
        >>> sivi = VAE(784, 50, posterior=HierarchicalPosterior(50, aux_dim=10, reverse_model="sivi"))
        >>> sivi.compile(optimizer="adam", loss=IWHVILoss(k=5, num_reverse_samples=10))  # SIVI

    References:
        Sobolev & Vetrov, "Importance Weighted Hierarchical Variational
        Inference", NeurIPS 2019.
        Yin & Zhou, "Semi-Implicit Variational Inference", ICML 2018.
        Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient
        Estimators for Monte Carlo Objectives", ICLR 2019.
    """

    # Constructor arguments on the command line (vizoo/cli.py reads these; see vizoo.registry.Option).
    cli_options = {
        "num_reverse_samples": Option(
            "--reverse-samples",
            int,
            "K, reverse samples psi ~ tau(psi|z,x) per z (the hierarchical posterior's default K, and the loss's)",
            check=check_non_negative_int,
        ),
        "gradient_estimator": IWAELoss.cli_options["gradient_estimator"],
    }

    def __init__(self, k=5, num_reverse_samples=10, gradient_estimator="auto", name="iwhvi_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)
        self.num_reverse_samples = check_non_negative_int(num_reverse_samples, "num_reverse_samples")
        gradient_estimator = check_choice(gradient_estimator, "gradient_estimator", GRADIENT_ESTIMATORS)
        self.gradient_estimator = "plain" if gradient_estimator is None else gradient_estimator
        if self.gradient_estimator != "plain":
            self.required_terms = BoundLoss.required_terms + ("reverse_log_weights_detached",)

    @property
    def sampler_options(self):
        return {"num_reverse_samples": self.num_reverse_samples}

    def bound(self, terms):
        return logmeanexp(self.log_weights(terms), axis=1)

    def posterior_support(self, posterior):
        # A sampler option's default is the posterior's attribute of its name (vizoo.layers.Posterior).
        if self.gradient_estimator == "dreg" and "reverse_model" in posterior.sampler_options:
            if posterior.reverse_model == "sivi":
                return (
                    "gradient_estimator='dreg' estimates the gradient of a learned reverse model tau, and SIVI has "
                    "none (tau = q(psi|x), with no variables of its own), so it would change nothing; use "
                    "gradient_estimator='auto' or 'plain' with SIVI. "
                    "Received: gradient_estimator='dreg', reverse_model='sivi'"
                )
        return None

    def objectives(self, terms):
        if self.gradient_estimator == "plain":
            return None
        log_w = self.log_weights(terms)  # [batch, k]
        outer = ops.stop_gradient(ops.exp(log_w - ops.logsumexp(log_w, axis=1, keepdims=True)))[..., None]
        log_v = terms["reverse_log_weights_detached"]  # [batch, k, K + 1]; j >= 1: tau's density stopped
        inner = ops.stop_gradient(ops.exp(log_v - ops.logsumexp(log_v, axis=2, keepdims=True)))
        reverse = ops.square(outer) * ops.square(inner) - 2.0 * outer * ops.square(inner)  # j >= 1
        free = -outer * inner  # j = 0: psi_0 does not depend on tau, its score term stays
        is_free = ops.cast(ops.arange(ops.shape(log_v)[2]) == 0, log_v.dtype)  # [K + 1]
        weights = is_free * free + (1.0 - is_free) * reverse
        return {"control": ops.sum(weights * log_v, axis=(1, 2))}

    def get_config(self):
        config = super().get_config()
        config.update(num_reverse_samples=self.num_reverse_samples, gradient_estimator=self.gradient_estimator)
        return config
