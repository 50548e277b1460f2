import keras
from keras import ops

from vizoo.layers.conditional_gaussian import ConditionalGaussian
from vizoo.layers.diagonal_gaussian_posterior import DiagonalGaussianPosterior
from vizoo.layers.posterior import Posterior
from vizoo.losses.bound_loss import logmeanexp
from vizoo.registry import Option, register_posterior
from vizoo.utils import (
    HALF_LOG_2PI, check_bool, check_choice, check_hidden_units, check_non_negative_int, check_positive_int,
)

REVERSE_MODELS = ("learned", "sivi")


def _standard_normal_log_prob(eps):
    return ops.sum(-0.5 * ops.square(eps) - HALF_LOG_2PI, axis=-1)


@register_posterior("hierarchical")
@keras.saving.register_keras_serializable(package="vizoo")
class HierarchicalPosterior(Posterior):
    """Hierarchical (auxiliary-variable) posterior q(z|x) = ∫ q(z|psi, x) q(psi|x) dpsi with a bound on log q.

    Sampling is exact and reparameterized: psi_0 = mu_psi(x) + sigma_psi(x) *
    e_psi, then z = mu(psi_0, x) + sigma(psi_0, x) * e_z. The marginal log
    q(z|x) has no closed form; `transform` returns the importance-weighted
    estimate of Sobolev & Vetrov (IWHVI), with K = `num_reverse_samples`
    samples psi_1..K ~ tau(psi|z, x) of a reverse model and the free psi_0:

        log v_j = log q(z|psi_j, x) + log q(psi_j|x) - log tau(psi_j|z, x),
        log q^_K(z|x) = logmeanexp_{j=0..K} log v_j.

    In expectation over psi_0 ~ q(psi|z, x) (the draw that made z) and the
    reverse samples, log q^_K >= log q(z|x), decreasing in K to log q(z|x),
    and equal to it for every K when tau(psi|z, x) = q(psi|z, x). So any
    bound that reduces `log_qz` stays a lower bound on log p(x): the ELBO over
    log q^_0 is HVM (Ranganath et al. 2016), which is ADGM's auxiliary ELBO
    (Maaløe et al. 2016); the IWAE over log q^_K is IWHVI. With
    `reverse_model="sivi"`, tau = q(psi|x) and log v_j = log q(z|psi_j, x):
    the bound of semi-implicit VI (Yin & Zhou 2018).

    The learned tau is a residual correction of q(psi|x) given z
    (`reverse_residual=True`, the default):

        tau(psi|z, x) = N(mu_psi(x) + dmu(h, z), diag (sigma_psi(x) exp(dlogsigma(h, z)))^2),

    with [dmu, dlogsigma] an MLP whose output weights start at zero: at
    initialisation tau = q(psi|x), i.e. the estimate is SIVI's, and training
    moves tau from there towards q(psi|z, x). (SIVI's proposal is already a
    good one where z says little about psi; a tau that starts unrelated to
    q(psi|x) first has to learn what SIVI gets for free: after 300 joint
    steps on a tractable model it was 0.9 nats looser than SIVI at K = 0,
    the residual tau 0.12 nats tighter; benchmarks/hierarchical_tau.py.) With
    `reverse_residual=False`, [mu_tau, log sigma_tau] is the MLP's output
    itself (the parameterization before issue #25; configs saved without the
    key load with it, so saved models keep their meaning).

    The posterior's `exact_density` is False: `log_qz` is an estimate (an upper
    bound in expectation), and `evaluate.log_likelihood` says so.

    Pieces (all Keras 3 layers): q(psi|x) is a `DiagonalGaussianPosterior`
    on the encoder's features h (`auxiliary`); q(z|psi, x) and tau(psi|z, x)
    are `ConditionalGaussian` MLPs on h with psi (resp. z) entering every
    hidden layer (`conditional`, `reverse`), as psi enters every encoder
    layer in Sobolev & Vetrov's code; here the model's encoder layers (x
    alone, run once per example) come first and `hidden_units` are the
    layers psi enters (their structure exactly: `VAE(hidden_units=[],
    decoder_hidden_units=[200, 200])`, which gives this posterior x itself,
    with `hidden_units=[200, 200]`). tau's variables form the
    `control` gradient group (they shape the bound, not q(z|x)); the others
    are `inference`.

    Noise layout (one flat vector per sample; `noise_shape`):
    `[e_psi (aux_dim), e_z (latent_dim), e_1 .. e_K (aux_dim each)]`, all
    N(0, I), with psi_j = mu_tau + sigma_tau * e_j. K is read from the noise's
    size, so given noise fixes K.

    Args:
        latent_dim: int, dimension of z.
        aux_dim: int, dimension of psi (default `latent_dim`).
        hidden_units: list of ints, hidden layers of q(z|psi, x).
        reverse_hidden_units: list of ints, hidden layers of tau(psi|z, x).
        activation: activation of both networks.
        reverse_model: `"learned"` (tau is a diagonal Gaussian MLP on [h, z])
            or `"sivi"` (tau = q(psi|x): semi-implicit VI, no reverse network).
            Also a sampler option: `reverse_model="sivi"` given to
            `sample_terms` or `evaluate.log_likelihood` evaluates a learned-tau
            model's SIVI estimate (its tau left out).
        num_reverse_samples: int K >= 0, the default number of reverse samples
            (a sampler option: losses and evaluation may pass their own).
        reverse_residual: bool, tau as a residual of q(psi|x) whose correction
            starts at zero (True, the default) or a free MLP (False); see above.

    Call arguments:
        h: encoder features, `[batch, features]`.

    Returns:
        dict with `features` (h, `[batch, features]`, read by the conditional
        and reverse networks), `psi_loc` and `psi_log_scale` (`[batch, aux_dim]`).

    Example:
        >>> posterior = HierarchicalPosterior(50, aux_dim=10, hidden_units=[200], num_reverse_samples=10)
        >>> model = VAE(784, 50, posterior=posterior)
        >>> model.compile(optimizer="adam", loss=IWHVILoss(k=5, num_reverse_samples=10))
        >>> vizoo.evaluate.log_likelihood(model, x_test, k=1000, num_reverse_samples=100)
        >>> vizoo.evaluate.log_likelihood(model, x_test, k=1000, num_reverse_samples=100, reverse_model="sivi")
        >>> sivi = HierarchicalPosterior(50, aux_dim=10, reverse_model="sivi")  # SIVI: no reverse network

    References:
        Ranganath, Tran & Blei, "Hierarchical Variational Models", ICML 2016.
        Maaløe, Sønderby, Sønderby & Winther, "Auxiliary Deep Generative Models", ICML 2016.
        Yin & Zhou, "Semi-Implicit Variational Inference", ICML 2018.
        Sobolev & Vetrov, "Importance Weighted Hierarchical Variational
        Inference", NeurIPS 2019.
    """

    exact_density = False
    sampler_options = ("num_reverse_samples", "reverse_model")
    fixed_noise_shape = False  # K is read from the noise's size (_split_noise checks it)
    # log v_j `[batch, k, K + 1]` with tau's parameters stopped for j >= 1 (DReG for tau).
    extra_terms = ("reverse_log_weights_detached",)

    # Constructor arguments on the command line (vizoo/cli.py; see vizoo.registry.Option).
    cli_options = {
        "aux_dim": Option(
            "--aux-dim", int, "dimension of the hierarchical posterior's psi (default latent dim)", check=check_positive_int
        ),
        "reverse_model": Option(
            "--reverse-model",
            str,
            "learned (a reverse model tau(psi|z,x), the default) or sivi (tau = q(psi|x): semi-implicit VI)",
            check=lambda value, dest: check_choice(value, dest, REVERSE_MODELS),  # errors name the flag's dest
        ),
        "num_reverse_samples": Option(
            "--reverse-samples",
            int,
            "K, reverse samples psi ~ tau(psi|z,x) per z (the hierarchical posterior's default K, and the loss's)",
            check=check_non_negative_int,
        ),
    }

    def __init__(
        self,
        latent_dim,
        aux_dim=None,
        hidden_units=(200,),
        reverse_hidden_units=(200,),
        activation="tanh",
        reverse_model="learned",
        num_reverse_samples=10,
        reverse_residual=True,
        **kwargs,
    ):
        super().__init__(latent_dim, **kwargs)
        self.aux_dim = self.latent_dim if aux_dim is None else check_positive_int(aux_dim, "aux_dim")
        self.hidden_units = check_hidden_units(hidden_units)
        self.reverse_hidden_units = check_hidden_units(reverse_hidden_units, "reverse_hidden_units")
        self.activation = activation
        self.reverse_model = check_choice(reverse_model, "reverse_model", REVERSE_MODELS)
        self.num_reverse_samples = check_non_negative_int(num_reverse_samples, "num_reverse_samples")
        self.reverse_residual = check_bool(reverse_residual, "reverse_residual")
        policy = self.dtype_policy
        self.auxiliary = DiagonalGaussianPosterior(self.aux_dim, name="auxiliary", dtype=policy)
        self.conditional = ConditionalGaussian(
            self.latent_dim, self.hidden_units, activation, name="conditional", dtype=policy
        )
        self.reverse = None
        if self.reverse_model == "learned":
            self.reverse = ConditionalGaussian(
                self.aux_dim,
                self.reverse_hidden_units,
                activation,
                head_initializer="zeros" if reverse_residual else "glorot_uniform",
                name="reverse",
                dtype=policy,
            )

    def build(self, h_shape):
        self.auxiliary.build(h_shape)
        self.conditional.build(h_shape, (None, None, self.aux_dim))
        if self.reverse is not None:
            self.reverse.build(h_shape, (None, None, self.latent_dim))

    def call(self, h):
        psi = self.auxiliary(h)
        features = ops.cast(h, self.variable_dtype)
        return {"features": features, "psi_loc": psi["loc"], "psi_log_scale": psi["log_scale"]}

    # ------------------------------------------------------------------ noise
    def noise_size(self, num_reverse_samples=None):
        """Floats of one sample's noise: aux_dim + latent_dim + K * aux_dim."""
        K = self._reverse_samples(num_reverse_samples)
        return self.aux_dim + self.latent_dim + K * self.aux_dim

    @property
    def noise_shape(self):
        return (self.noise_size(),)

    def sample_noise(self, params, k, seed=None, num_reverse_samples=None, reverse_model=None):
        psi_loc = params["psi_loc"]
        # In the parameters' dtype: float32 under mixed precision (the heads are), float64 in float64.
        shape = (ops.shape(psi_loc)[0], k, self.noise_size(num_reverse_samples))
        return keras.random.normal(shape, dtype=psi_loc.dtype, seed=seed)

    def sample_elements(self, num_reverse_samples=None, reverse_model=None, **unknown_options):
        """Floats of the largest per-sample tensor of `transform` (for evaluation's memory budget).

        Unknown options are left to the model, which refuses them by name.
        """
        K = self._reverse_samples(num_reverse_samples)
        widest = max([self.aux_dim, 2 * self.latent_dim] + self.hidden_units + self.reverse_hidden_units)
        return (K + 1) * widest

    def _uses_tau(self, reverse_model):
        """Whether the estimate uses the learned tau (False: SIVI's tau = q(psi|x)); checks the option."""
        if reverse_model is None:
            return self.reverse is not None
        check_choice(reverse_model, "reverse_model", REVERSE_MODELS)
        if reverse_model == "learned" and self.reverse is None:
            raise ValueError(
                "reverse_model='learned' needs a learned reverse model tau, which this posterior, built with "
                "reverse_model='sivi', does not have. Received: reverse_model='learned'"
            )
        return reverse_model == "learned"

    def reverse_params(self, params, z):
        """tau(psi|z, x)'s `loc` and `log_scale` for z `[batch, ..., latent_dim]` -> `[batch, ..., aux_dim]`."""
        tau = self.reverse(params["features"], z)
        if not self.reverse_residual:
            return tau
        expand = (slice(None),) + (None,) * (len(z.shape) - 2)  # q(psi|x)'s [batch, aux] -> [batch, 1.., aux]
        return {
            "loc": params["psi_loc"][expand] + tau["loc"],
            "log_scale": params["psi_log_scale"][expand] + tau["log_scale"],
        }

    def _reverse_samples(self, num_reverse_samples):
        if num_reverse_samples is None:
            return self.num_reverse_samples
        return check_non_negative_int(num_reverse_samples, "num_reverse_samples")

    def _split_noise(self, eps, num_reverse_samples):
        a, d = self.aux_dim, self.latent_dim
        size = eps.shape[-1]
        K = None if size is None else (size - a - d) // a
        if K is None or K < 0 or size != a + d + K * a:
            raise ValueError(
                f"{type(self).__name__}'s noise has aux_dim + latent_dim + K * aux_dim = {a} + {d} + K * {a} "
                f"entries per sample (K reverse samples). Received: noise.shape={tuple(eps.shape)}"
            )
        if num_reverse_samples is not None and self._reverse_samples(num_reverse_samples) != K:
            raise ValueError(
                f"num_reverse_samples must match the noise, which holds K={K} reverse samples. "
                f"Received: num_reverse_samples={num_reverse_samples}"
            )
        shape = ops.shape(eps)
        reverse = ops.reshape(eps[..., a + d :], (shape[0], shape[1], K, a))  # [batch, k, K, aux_dim]
        return eps[..., :a], eps[..., a : a + d], reverse, K

    # --------------------------------------------------------------- sampling
    def reverse_log_weights(self, params, eps, num_reverse_samples=None, detached=False, reverse_model=None):
        """z `[batch, k, latent_dim]` and the log-weights log v_j `[batch, k, K + 1]` (j = 0: psi_0).

        `reverse_model="sivi"` computes them with tau = q(psi|x) whatever the
        posterior's tau (its SIVI estimate); None: the posterior's own.

        With `detached=True`, also the same log-weights with tau's parameters
        stopped in the density log tau(psi_j|z, x) of the reverse samples
        j >= 1 (psi_j keeps its gradient; the entry j = 0 is unchanged): the
        values are equal, the gradient is the one a doubly reparameterized
        estimator for tau needs (`IWHVILoss(gradient_estimator="dreg")`).
        """
        uses_tau = self._uses_tau(reverse_model)
        eps_psi, eps_z, eps_reverse, K = self._split_noise(eps, num_reverse_samples)
        features = params["features"]
        auxiliary = {"loc": params["psi_loc"][:, None, :], "log_scale": params["psi_log_scale"][:, None, :]}
        psi = auxiliary["loc"] + ops.exp(auxiliary["log_scale"]) * eps_psi  # psi_0, [batch, k, aux_dim]
        log_q_psi = _standard_normal_log_prob(eps_psi) - ops.sum(auxiliary["log_scale"], axis=-1)
        conditional = self.conditional(features, psi)
        z = conditional["loc"] + ops.exp(conditional["log_scale"]) * eps_z  # [batch, k, latent_dim]
        log_v = _standard_normal_log_prob(eps_z) - ops.sum(conditional["log_scale"], axis=-1)  # log q(z|psi_0, x)
        if not uses_tau:  # SIVI: tau = q(psi|x), so log q(psi_j|x) - log tau(psi_j|z, x) = 0
            proposal = auxiliary
        else:
            proposal = self.reverse_params(params, z)  # tau(psi|z, x), [batch, k, aux_dim]
            log_v = log_v + log_q_psi - ConditionalGaussian.log_prob(psi, proposal)
        log_v = log_v[..., None]  # [batch, k, 1]
        if not K:
            return (z, log_v, log_v) if detached else (z, log_v)
        per_sample = {key: ops.expand_dims(value, axis=2) for key, value in proposal.items()}  # [batch, k, 1, aux_dim]
        psi_reverse = per_sample["loc"] + ops.exp(per_sample["log_scale"]) * eps_reverse  # [batch, k, K, aux_dim]
        log_v_reverse = ConditionalGaussian.log_prob(
            ops.expand_dims(z, axis=2), self.conditional(features, psi_reverse)
        )  # log q(z|psi_j, x), [batch, k, K]
        log_v_detached = log_v_reverse
        if uses_tau:
            auxiliary = {key: ops.expand_dims(value, axis=2) for key, value in auxiliary.items()}
            log_q_psi_reverse = ConditionalGaussian.log_prob(psi_reverse, auxiliary)
            # log tau(psi_j|z, x) from the noise: psi_j = loc + scale * e_j, exact.
            log_tau = _standard_normal_log_prob(eps_reverse) - ops.sum(per_sample["log_scale"], axis=-1)
            log_v_reverse = log_v_reverse + log_q_psi_reverse
            if detached:
                stopped = {key: ops.stop_gradient(value) for key, value in per_sample.items()}
                log_v_detached = log_v_reverse - ConditionalGaussian.log_prob(psi_reverse, stopped)
            log_v_reverse = log_v_reverse - log_tau
        log_v_all = ops.concatenate([log_v, log_v_reverse], axis=-1)
        if not detached:
            return z, log_v_all
        return z, log_v_all, ops.concatenate([log_v, log_v_detached], axis=-1)

    def transform(self, params, eps, num_reverse_samples=None, reverse_model=None):
        z, log_v = self.reverse_log_weights(params, eps, num_reverse_samples, reverse_model=reverse_model)
        return z, logmeanexp(log_v, axis=-1)

    def transform_terms(self, params, eps, names=(), num_reverse_samples=None, reverse_model=None):
        if not names:
            return (*self.transform(params, eps, num_reverse_samples, reverse_model), {})
        z, log_v, log_v_detached = self.reverse_log_weights(
            params, eps, num_reverse_samples, detached=True, reverse_model=reverse_model
        )
        return z, logmeanexp(log_v, axis=-1), {"reverse_log_weights_detached": log_v_detached}

    def mean(self, params):
        """The mean of q(z|psi, x) at psi = E[psi|x]: a location summary (E_q[z] has no closed form)."""
        return self.conditional(params["features"], params["psi_loc"][:, None, :])["loc"][:, 0, :]

    def serving_outputs(self, params):
        return {"loc": self.mean(params), "psi_loc": params["psi_loc"], "psi_log_scale": params["psi_log_scale"]}

    def gradient_groups(self):
        """tau's variables are `control` (they tighten the bound, q(z|x) does not depend on them)."""
        inference = self.auxiliary.trainable_variables + self.conditional.trainable_variables
        control = [] if self.reverse is None else self.reverse.trainable_variables
        return {"inference": inference, "control": control}

    def get_config(self):
        config = super().get_config()
        config.update(
            aux_dim=self.aux_dim,
            hidden_units=list(self.hidden_units),
            reverse_hidden_units=list(self.reverse_hidden_units),
            activation=self.activation,
            reverse_model=self.reverse_model,
            num_reverse_samples=self.num_reverse_samples,
            reverse_residual=self.reverse_residual,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Configs saved before `reverse_residual` existed hold a tau that is the MLP's output itself: they load
        # with that parameterization (the default, True, would read their tau's weights as a residual).
        if "reverse_residual" not in config:
            config = {**config, "reverse_residual": False}
        return super().from_config(config)
