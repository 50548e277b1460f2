import numbers

import keras
import numpy as np
from keras import ops

from vizoo.layers import BernoulliLikelihood
from vizoo.layers.bernoulli_posterior import BernoulliPosterior, bernoulli_log_prob, check_latent_dims, mlp
from vizoo.models.latent_variable_model import LatentVariableModel
from vizoo.models.vae import VAE
from vizoo.registry import Option, register_model
from vizoo.utils import check_hidden_units, draw_seed

@register_model("sbn")
@keras.saving.register_keras_serializable(package="vizoo")
class SigmoidBeliefNetwork(LatentVariableModel):
    """Sigmoid belief network: layers of binary latents, trained with score-function bounds.

    Generative model over L stochastic layers of binary units (h_1 next to x):

        p(h_L) = prod_i sigmoid(b_i)^h_L,i (1 - sigmoid(b_i))^(1 - h_L,i),
        p(h_l | h_{l+1}) = Bernoulli(sigmoid(MLP_l(h_{l+1}))),   l = L-1, ..., 1,
        p(x | h_1) = Bernoulli(sigmoid(MLP_0(h_1))),

    and the inference network q(h|x) = q(h_1|x) q(h_2|h_1) ... q(h_L|h_{L-1})
    (`BernoulliPosterior`), sampled layer by layer. With `hidden_units=[]`
    every MLP is one linear map: the SBN of Neal (1992) and of the NVIL and
    VIMCO papers (200-200-200 on MNIST); `hidden_units` adds deterministic
    layers inside every conditional (the papers' "nonlinear" SBNs).

    The latents are discrete, so nothing is reparameterized: compile with a
    score-function bound, `VIMCOLoss(k)` or `NVILLoss()` (ELBO and IWAE
    losses are refused with a named error). For NVIL the model also owns the
    variance-reduction state, since a Keras loss owns no variables:
    - the baseline network b(x) (an MLP, `baseline_hidden_units`), in the
      `control` gradient group. It trains only under a loss that asks for the
      `baseline` term; under any other loss it is frozen (so no variable goes
      without a gradient);
    - non-trainable running moments `signal_mean` c and `signal_variance` v
      of the residual learning signal r = log w - b(x). A training call that
      computes the `baseline` or `signal_scale` term updates them after
      reading them: c <- a c + (1 - a) mean(r), v <- a v + (1 - a) var(r)
      over the batch and samples (a = `baseline_decay`), unweighted: a
      `sample_weight` weights the loss, not these moments (they centre and
      scale the learning signal, so its gradient stays unbiased whatever they
      are). They are saved in `.keras` files with the weights.

    Args:
        input_dim: int, data dimension D (784 for MNIST).
        latent_dims: list of 1 to 3 ints, the sizes of the stochastic layers
            h_1 (next to x) to h_L; `[200, 200, 200]` as in Mnih & Rezende.
        hidden_units: list of ints, deterministic hidden layers inside each
            conditional of p and q (`[]`: linear, the papers' SBN).
        activation: activation of those hidden layers.
        baseline_hidden_units: list of ints, hidden layers (tanh) of NVIL's
            baseline network b(x) (`[100]`, as in Mnih & Gregor), or None for
            no baseline network (then NVIL with baselines is refused).
        baseline_decay: float in [0, 1), the decay a of the running moments
            (0.8 in Mnih & Gregor).
        seed: optional int seed of the model's sampling noise. (The noise
            generator's state is not saved in `.keras` files.)

    Call arguments:
        inputs: `[batch, input_dim]` binary (or [0, 1]) data.
        training: bool; with True, a call that computes the NVIL terms
            updates the running moments.
        num_samples: optional int k; default the compiled loss's k, else 1.
        seed: optional seed for this call's noise.
        terms: optional names of the terms to compute.

    Returns:
        dict of terms: `log_px_z`, `log_pz` (log p(h), all layers), `log_qz`
        (exact log q(h|x), the samples stopped), each `[batch, k]`; on
        request `z` (`[batch, k, sum(latent_dims)]`, the binary samples
        h_1..h_L concatenated), `baseline` (b(x) + c, `[batch, 1]`) and
        `signal_scale` (max(1, sqrt(v)), `[batch, 1]`).

    Example:
        >>> model = SigmoidBeliefNetwork(input_dim=784, latent_dims=[200, 200, 200])
        >>> model.compile(optimizer="adam", loss=VIMCOLoss(k=5))
        >>> model.fit(train_ds, epochs=3)
        >>> vizoo.evaluate.log_likelihood(model, test_ds, k=5000)["nll"]

    References:
        Neal, "Connectionist learning of belief networks", Artificial Intelligence 1992.
        Mnih & Gregor, "Neural Variational Inference and Learning in Belief Networks", ICML 2014.
        Mnih & Rezende, "Variational Inference for Monte Carlo Objectives", ICML 2016.
    """

    # Constructor arguments on the command line (vizoo/cli.py; see vizoo.registry.Option).
    cli_options = {
        "latent_dims": Option(
            "--sbn-layers",
            int,
            "sizes of the sbn's stochastic layers of binary units, h_1 (next to x) first (default 200 200 200)",
            nargs="+",
        ),
        "hidden_units": VAE.cli_options["hidden_units"],
        "activation": VAE.cli_options["activation"],
    }
    decodes = True  # decode(h_1); posterior_mean gives E_q[h_1|x]
    generates = True
    # NVIL's variance-reduction terms (declared in vizoo.terms), each `[batch, 1]`: the baseline b(x) + c and
    # the scale max(1, sqrt(v)) of the learning signal (running moments c, v from before the step).
    extra_terms = ("baseline", "signal_scale")

    def __init__(
        self,
        input_dim,
        latent_dims=(200, 200, 200),
        hidden_units=(),
        activation="tanh",
        baseline_hidden_units=(100,),
        baseline_decay=0.8,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_options(input_dim, hidden_units, activation, seed)
        self.latent_dims = check_latent_dims(latent_dims)
        if len(self.latent_dims) > 3:
            raise ValueError(
                f"latent_dims must name 1 to 3 stochastic layers. Received: latent_dims={list(latent_dims)}"
            )
        self.baseline_hidden_units = (
            None if baseline_hidden_units is None else check_hidden_units(baseline_hidden_units, "baseline_hidden_units")
        )
        if isinstance(baseline_decay, (bool, np.bool_)) or not isinstance(baseline_decay, numbers.Real) or not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be a number in [0, 1). Received: baseline_decay={baseline_decay!r}")
        self.baseline_decay = float(baseline_decay)

        policy = self.dtype_policy
        self.posterior = BernoulliPosterior(self.latent_dims, self.hidden_units, activation, name="posterior", dtype=policy)
        # p(h_l | h_{l+1}) for l = 1..L-1: network i maps h_{i+2} to the logits of h_{i+1} (1-based names).
        self.prior_networks = [
            mlp(units, self.hidden_units, activation, f"p_h{i + 1}", policy)
            for i, units in enumerate(self.latent_dims[:-1])
        ]
        self.encoder_layers = []  # q(h_1|x)'s network is the posterior's own
        self.decoder_layers = self._dense_stack(self.hidden_units, "decoder")
        self.likelihood = BernoulliLikelihood(self.input_dim, name="likelihood", dtype=policy)
        self.baseline_network = (
            None
            if self.baseline_hidden_units is None
            else mlp(1, self.baseline_hidden_units, "tanh", "baseline", policy)
        )
        self._init_seed_generator()

    def build(self, input_shape=None):
        if input_shape is not None:
            self.check_input_shape(input_shape)
        if not self.posterior.built:
            self.posterior.build((None, self.input_dim))
        for network, units in zip(self.prior_networks, self.latent_dims[1:]):
            if not network.built:
                network.build((None, units))
        self._build_stack(self.decoder_layers, self.likelihood, (None, self.latent_dims[0]))
        # p(h_L): factorized Bernoulli with learned logits (0: every unit on with probability 1/2).
        self.prior_logits = self.add_weight(
            shape=(self.latent_dims[-1],), initializer="zeros", name="prior_logits", dtype="float32", autocast=False
        )
        if self.baseline_network is not None:
            if not self.baseline_network.built:
                self.baseline_network.build((None, self.input_dim))
            self.signal_mean = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="signal_mean", dtype="float32", autocast=False
            )
            self.signal_variance = self.add_weight(
                shape=(), initializer="ones", trainable=False, name="signal_variance", dtype="float32", autocast=False
            )
        self.built = True

    # ------------------------------------------------------------ the two networks
    def decoder_input(self, z):
        """h_1, the first `latent_dims[0]` units of z: p(x|h) reads h_1 only."""
        return z[..., : self.latent_dims[0]]

    def log_prior(self, z):
        """log p(h) = log p(h_L) + sum_l log p(h_l|h_{l+1}) for z `[..., sum(latent_dims)]` -> `[...]`."""
        layers = self.posterior.split(ops.cast(z, "float32"))
        log_p = bernoulli_log_prob(layers[-1], ops.cast(self.prior_logits, "float32"))
        for network, h, above in zip(self.prior_networks, layers[:-1], layers[1:]):
            log_p = log_p + bernoulli_log_prob(h, ops.cast(network(above), "float32"))
        return log_p

    def _baseline(self, x):
        """b(x), `[batch, 1]` (float32)."""
        return ops.cast(self.baseline_network(x), "float32")

    def family_terms(self, x, names):
        values = {
            "baseline": lambda: self._baseline(x) + self.signal_mean,  # [batch, 1]
            "signal_scale": lambda: ops.broadcast_to(
                ops.maximum(1.0, ops.sqrt(self.signal_variance)), (ops.shape(x)[0], 1)
            ),
        }
        return {name: values[name]() for name in names}

    def call(self, inputs, training=None, num_samples=None, seed=None, terms=None):
        values = super().call(inputs, training=training, num_samples=num_samples, seed=seed, terms=terms)
        if training and any(name in values for name in self.extra_terms):
            self._update_signal_moments(inputs, values)
        return values

    def _update_signal_moments(self, x, terms):
        """c, v <- running mean and variance of r = log w - b(x) over this batch's samples."""
        log_w = terms["log_px_z"] + terms["log_pz"] - terms["log_qz"]
        b = terms["baseline"] - self.signal_mean if "baseline" in terms else self._baseline(x)
        residual = ops.stop_gradient(log_w - b)
        mean = ops.mean(residual)
        variance = ops.mean(ops.square(residual - mean))
        decay = self.baseline_decay
        self.signal_mean.assign(decay * self.signal_mean + (1.0 - decay) * mean)
        self.signal_variance.assign(decay * self.signal_variance + (1.0 - decay) * variance)

    def term_support(self, name):
        if name in self.extra_terms:
            if self.baseline_network is None:
                return (
                    "SigmoidBeliefNetwork was built without a baseline network (baseline_hidden_units=None); "
                    "pass baseline_hidden_units, e.g. [100]."
                )
            return None
        return super().term_support(name)

    # --------------------------------------------------------------- training
    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        if loss is not None and self.baseline_network is not None:
            self.check_loss(loss)
            # The baseline trains only under a loss that reads it; otherwise it would get no gradient.
            self.baseline_network.trainable = "baseline" in loss.required_terms
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def gradient_groups(self):
        def variables(layers):
            return [v for layer in layers for v in layer.trainable_variables]

        groups = {
            "generative": [self.prior_logits] + variables(self.prior_networks + self.decoder_layers + [self.likelihood]),
            "inference": variables([self.posterior]),
        }
        if self.baseline_network is not None:
            groups["control"] = variables([self.baseline_network])
        return groups

    def sample_prior(self, num_examples, seed):
        """Ancestral draws h ~ p(h), `[num_examples, sum(latent_dims)]` (h_1 first)."""
        logits = ops.broadcast_to(ops.cast(self.prior_logits, "float32"), (num_examples, self.latent_dims[-1]))
        layers = []
        for index, network in enumerate([None] + self.prior_networks[::-1]):
            if network is not None:
                logits = ops.cast(network(h), "float32")
            u = keras.random.uniform(ops.shape(logits), seed=draw_seed(seed, index + 1))  # one stream a layer
            h = ops.cast(u < ops.sigmoid(logits), "float32")
            layers.insert(0, h)
        return ops.concatenate(layers, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            latent_dims=list(self.latent_dims),
            baseline_hidden_units=None if self.baseline_hidden_units is None else list(self.baseline_hidden_units),
            baseline_decay=self.baseline_decay,
        )
        return config
