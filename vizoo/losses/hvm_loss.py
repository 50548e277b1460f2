import keras
from keras import ops

from vizoo.losses.bound_loss import BoundLoss
from vizoo.registry import register_loss


@register_loss("hvm")
@keras.saving.register_keras_serializable(package="vizoo")
class HVMLoss(BoundLoss):
    """Negated hierarchical variational bound (HVM; ADGM's auxiliary ELBO).

    For a hierarchical posterior q(z|x) = ∫ q(z|psi, x) q(psi|x) dpsi with a
    reverse model tau(psi|z, x), and k joint draws (psi_i, z_i) ~ q(psi, z|x),

        HVM = 1/k sum_i [log p(x, z_i) + log tau(psi_i|z_i, x)
                         - log q(z_i|psi_i, x) - log q(psi_i|x)]
            = ELBO - E_q KL(q(psi|z, x) || tau(psi|z, x)) <= ELBO <= log p(x).

    This is the ELBO with log q(z|x) replaced by the posterior's estimate with
    no reverse samples (K = 0): compiling with this loss makes the model's
    `HierarchicalPosterior` sample with `num_reverse_samples=0`, and the value
    reported is this bound exactly. tau is trained jointly (maximizing the
    bound over tau minimizes the KL above). A posterior without an auxiliary
    variable is refused at `compile`.

    Args:
        k: int >= 1, samples of (psi, z) per example, averaged.

    Example:
        >>> model = VAE(784, 50, posterior=HierarchicalPosterior(50, aux_dim=10))
        >>> model.compile(optimizer="adam", loss=HVMLoss())

    References:
        Ranganath, Tran & Blei, "Hierarchical Variational Models", ICML 2016.
        Maaløe, Sønderby, Sønderby & Winther, "Auxiliary Deep Generative Models", ICML 2016.
    """

    def __init__(self, k=1, name="hvm_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)

    @property
    def sampler_options(self):
        return {"num_reverse_samples": 0}

    def bound(self, terms):
        return ops.mean(self.log_weights(terms), axis=1)
