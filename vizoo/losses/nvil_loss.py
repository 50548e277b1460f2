import keras
from keras import ops

from vizoo.losses.bound_loss import BoundLoss
from vizoo.registry import register_loss


@register_loss("nvil")
@keras.saving.register_keras_serializable(package="vizoo")
class NVILLoss(BoundLoss):
    """Negated ELBO with NVIL's score-function gradient (Mnih & Gregor 2014).

    The value is the ELBO of `ELBOLoss`, exactly: the mean over k samples
    h_j ~ q(h|x) of the learning signal l_j = log p(x, h_j) - log q(h_j|x).

    For samples that carry no gradient (discrete h), the ELBO's gradient with
    respect to q's parameters is E[l grad log q(h|x)] (the term
    E[grad log q] is zero). NVIL reduces its variance with baselines that do
    not depend on h, so the estimator stays unbiased up to a positive scale:

        grad_phi ~= 1/k sum_j (l_j - b(x) - c) / s * grad log q(h_j|x),

    where b(x) is a learned input-dependent baseline, c the running mean of
    l - b(x) and s = max(1, sqrt(v)) with v its running variance (centring and
    variance normalisation, section 3 of the paper). b(x), c and v live in
    the model (a Keras loss owns no variables): the model's `baseline` term
    is b(x) + c and its `signal_scale` term is s, both `[batch, 1]`, computed
    with the moments from before the step, which a training call then
    updates (see `SigmoidBeliefNetwork`). The baseline network (the `control`
    group) is fitted to the signal by least squares,
    surrogate -1/k sum_j (l_j - b(x) - c)^2. The decoder and prior get the plain
    gradient of the ELBO. The reported loss is -ELBO.

    With `baselines=False` the inference gradient is plain REINFORCE,
    1/k sum_j l_j grad log q(h_j|x), with no baseline and no normalisation (for
    comparison; any model whose samples carry no gradient can use it).

    Args:
        k: int >= 1, samples per example (1 in the paper).
        baselines: bool, use b(x), c and the variance normalisation (NVIL);
            False gives plain REINFORCE.

    Example:
        >>> model = SigmoidBeliefNetwork(input_dim=784, latent_dims=[200, 200, 200])
        >>> model.compile(optimizer="adam", loss=NVILLoss())

    Reference:
        Mnih & Gregor, "Neural Variational Inference and Learning in Belief
        Networks", ICML 2014.
    """

    requires_reparameterization = False
    # Differentiates log q(h|x) at the samples: the samples must carry no gradient.
    score_function = True

    def __init__(self, k=1, baselines=True, name="nvil_loss", **kwargs):
        super().__init__(k=k, name=name, **kwargs)
        if not isinstance(baselines, bool):
            raise ValueError(f"baselines must be a bool. Received: baselines={baselines!r}")
        self.baselines = baselines
        if baselines:
            self.required_terms = BoundLoss.required_terms + ("baseline", "signal_scale")

    def bound(self, terms):
        return ops.mean(self.log_weights(terms), axis=1)

    def objectives(self, terms):
        log_w = self.log_weights(terms)  # [batch, k]
        if not self.baselines:
            return {"inference": ops.mean(ops.stop_gradient(log_w) * terms["log_qz"], axis=1)}
        residual = ops.stop_gradient(log_w) - terms["baseline"]  # l - b(x) - c, [batch, k]
        signal = ops.stop_gradient(residual / terms["signal_scale"])
        return {
            "inference": ops.mean(signal * terms["log_qz"], axis=1),
            "control": -ops.mean(ops.square(residual), axis=1),
        }

    def get_config(self):
        config = super().get_config()
        config["baselines"] = self.baselines
        return config
