"""Base class of vizoo's models: the Keras plumbing between a model's terms and a bound loss."""

import os
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from vizoo.data.checks import (
    NoBatchesCheck,
    check_data,
    check_input_shape,
    check_not_empty,
    check_sample_weight,
    input_errors,
)
from vizoo.losses.bound_loss import GRADIENT_GROUPS, BoundLoss, replicas_in_sync
from vizoo.precision import PRECISIONS
from vizoo.terms import SAMPLE, STATE, TERMS
from vizoo.utils import HALF_LOG_2PI, check_activation, check_array, check_hidden_units, check_positive_int, draw_seed

# Terms of AVB's adversary, computed where the model has one (`adversary`); the normalized ones and log r also
# need a posterior with `has_moments` (adaptive contrast).
_ADVERSARY_TERMS = ("adversary_q", "adversary_p")
_CONTRAST_TERMS = ("adversary_q_normalized", "adversary_p_normalized", "log_rz")
# Adaptive contrast's floor on the sampler's variance (sigma = sqrt(var + 1e-4), as Mescheder et al.'s code).
MOMENT_VARIANCE_FLOOR = 1e-4


def _stopped_per_sample(params):
    """Posterior parameters `[batch, ...]` with their gradient stopped, broadcastable over k: `[batch, 1, ...]`."""
    return {key: ops.expand_dims(ops.stop_gradient(value), axis=1) for key, value in params.items()}


class LatentVariableModel(keras.Model):
    """A latent-variable model whose `call(x)` returns log-density terms.

    The contract every family implements:
    - `sample_terms(x, num_samples, seed=None, terms=None, encoding=None,
      noise=None, **sampler_options)`: the one sampling entry point. Draws `num_samples`
      z per example and returns a dict of per-sample terms shaped
      `[batch, k]`: `log_px_z` (log p(x|z_i)), `log_pz` (log p(z_i)),
      `log_qz` (log q(z_i|x)), and on request `log_qz_detached` (log q at the
      same z_i with q's parameters stopped, for STL/DReG) or `kl`
      (`[batch, 1]`, closed-form KL(q || p)). `call`, `evaluate` and the
      exporters all go through it. Subclasses implement `_sample_terms`.
    - `term_support(name)`: None if the model can compute term `name`, else
      the reason it cannot; `available_terms` lists those it can.
    - `posterior_mean(x)`: E_q[z|x] (or a location summary), for active units.
    - `gradient_groups()`: `{group: [variables]}` for the groups of
      `vizoo.losses.GRADIENT_GROUPS` (`generative`, `inference`, `control`, `adversary`),
      so that a loss's per-group surrogates reach their own variables.

    What families share lives here, so that a family differs from another by its
    components and options, not by copied methods. A family's `__init__` calls
    `_init_options(input_dim, hidden_units, activation, seed)` and sets its
    components: `posterior` (a `Posterior`), `likelihood` (a `Likelihood`),
    `encoder_layers` (Dense layers from x to the posterior's features; may be
    empty) and `decoder_layers` (from the decoder's input to the likelihood's
    features); then `_init_seed_generator()`. It implements `log_prior(z)`
    and `sample_prior(n, seed)` (p(z)), and may override `decoder_input(z)`
    (the part of z the decoder reads; all of it by default) and
    `family_terms(x, names)` (its `extra_terms`). The base gives `encode`,
    `decode`, `posterior_mean`, `joint_terms`, `_sample_terms`, `generate`,
    `initialize_output_bias`, `_build_stack` and the shared `get_config` keys
    (`input_dim`, `hidden_units`, `activation`, `seed`).

    The number of samples k comes from the compiled loss
    (`model.compile(loss=IWAELoss(k=5))`), or from `num_samples=` in a direct
    call; with neither it is 1. Likewise the posterior's sampler options (a
    hierarchical posterior's number of reverse samples K) come from the
    compiled loss's `sampler_options` (`IWHVILoss(k=5, num_reverse_samples=10)`),
    else the posterior's defaults. Which terms are computed comes from the
    compiled loss's `required_terms`; a direct call with no compiled loss
    returns every term that costs no extra pass (the three log-densities and
    `kl` where it has a closed form). `fit(x)` needs no targets: the loss
    reduces the terms itself (`fit(x, x)` works too, the targets are ignored).

    Training uses one forward pass and one gradient tape per step. With a
    loss whose `objectives` is None (one group) the step is Keras's own; with
    per-group surrogates each group's variables get their surrogate's gradient
    while the reported loss stays the exact bound.

    Data given to `fit`, `evaluate`, `predict` or a direct call is checked:
    wrong feature size, non-finite values, or values outside [0, 1] for a
    Bernoulli likelihood raise a ValueError naming the argument and the value.
    """

    input_dim = None  # set by subclasses
    # The dimension of z where the model has one continuous latent vector (None otherwise; plots of the
    # posterior need 2).
    latent_dim = None
    # Capabilities, declared (read directly by plots, the command line and export):
    # - decodes: `decode(z)` gives the likelihood's parameters and `posterior_mean(x)` a z it takes
    #   (reconstructions);
    decodes = False
    # - generates: `generate(n)` gives the mean of p(x|z) for n draws from the model's prior;
    generates = False
    # - exportable: `vizoo.export.export_encoder` can write its encoder (`encode` and `posterior`).
    exportable = True
    # - takes_adversary: the constructor takes `adversary=` (AVB's T(x, z), `vizoo.layers.Adversary`); the
    #   command line gives one when the loss `needs_adversary`.
    takes_adversary = False
    # The model's adversary T(x, z) (a layer; its variables are the `adversary` gradient group), or None.
    adversary = None
    # Terms of kind "extra" (declared in vizoo.terms) that the family gives (e.g. NVIL's baselines).
    extra_terms = ()
    # Constructor arguments on the command line, `{argument: vizoo.registry.Option}` (vizoo/cli.py reads them).
    cli_options = {}
    # Constructor arguments that take a registered component (a registry name or a layer), e.g.
    # `("likelihood", "posterior", "prior")`; the command line builds them from `--posterior`, `--prior`.
    components = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = [name for name in cls.extra_terms if name not in TERMS]
        if unknown:
            raise ValueError(
                f"{cls.__name__}.extra_terms must be terms declared in vizoo.terms. Received: extra_terms={unknown}"
            )

    @property
    def input_dtype(self):
        # Data enters in full precision under mixed precision too: the likelihood scores x
        # itself, not x rounded to float16/bfloat16 (the first dense layer casts its input).
        return self.variable_dtype

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.dtype_policy.name not in PRECISIONS:  # e.g. float64: the terms' float32 contract would break
            raise ValueError(
                f"A vizoo model computes under one of the policies {list(PRECISIONS)} (its densities in float32). "
                f"Received: dtype={self.dtype_policy.name!r}"
            )
        # beta of KL warm-up: the weight of log p(z) - log q(z|x) in the training objective of a loss built
        # with kl_warmup_epochs (read as the `kl_weight` term; never in the reported bound). Set per epoch by
        # vizoo.callbacks.KLWarmup; a variable, so the traced train step reads it without retracing.
        self.kl_weight = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="kl_weight", autocast=False  # no float16 rounding
        )
        # The reported loss (History's `loss`/`val_loss`): the bound in nats per example, averaged over the
        # examples seen, whatever the number of replicas. Listed first by `metrics`.
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.group_optimizers = {}  # {group: optimizer} of compile(group_optimizers=...); saved with the model
        # One keras.metrics.Mean per diagnostic of the compiled loss (`diagnostic_meanings`), set by compile
        # (held outside Keras's attribute tracking, which is locked once the model is built: epoch metrics, not
        # saved state, like Keras's own compile metrics).
        self._diagnostics = _Untracked([])
        self._loss_scaled_groups = ()  # groups whose optimizer compile wrapped in a LossScaleOptimizer

    def load_own_variables(self, store):
        # `.keras` files written before KL warm-up existed hold no variable of the model itself:
        # they load with beta = 1 (the bound), instead of failing on the missing kl_weight.
        if not len(store.keys()):
            self.kl_weight.assign(1.0)
            return
        super().load_own_variables(store)

    # ------------------------------------------------------ shared by the families
    def _init_options(self, input_dim, hidden_units, activation, seed):
        """Check and keep the options every family takes (each returned by `get_config`)."""
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        check_activation(activation)  # fails early on an unknown name
        self.seed = seed

    def _init_seed_generator(self):
        # The model's sampling noise (its state is not saved in `.keras` files).
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="noise_seed")

    def _dense_stack(self, units, prefix):
        """Dense layers with the model's activation and dtype policy, named `{prefix}_dense_{i}`."""
        return [
            keras.layers.Dense(u, activation=self.activation, name=f"{prefix}_dense_{i}", dtype=self.dtype_policy)
            for i, u in enumerate(units)
        ]

    @staticmethod
    def _build_stack(layers, head, shape):
        """Build `layers` then `head` from input shape `shape` (components deserialized built are left alone)."""
        for layer in layers:
            if not layer.built:
                layer.build(shape)
            shape = (None, layer.units)
        if head is not None and not head.built:
            head.build(shape)
        return shape

    def encode(self, x):
        """Posterior parameters for x `[batch, input_dim]`: the encoder layers, then the posterior's head."""
        h = x
        for layer in self.encoder_layers:
            h = layer(h)
        return self.posterior(h)

    def decoder_input(self, z):
        """The part of z `[..., latent]` the decoder reads (all of it here)."""
        return z

    def decode(self, z):
        """Likelihood parameters for the decoder's input `[..., features]` (for Bernoulli, `logits`)."""
        # The MLP runs on rows [n, features]: a Dense on a 2-D input is one fused matmul + bias +
        # activation (oneDNN), where on [batch, k, features] it becomes a tensordot with the bias
        # and activation as separate passes (benchmarks/step_variants.py: within noise either way).
        batch_shape = ops.shape(z)[:-1]
        h = ops.reshape(z, (-1, z.shape[-1]))
        for layer in self.decoder_layers:
            h = layer(h)
        params = self.likelihood(h)
        return {
            name: ops.reshape(value, tuple(batch_shape) + tuple(value.shape[-1:])) for name, value in params.items()
        }

    def log_prior(self, z):
        """log p(z) for z `[..., latent]` -> `[...]` (float32)."""
        raise NotImplementedError

    def sample_prior(self, num_examples, seed):
        """z ~ p(z), `[num_examples, latent]`."""
        raise NotImplementedError

    def family_terms(self, x, names):
        """`{name: term}` of the family's own `extra_terms` among `names` (none here)."""
        return {}

    def posterior_mean(self, x):
        """E_q[z|x] `[batch, latent]` (or the posterior's location summary: a flow's image of its base mean)."""
        return self.posterior.mean(self.encode(x))

    def joint_terms(self, x, z):
        """`{"log_px_z": [batch, k], "log_pz": [batch, k]}`: the generative model's terms at given z `[batch, k, latent]`.

        Evaluation scores the samples of a proposal other than q with it (a posterior with no density).
        """
        shape = tuple(getattr(z, "shape", np.shape(z)))
        batch = tuple(getattr(x, "shape", np.shape(x)))[:1]
        if (
            len(shape) != 3
            or None not in (shape[2], self.latent_dim) and shape[2] != self.latent_dim
            or (batch and None not in (batch[0], shape[0]) and batch[0] != shape[0])
        ):
            raise ValueError(
                f"joint_terms expects z of shape [batch, k, latent_dim] = [{batch[0] if batch else 'batch'}, k, "
                f"{self.latent_dim}]. Received: z.shape={shape}"
            )
        return {"log_px_z": self.likelihood.log_prob(x, self.decode(self.decoder_input(z))), "log_pz": self.log_prior(z)}

    def _sample_terms(self, x, num_samples, seed, terms, encoding, noise, **sampler_options):
        encoding = self.encode(x) if encoding is None else encoding
        eps = self.posterior.sample_noise(encoding, num_samples, seed=seed, **sampler_options) if noise is None else noise
        extra = [name for name in terms if name in self.posterior.extra_terms]
        # z [batch, k, latent], log_qz [batch, k] (an estimate where not posterior.exact_density; None without a density)
        z, log_qz, extras = self.posterior.transform_terms(encoding, eps, extra, **sampler_options)
        values = {"z": lambda: z, "log_qz": lambda: log_qz}
        values.update({name: (lambda value=value: value) for name, value in extras.items()})
        values["log_px_z"] = lambda: self.likelihood.log_prob(x, self.decode(self.decoder_input(z)))
        values["log_pz"] = lambda: self.log_prior(z)
        # log q at the same z with q's parameters stopped (z still carries their gradient): STL/DReG.
        values["log_qz_detached"] = lambda: self.posterior.log_prob(z, _stopped_per_sample(encoding))
        values["kl"] = lambda: ops.expand_dims(self.posterior.kl_divergence(encoding, self.prior), axis=-1)
        # [batch, latent_dim]: closed-form KL per latent dimension (free bits).
        values["kl_per_dim"] = lambda: self.posterior.kl_divergence_per_dim(encoding, self.prior)
        if any(name in terms for name in _ADVERSARY_TERMS + _CONTRAST_TERMS):
            values.update(self._adversary_terms(x, z, encoding, eps, seed))
        family = [name for name in terms if name in self.extra_terms]
        if family:
            family_values = self.family_terms(x, family)
            values.update({name: (lambda value=value: value) for name, value in family_values.items()})
        return {name: values[name]() for name in terms}

    def _adversary_terms(self, x, z, encoding, eps, seed):
        """`{name: thunk}` of the adversary's terms for samples z `[batch, k, latent]` drawn with noise eps.

        The contrast draws (z' ~ p(z); e ~ N(0, I) with adaptive contrast) are the model's own, from `seed`,
        independent of eps (an int seed gives each draw its own stream: `utils.draw_seed`).
        """
        batch, k, latent_dim = ops.shape(z)[0], ops.shape(z)[1], z.shape[-1]

        def adversary(z_):
            logits = self.adversary(x, z_)  # [batch, k]; includes 0.5 ||z||^2 = -log N(z; 0, I) + const
            if self.prior.is_standard_normal:
                return logits
            # Another prior: T* = log q - log p(z) needs -log p(z) in place of -log N(z; 0, I).
            normal = ops.sum(-0.5 * ops.square(z_), axis=-1) - latent_dim * HALF_LOG_2PI
            return logits + ops.cast(normal - self.log_prior(z_), logits.dtype)

        def contrast():
            z_prior = ops.reshape(self.sample_prior(batch * k, draw_seed(seed, 1)), (batch, k, latent_dim))  # z' ~ p(z)
            return adversary(ops.stop_gradient(ops.cast(z_prior, z.dtype)))

        cache = {}

        def normalized():
            # Adaptive contrast: z~ = (z - mu(x)) / sigma(x), the sampler's moments with their gradient stopped.
            if not cache:
                mean, variance = self.posterior.moments(encoding, eps)  # [batch, latent] each
                mean = ops.stop_gradient(ops.cast(mean, z.dtype))[:, None, :]
                sigma = ops.stop_gradient(ops.sqrt(ops.cast(variance, z.dtype) + MOMENT_VARIANCE_FLOOR))[:, None, :]
                cache["z"] = (z - mean) / sigma  # [batch, k, latent]
                cache["log_sigma"] = ops.sum(ops.log(sigma), axis=-1)  # [batch, 1]
            return cache

        def log_rz():
            values = normalized()
            return ops.sum(-0.5 * ops.square(values["z"]), axis=-1) - latent_dim * HALF_LOG_2PI - values["log_sigma"]

        return {
            "adversary_q": lambda: adversary(z),
            "adversary_p": contrast,
            "adversary_q_normalized": lambda: self.adversary(x, normalized()["z"]),
            "adversary_p_normalized": lambda: self.adversary(
                x, keras.random.normal((batch, k, latent_dim), dtype=z.dtype, seed=draw_seed(seed, 2))
            ),
            "log_rz": log_rz,
        }

    def generate(self, num_examples, seed=None):
        """Mean of p(x|z) for `num_examples` draws z ~ p(z), `[num_examples, input_dim]`."""
        num_examples = check_positive_int(num_examples, "num_examples")
        if not self.built:
            self.build((None, self.input_dim))
        z = self.sample_prior(num_examples, self.seed_generator if seed is None else seed)
        return self.likelihood.mean(self.decode(self.decoder_input(z)))

    def initialize_output_bias(self, data_mean):
        """Start the likelihood's output bias at the data mean (Bernoulli: logit(mean), Burda et al.)."""
        if not self.built:
            self.build((None, self.input_dim))
        self.likelihood.set_bias_from_mean(np.asarray(data_mean))

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim, hidden_units=list(self.hidden_units), activation=self.activation, seed=self.seed
        )
        return config

    def initialize_from_data(self, dataset):
        """Data-dependent initialization of the components before training (e.g. VampPrior's pseudo-inputs).

        Args:
            dataset: a batched `tf.data.Dataset` (or iterable) of training x, or of (x, ...) tuples.
        """
        if not self.built:
            self.build((None, self.input_dim))
        for name in self.components:
            getattr(self, name).initialize_from_data(dataset)

    # ----------------------------------------------------------------- loss & k
    @property
    def num_samples(self):
        """Samples per example drawn in fit/evaluate/predict: the compiled loss's k, else 1."""
        loss = getattr(self, "loss", None)
        return loss.k if isinstance(loss, BoundLoss) else 1

    @property
    def sampler_options(self):
        """Sampler options of fit/evaluate/predict (e.g. `num_reverse_samples`): the compiled loss's, else none."""
        loss = getattr(self, "loss", None)
        return dict(loss.sampler_options) if isinstance(loss, BoundLoss) else {}

    def compile(self, optimizer="rmsprop", loss=None, group_optimizers=None, **kwargs):
        """Keras's `compile`, plus optimizers of their own for gradient groups.

        Args:
            optimizer: the optimizer (instance or name) of every variable whose
                group has no optimizer in `group_optimizers`. `"adam"` is
                `vizoo.optimizers.Adam()` (Keras's Adam, fused kernels).
            loss: a `vizoo.losses.BoundLoss`, e.g. `IWAELoss(k=5)`.
            group_optimizers: optional dict `{group: optimizer}` (None with `optimizer`
                the model's current optimizer, compiling again to change the loss:
                the current group optimizers) with groups among
                `vizoo.losses.GRADIENT_GROUPS` (`"generative"`, `"inference"`,
                `"control"`, `"adversary"`) and optimizer instances or names (`"adam"` as
                above). The variables of each named group (`gradient_groups()`)
                are updated by its optimizer, the others by `optimizer`; each
                optimizer keeps its own state (slots, iteration count, learning
                rate schedule), saved in `.keras` files and weight files. Under
                `mixed_float16` each is wrapped in a `LossScaleOptimizer`, as
                Keras wraps `optimizer`.
            **kwargs: Keras's `compile` arguments (`steps_per_execution`, ...).

        Example:
            >>> model.compile(optimizer="adam", loss=NVILLoss(), group_optimizers={"control": keras.optimizers.Adam(3e-3)})
        """
        if loss is not None:
            self.check_loss(loss)
        optimizer = _get_optimizer(optimizer)
        if group_optimizers is None and optimizer is getattr(self, "optimizer", None):
            # Compiled again on its own optimizer (another loss, a K schedule): the group optimizers go on too.
            group_optimizers = {
                group: value.inner_optimizer if group in self._loss_scaled_groups else value
                for group, value in getattr(self, "group_optimizers", {}).items()
            }
        given = self._check_group_optimizers(group_optimizers)
        if any(value is optimizer for value in given.values()):
            raise ValueError(
                "group_optimizers must hold optimizers of their own, not the main optimizer (a group without "
                f"an entry already uses it). Received: group_optimizers={group_optimizers!r}"
            )
        steps = loss.group_steps if isinstance(loss, BoundLoss) else {}
        alone = {group: n for group, n in steps.items() if n > 1 and group not in given}
        if alone:
            raise ValueError(
                f"{type(loss).__name__} updates the {', '.join(map(repr, alone))} group {max(alone.values())} times per "
                "step, the extra updates alone: such a group needs an optimizer of its own in group_optimizers "
                "(on the main optimizer they would advance the step count, the learning-rate schedule and Adam's "
                f"bias correction of every other variable), e.g. group_optimizers={{{next(iter(alone))!r}: 'adam'}}. "
                f"Received: loss.group_steps={steps}, group_optimizers={group_optimizers!r}"
            )
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        meanings = loss.diagnostic_meanings if isinstance(loss, BoundLoss) else {}
        self._diagnostics = _Untracked([keras.metrics.Mean(name=name) for name in meanings])
        scale = kwargs.get("auto_scale_loss", True) and self.dtype_policy.name == "mixed_float16"
        self._loss_scaled_groups = tuple(
            group for group, value in given.items()
            if scale and not isinstance(value, keras.optimizers.LossScaleOptimizer)
        )
        self.group_optimizers = {
            group: (
                keras.optimizers.LossScaleOptimizer(value, name=f"{group}_loss_scale_optimizer")
                if group in self._loss_scaled_groups
                else value
            )
            for group, value in given.items()
        }

    @staticmethod
    def _check_group_optimizers(group_optimizers):
        # `{group: optimizer}` in GRADIENT_GROUPS order, names resolved; named errors for bad keys and values.
        if group_optimizers is None:
            return {}
        if not isinstance(group_optimizers, dict):
            raise ValueError(
                "group_optimizers must be a dict {group: optimizer}, e.g. {'control': 'adam'}. "
                f"Received: group_optimizers={group_optimizers!r}"
            )
        unknown = set(group_optimizers) - set(GRADIENT_GROUPS)
        if unknown:
            raise ValueError(
                f"group_optimizers keys must be among {list(GRADIENT_GROUPS)}. "
                f"Received: {{{', '.join(repr(key) for key in sorted(unknown, key=str))}}}"
            )
        for group, value in group_optimizers.items():
            if not isinstance(value, (keras.optimizers.Optimizer, str, dict)):
                raise ValueError(
                    "group_optimizers values must be Keras optimizers or their names (e.g. 'adam'). "
                    f"Received: group_optimizers[{group!r}]={value!r}"
                )
        resolved = {group: _get_optimizer(group_optimizers[group]) for group in GRADIENT_GROUPS if group in group_optimizers}
        if len({id(value) for value in resolved.values()}) < len(resolved):
            raise ValueError(
                "group_optimizers must give each group its own optimizer instance (one optimizer's state "
                f"follows one set of variables). Received: group_optimizers={group_optimizers!r}"
            )
        return resolved

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self.group_optimizers:
            config["group_optimizers"] = {  # as given to compile (before loss-scale wrapping)
                group: keras.saving.serialize_keras_object(
                    value.inner_optimizer if group in self._loss_scaled_groups else value
                )
                for group, value in self.group_optimizers.items()
            }
        return config

    def build_optimizers(self):
        """Create the state (slots, iteration count) of every optimizer of the model now.

        Each optimizer is built on the variables it updates: the main one on
        every trainable variable that no optimizer of `group_optimizers` owns
        (all of them without group optimizers, as Keras builds it), each group
        optimizer on its group's variables, in the model's variable order (as
        the training step applies them, however the model was built).
        `fit` does this by itself; weights with optimizer state
        (`load_weights`, `vizoo.callbacks.TrainingCheckpoint`) load only into
        built optimizers. The model must be built.
        """
        with self.distribute_strategy.scope():
            groups = self._trainable_groups() if self.group_optimizers else {}
            if getattr(self, "optimizer", None) is not None:
                own = {id(v) for group in self.group_optimizers for v in groups.get(group, [])}
                _build_or_check(self.optimizer, [v for v in self.trainable_variables if id(v) not in own], "optimizer")
            if self.group_optimizers:
                for group, optimizer in self.group_optimizers.items():
                    _build_or_check(optimizer, groups.get(group, []), f"group_optimizers[{group!r}]")

    def make_train_function(self, force=False):
        # The model and every optimizer get their variables before the step is traced. Keras (without a
        # tf.distribute strategy) leaves them to the first trace, and a tf.function that creates variables
        # is traced twice: building first makes a fresh model's first `fit` about 3x as fast to start (one
        # trace instead of two). Group optimizers need it in any case: under a strategy they cannot create
        # variables in a replica context.
        self._build_before_tracing()
        self.build_optimizers()
        return super().make_train_function(force=force)

    def make_test_function(self, force=False):
        self._build_before_tracing()  # (as for training: one trace, not two)
        return super().make_test_function(force=force)

    def make_predict_function(self, force=False):
        self._build_before_tracing()
        return super().make_predict_function(force=force)

    def _build_before_tracing(self):
        if not self.built:
            with self.distribute_strategy.scope():  # (under a strategy, Keras has built the model in it already)
                self.build((None, self.input_dim))

    def check_loss(self, loss):
        """Raise a ValueError unless this model can be trained with `loss` (terms, reparameterization)."""
        if not isinstance(loss, BoundLoss):
            raise ValueError(
                f"{type(self).__name__} is trained with a vizoo bound, e.g. "
                "loss=vizoo.losses.IWAELoss(k=5) or ELBOLoss(). "
                f"Received: loss={loss!r}"
            )
        posterior = self.posterior
        if loss.needs_density and not posterior.has_density:
            raise ValueError(
                f"{type(loss).__name__} reads log q(z|x) (its needs_density is True), but {type(posterior).__name__} "
                "has no density (a sampler only, has_density False): use a loss that needs none. "
                f"Received: loss={type(loss).__name__}, posterior={type(posterior).__name__}"
            )
        if loss.requires_reparameterization and not posterior.reparameterized:
            raise ValueError(
                f"{type(loss).__name__} differentiates through the samples z, but "
                f"{type(posterior).__name__} is not reparameterized (its samples are discrete or "
                "score-function only): use a score-function loss. "
                f"Received: loss={type(loss).__name__}, posterior={type(posterior).__name__}"
            )
        if loss.score_function and posterior.reparameterized:
            # Its surrogate differentiates log q at the samples; samples that carry a gradient add a path term.
            raise ValueError(
                f"{type(loss).__name__} is a score-function estimator for samples that carry no gradient, but "
                f"{type(posterior).__name__} is reparameterized: use a reparameterization loss (ELBOLoss, "
                "IWAELoss) or a discrete model (e.g. SigmoidBeliefNetwork). "
                f"Received: loss={type(loss).__name__}, posterior={type(posterior).__name__}"
            )
        if loss.needs_adversary and self.adversary is None:
            raise ValueError(
                f"{type(loss).__name__} trains the model's adversary T(x, z), but this {type(self).__name__} has none: "
                f"build it with one, e.g. {type(self).__name__}(..., adversary=vizoo.layers.Adversary()) "
                "(train.py adds one for such a loss). "
                f"Received: loss={type(loss).__name__}, adversary=None"
            )
        if self.adversary is not None and not loss.needs_adversary:
            raise ValueError(
                f"This {type(self).__name__} has an adversary T(x, z), which only a loss that trains it (needs_adversary, "
                f"e.g. AVBLoss) updates. Received: loss={type(loss).__name__}"
            )
        taken = posterior.sampler_options
        untaken = sorted(set(loss.sampler_options) - set(taken))
        if untaken:
            raise ValueError(
                f"{_describe(loss)} samples with the options {untaken}, which {type(posterior).__name__} does not "
                "take: use a posterior that does (for num_reverse_samples, a hierarchical posterior, "
                f"posterior='hierarchical'). Received: posterior={type(posterior).__name__}"
            )
        reason = loss.posterior_support(posterior)
        if reason is not None:
            raise ValueError(f"{_describe(loss)} cannot train {type(posterior).__name__}: {reason}")
        for name in loss.required_terms:
            reason = self.term_support(name)
            if reason is not None:
                raise ValueError(f"{_describe(loss)} needs the term {name!r}, which this model cannot give: {reason}")

    def compile_from_config(self, config):
        # `compile` is overridden, so Keras's default would skip compiling on load.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.build_optimizers()  # the optimizers' saved state loads into built optimizers

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled bound's loss on the terms `y_pred`, plus the model's `add_loss` terms.

        Keras's default hands `y` to the compiled loss and fails for y=None;
        the bounds are unsupervised, so the loss reduces the terms alone.
        """
        total = self._compiled_bound()(None, y_pred, sample_weight)
        for extra in self._additional_losses():
            total = total + extra
        return total

    def _additional_losses(self):
        # The `add_loss` terms and regularizers, each summed to a float scalar as Keras's default compute_loss does,
        # and divided by the replicas in sync as Keras's own (scale_loss_for_distribution) and the bounds are: each
        # replica's gradient is summed across replicas, so unscaled they would count once per replica.
        replicas = replicas_in_sync()
        values = [
            ops.sum(value if keras.backend.is_float_dtype(value.dtype) else ops.cast(value, keras.backend.floatx()))
            for value in self.losses
        ]
        return [value / ops.cast(replicas, value.dtype) for value in values] if replicas > 1 else values

    def _compiled_bound(self):
        loss = getattr(self, "loss", None)
        if not isinstance(loss, BoundLoss):
            raise ValueError(
                f"{type(self).__name__} has no bound to train on: call "
                "model.compile(optimizer=..., loss=IWAELoss(k=5)) first."
            )
        return loss

    # ---------------------------------------------------------------- training
    @property
    def metrics(self):
        """The model's metrics: `loss_tracker` (History's `loss`) first, then Keras's others.

        The train and test steps report the loss through `loss_tracker`; any
        other metric named `loss` (Keras's own tracker, which these steps
        leave unused) is left out, so the name stays unique.
        """
        tracker = getattr(self, "loss_tracker", None)
        diagnostics = self.diagnostic_trackers
        own = {id(m) for m in diagnostics}
        others = [m for m in super().metrics if m is not tracker and m.name != "loss" and id(m) not in own]
        return ([tracker] if tracker is not None and self.compiled else []) + diagnostics + others

    def _track_loss(self, loss, x):
        # `loss` is this replica's share of the global batch mean (the reduction divides by the number of
        # replicas): times the replicas, weighted by the replica's batch size, the tracker's mean over
        # replicas and batches is the bound per example of the data seen.
        replicas = replicas_in_sync()
        value = loss * ops.cast(replicas, loss.dtype) if replicas > 1 else loss
        self.loss_tracker.update_state(value, sample_weight=tf.shape(x)[0])

    @property
    def diagnostic_trackers(self):
        """The `keras.metrics.Mean` of each diagnostic the compiled loss declares (`diagnostic_meanings`)."""
        holder = getattr(self, "_diagnostics", None)
        return list(holder.value) if holder is not None else []

    def _track_diagnostics(self, terms, sample_weight=None):
        # The compiled loss's per-example diagnostics (e.g. AVB's adversary loss and accuracy), averaged per epoch
        # (weighted by the examples' sample_weight, as the loss is).
        if not self.diagnostic_trackers:
            return
        values = self._compiled_bound().diagnostics(terms)
        for tracker in self.diagnostic_trackers:
            tracker.update_state(values[tracker.name], sample_weight=sample_weight)

    def _group_only_steps(self, x, sample_weight):
        # The extra updates of groups that take several per step (the loss's `group_steps`, e.g. AVB's
        # adversary steps): each on a fresh forward pass, its surrogate's gradient on its variables alone.
        bound = self._compiled_bound()
        for group, steps in bound.group_steps.items():
            for _ in range(steps - 1):
                members = self._trainable_groups().get(group, [])
                if not members:
                    continue
                optimizer = self._optimizer_of(group)
                if not optimizer.built:
                    self.build_optimizers()
                with tf.GradientTape() as tape:
                    terms = self(x, training=True)
                    objective = bound.group_losses(terms, sample_weight)[group] + sum(self._additional_losses())
                    objective = optimizer.scale_loss(objective)
                optimizer.apply_gradients(zip(tape.gradient(objective, members), members))

    def train_step(self, data):
        """One forward pass, one tape; each gradient group follows its own surrogate and optimizer.

        With one group (the loss's `objectives` is None) and one optimizer this
        is exactly Keras's `train_step`. Otherwise the reported loss is still
        the bound; the variables of each group the loss names get the gradient
        of that group's surrogate (plus any `add_loss` terms), the others the
        bound's; each group's gradient is scaled and applied by its optimizer
        (`group_optimizers`, else the main one). The step itself is
        `gradient_step`, which `vizoo.distribute.train` runs under `strategy.run`.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred, loss = self.gradient_step(x, y, sample_weight)
        self._track_loss(loss, x)
        self._track_diagnostics(y_pred, sample_weight)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def gradient_step(self, x, y=None, sample_weight=None):
        """One training step on a batch (its share of the global batch, in a replica); returns `(terms, loss)`.

        `train_step` without the metrics: one forward pass and one tape, the
        gradient of each group's objective applied by its optimizer, as
        `train_step` describes. `loss` is the compiled bound's loss of the batch
        (negated bound per example, plus `add_loss` terms) before any loss
        scaling: under a `tf.distribute` strategy, this replica's share of the
        global batch mean (the losses divide by the replicas in sync), so the
        replicas' values sum to the global batch's.

        Args:
            x: `[batch, input_dim]` data.
            y: ignored by the bounds (kept for Keras's `compute_loss`).
            sample_weight: optional `[batch]` weights, as the losses reduce them.

        Returns:
            `(terms, loss)`: the model's terms `{name: [batch, k]}` and the scalar loss.
        """
        bound = self._compiled_bound()
        optimizer = self.optimizer
        if bound.group_steps:
            self._group_only_steps(x, sample_weight)
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            reported = loss
            group_losses = bound.group_losses(y_pred, sample_weight)
            if group_losses is not None:  # add_loss terms (regularizers) join every group's objective
                extra = self._additional_losses()
                group_losses = {group: value + sum(extra) for group, value in group_losses.items()}
            if group_losses or self.group_optimizers:
                # Each group's objective, scaled by the optimizer that applies its gradient.
                groups = {group: members for group, members in self._trainable_groups().items() if members}
                targets = {
                    group: self._optimizer_of(group).scale_loss((group_losses or {}).get(group, loss))
                    for group in groups
                }
            elif optimizer is not None:
                loss = optimizer.scale_loss(loss)
        if not self.trainable_weights:
            warnings.warn("The model does not have any trainable weights.")
            del tape
            return y_pred, reported
        variables = self.trainable_weights
        if not (group_losses or self.group_optimizers):
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        else:
            by_variable = {}
            for group, members in groups.items():
                by_variable.update(zip(map(id, members), tape.gradient(targets[group], members)))
            own = {id(v) for group in self.group_optimizers for v in groups.get(group, [])}
            # In the model's variable order: each optimizer's slots (and saved state) follow it.
            shared = [v for v in variables if id(v) not in own]
            if shared:
                optimizer.apply_gradients([(by_variable[id(v)], v) for v in shared])
            for group, group_optimizer in self.group_optimizers.items():
                if groups.get(group):
                    group_optimizer.apply_gradients([(by_variable[id(v)], v) for v in groups[group]])
        del tape
        return y_pred, reported

    def test_step(self, data):
        """Keras's `test_step`, reporting the bound through `loss_tracker`."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
        self._track_loss(loss, x)
        self._track_diagnostics(y_pred, sample_weight)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _optimizer_of(self, group):
        return self.group_optimizers.get(group, self.optimizer)

    def gradient_groups(self):
        """`{group: [variables]}` over `GRADIENT_GROUPS`; by default all are `generative`."""
        return {"generative": list(self.trainable_variables)}

    def _trainable_groups(self):
        groups = self.gradient_groups()
        unknown = sorted(set(groups) - set(GRADIENT_GROUPS))
        if unknown:
            raise ValueError(f"gradient_groups must use the groups {list(GRADIENT_GROUPS)}. Received: {unknown}")
        trainable = {id(v) for v in self.trainable_weights}
        seen = {}
        for group, variables in groups.items():
            for variable in variables:
                if id(variable) in seen:
                    raise ValueError(
                        f"Variable {variable.path} is in the gradient groups {seen[id(variable)]!r} and {group!r}: "
                        "each variable belongs to one group."
                    )
                seen[id(variable)] = group
        missing = [v.path for v in self.trainable_weights if id(v) not in seen]
        if missing:
            raise ValueError(f"Trainable variables in no gradient group: {missing}")
        return {g: [v for v in variables if id(v) in trainable] for g, variables in groups.items()}

    # --------------------------------------------------------------- forward
    def call(self, inputs, training=None, num_samples=None, seed=None, terms=None):
        """Log-density terms for `num_samples` (default: the loss's k) samples per example.

        Args:
            inputs: `[batch, input_dim]` data.
            num_samples: int, samples of z per example; default `self.num_samples`.
            seed: optional seed or `keras.random.SeedGenerator` for the noise;
                default the model's own generator.
            terms: optional names of the terms to compute; default those the
                compiled loss needs (with no loss: every term that costs no
                extra pass).

        Returns:
            dict of `[batch, k]` tensors (`kl`: `[batch, 1]`).
        """
        k = self.num_samples if num_samples is None else num_samples
        return self.sample_terms(self._check_inputs(inputs), k, seed=seed, terms=terms, **self.sampler_options)

    def sample_terms(self, x, num_samples=None, seed=None, terms=None, encoding=None, noise=None, **sampler_options):
        """Draw `num_samples` z per example of x and return the requested terms.

        Args:
            x: `[batch, input_dim]` data (already checked).
            num_samples: int k >= 1 (may be left out when `noise` is given).
            seed: optional int or `keras.random.SeedGenerator`; default the
                model's own generator.
            terms: names of the terms to compute; default as for `call`.
                Besides the log-densities, `"z"` gives the samples themselves,
                `[batch, k, latent_dim]`.
            encoding: optional result of `self.encode(x)`, to reuse when the
                same x is sampled many times (evaluation draws chunks).
            noise: optional base noise `[batch, k, *posterior.noise_shape]`
                to use instead of drawing it (deterministic graphs: export);
                another shape (where known when traced) is a named error.
            **sampler_options: family-specific options (e.g. the number of
                reverse samples of a hierarchical posterior).

        Returns:
            dict of `[batch, k]` terms (`kl`: `[batch, 1]`).
        """
        if noise is None or num_samples is not None:
            num_samples = check_positive_int(num_samples, "num_samples")
        if noise is not None:
            self._check_noise(x, noise)
            # (NumPy's float64 noise would meet float32 weights in a TensorFlow op: a raw dtype error.)
            noise = ops.cast(noise, self.variable_dtype)
            if num_samples is not None and noise.shape[1] is not None and num_samples != noise.shape[1]:
                raise ValueError(
                    f"num_samples must match the noise's second axis ({noise.shape[1]}). Received: num_samples={num_samples}"
                )
        self._build_before_tracing()  # (an unbuilt model: its priors and heads get their variables here)
        posterior = self.posterior
        accepted = posterior.sampler_options
        unknown = sorted(set(sampler_options) - set(accepted))
        if unknown:
            raise ValueError(
                f"{type(posterior).__name__} takes the sampler options {list(accepted)}. Received: {unknown}"
            )
        terms = self._requested_terms(terms)
        seed = self.seed_generator if seed is None else seed
        # State terms (vizoo.terms kind "state", e.g. kl_weight) are the model's variable of the same name,
        # broadcast per example: added here for every family. The family computes the others.
        state = [name for name in terms if TERMS[name].kind == STATE]
        values = self._sample_terms(
            x, num_samples, seed, tuple(t for t in terms if t not in state), encoding, noise, **sampler_options
        )
        for name in state:
            shape = tuple(ops.shape(x)[0] if axis == "batch" else axis for axis in TERMS[name].shape)  # [batch, 1]
            values[name] = ops.broadcast_to(ops.cast(getattr(self, name), TERMS[name].dtype), shape)
        return values

    def _check_noise(self, x, noise):
        """Raise a ValueError unless `noise`'s static shape is [batch of x, k, *posterior.noise_shape]."""
        posterior = self.posterior
        expected_rank = 2 + len(posterior.noise_shape)
        if getattr(getattr(noise, "shape", None), "rank", 0) is None:
            return  # unknown rank when traced: the posterior's own ops decide
        shape = tuple(getattr(noise, "shape", np.shape(noise)))
        batch = tuple(getattr(x, "shape", np.shape(x)))[:1]
        expected = f"[batch, k, {', '.join(map(str, posterior.noise_shape))}]"
        wrong = len(shape) != expected_rank
        if not wrong and batch and None not in (batch[0], shape[0]) and batch[0] != shape[0]:
            wrong = True
        if not wrong and posterior.fixed_noise_shape:
            wrong = any(a is not None and a != b for a, b in zip(shape[2:], posterior.noise_shape))
        if wrong:
            batch_text = f" with batch = x's {batch[0]}" if batch and batch[0] is not None else ""
            raise ValueError(
                f"sample_terms expects noise of shape {expected}{batch_text} (posterior.noise_shape = "
                f"{tuple(posterior.noise_shape)} of {type(posterior).__name__}). Received: noise.shape={shape}"
            )

    def bound(self, x, loss=None, num_samples=None, seed=None):
        """The bound (or estimate) of `loss` for each example of x, `[batch]`.

        Args:
            x: `[batch, input_dim]` data.
            loss: a `BoundLoss`; default the compiled loss. It is checked against the model
                (terms, reparameterization, density) as `compile` checks it.
            num_samples: int, samples per example; default the loss's k.
            seed: optional seed for the noise.

        Returns:
            `[batch]` float32: `loss.bound` of the model's terms (not negated; a lower bound on
            log p(x) in expectation where `loss.is_bound`).

        Example:
            >>> model.bound(x_test[:10])  # the compiled IWAE-k bound per example
            >>> model.bound(x_test[:10], loss=vizoo.losses.IWAELoss(k=500))
        """
        loss = self._compiled_bound() if loss is None else loss
        self.check_loss(loss)
        k = loss.k if num_samples is None else check_positive_int(num_samples, "num_samples")
        names = tuple(dict.fromkeys(self._default_terms("always") + tuple(loss.required_terms)))
        terms = self.sample_terms(self._check_inputs(x), k, seed=seed, terms=names, **loss.sampler_options)
        return loss.bound(terms)

    def term_support(self, name):
        """None if `sample_terms` can compute term `name`, else the reason it cannot (a sentence).

        Terms are declared in `vizoo.terms`: those every model gives (`every_model`) are supported here
        (`log_qz` where the posterior `has_density`), as are the family's and the posterior's declared
        `extra_terms`; families override this for the terms whose support depends on their components.
        """
        if name not in TERMS:
            return f"{type(self).__name__} has no term {name!r} (vizoo.terms declares every term)."
        if name == "log_qz" and not self.posterior.has_density:
            return (
                f"{type(self.posterior).__name__} is a sampler with no density (has_density is False): "
                "it gives z but no log q(z|x)."
            )
        if name in _ADVERSARY_TERMS + _CONTRAST_TERMS:
            if name != "log_rz" and self.adversary is None:
                return (
                    f"{type(self).__name__} has no adversary T(x, z) (build it with adversary=vizoo.layers.Adversary(); "
                    "train.py adds one for a loss that needs_adversary)."
                )
            if name in _CONTRAST_TERMS and not self.posterior.has_moments:
                return (
                    f"adaptive contrast normalizes z by the sampler's per-example moments, which "
                    f"{type(self.posterior).__name__} does not give (has_moments is False): use "
                    "ImplicitPosterior(structure='adaptive_contrast') (train.py: --sampler-structure adaptive_contrast)."
                )
            return None
        if TERMS[name].every_model or name in self.extra_terms or name in self.posterior.extra_terms:
            return None
        return f"{type(self).__name__} has no term {name!r}."

    @property
    def available_terms(self):
        """Names of the log-density and family terms this model can compute (every `vizoo.terms` term but `z` and state)."""
        return tuple(
            name for name, spec in TERMS.items() if spec.kind not in (SAMPLE, STATE) and self.term_support(name) is None
        )

    def _default_terms(self, default):
        return tuple(name for name, spec in TERMS.items() if spec.default == default and self.term_support(name) is None)

    def _requested_terms(self, terms):
        if terms is None:
            loss = getattr(self, "loss", None)
            if isinstance(loss, BoundLoss):
                return tuple(dict.fromkeys(self._default_terms("always") + tuple(loss.required_terms)))
            return self._default_terms("always") + self._default_terms("free")
        if isinstance(terms, str):
            terms = (terms,)
        terms = tuple(terms)
        for name in terms:
            reason = self.term_support(name)
            if reason is not None:
                raise ValueError(f"Cannot compute the term {name!r}: {reason} Received: terms={list(terms)}")
        return terms

    def _check_inputs(self, inputs):
        if tf.executing_eagerly() and not isinstance(inputs, keras.KerasTensor):
            # A direct call on concrete data: check its values too (fit/evaluate/predict
            # check their data in the pipeline and trace `call` symbolically).
            values = check_array(np.asarray(inputs), "inputs", None, self._needs_unit_interval)
            self.check_input_shape(values.shape)
            return ops.convert_to_tensor(values)
        x = ops.convert_to_tensor(inputs)
        self.check_input_shape(x.shape)
        return x

    def check_input_shape(self, shape):
        """Raise a ValueError unless `shape` is `(batch, input_dim)` (None entries allowed)."""
        check_input_shape(shape, self.input_dim, type(self).__name__)

    # ------------------------------------------------------------ data checks
    @property
    def _needs_unit_interval(self):
        return self.likelihood.requires_unit_interval

    def check_data(self, data, name="x"):
        """Check data for this model (see `vizoo.data.checks.check_data`); return it."""
        return check_data(data, name, self.input_dim, self._needs_unit_interval)

    def save(self, filepath, *args, **kwargs):
        """Keras `save`; a built, compiled model saves its optimizers' state even before any training step.

        (Otherwise the untrained optimizer is saved unbuilt, and loading the file, which builds the
        optimizers so that their saved state can load, warns that the saved optimizer's variables were
        skipped.)
        """
        if self.built and getattr(self, "optimizer", None) is not None:
            self.build_optimizers()
        save = super().save
        path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
        if path is None or not path.endswith(".keras") or args or kwargs.get("overwrite", True) is not True:
            return save(filepath, *args, **kwargs)
        # Written beside the target and moved over it in one step: a full disk or a kill during the write
        # leaves the file that was there whole (Keras writes in place, emptying it first).
        from vizoo.callbacks import _write_atomically

        try:
            _write_atomically(path, lambda tmp_path: save(tmp_path, **kwargs))
        except OSError as error:
            raise OSError(
                error.errno, f"writing the model file {path} failed ({error.strerror or error}); the file there "
                "before (if any) is kept"
            ) from error
        return None

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras `fit`, with vizoo's data checks: named errors for data of the wrong shape, non-finite values,
        empty data (no examples, or a dataset that yields no batch), batches of changing width, and
        `sample_weight` of the wrong length."""
        x = self.check_data(x, "x")
        check_not_empty(x, "x")
        if kwargs.get("sample_weight") is not None:
            y, kwargs["sample_weight"] = _weighted(x, y, kwargs["sample_weight"])
        validation_data = kwargs.get("validation_data")
        if validation_data is not None:
            validation_data = self.check_data(validation_data, "validation_data")
            if isinstance(validation_data, tuple) and len(validation_data) == 3:
                val_x, val_y, val_weight = validation_data
                validation_data = (val_x, *_weighted(val_x, val_y, val_weight, "validation_data's sample_weight"))
            kwargs["validation_data"] = validation_data
        if isinstance(x, tf.data.Dataset) and len(args) < 7:
            # A dataset shuffles itself: Keras's default shuffle=True would only warn that it is ignored.
            kwargs.setdefault("shuffle", False)
        loss = getattr(self, "loss", None)  # None before compile
        warmup_epochs = loss.kl_warmup_epochs if isinstance(loss, BoundLoss) else 0
        if len(args) < 4 and isinstance(kwargs.get("callbacks"), (list, tuple, type(None))):
            # (callbacks not given positionally: x, y, batch_size, epochs, verbose, callbacks, ...)
            from vizoo.callbacks import KLWarmup

            callbacks = list(kwargs.get("callbacks") or [])
            warmups = [callback for callback in callbacks if isinstance(callback, KLWarmup)]
            if warmup_epochs and not warmups:
                warmups = [KLWarmup(warmup_epochs)]
            # First, so that callbacks after it (CSVLogger) log the epoch's kl_weight.
            if warmups:
                kwargs["callbacks"] = warmups + [callback for callback in callbacks if callback not in warmups]
        if len(args) < 4:  # first: an epoch without batches is refused before any callback saves it
            kwargs["callbacks"] = [NoBatchesCheck("x")] + list(kwargs.get("callbacks") or [])
        self._build_for_training()
        with input_errors():
            return super().fit(x, y, *args, **kwargs)

    def train_on_batch(self, x, y=None, sample_weight=None, *args, **kwargs):
        """Keras `train_on_batch`, with `fit`'s checks of x and of `sample_weight`."""
        x = self.check_data(x, "x")
        y, sample_weight = _weighted(x, y, sample_weight)
        self._build_for_training()
        with input_errors():
            return super().train_on_batch(x, y, sample_weight, *args, **kwargs)

    def test_on_batch(self, x, y=None, sample_weight=None, *args, **kwargs):
        """Keras `test_on_batch`, with `fit`'s checks of x and of `sample_weight`."""
        x = self.check_data(x, "x")
        y, sample_weight = _weighted(x, y, sample_weight)
        with input_errors():
            return super().test_on_batch(x, y, sample_weight, *args, **kwargs)

    def _build_for_training(self):
        # Under a tf.distribute strategy Keras builds the model and the main optimizer before it makes the
        # step, the optimizer on every trainable variable, so that it would hold state (Adam's moments) for the
        # variables a group optimizer owns. Built here first, each optimizer gets its own variables only.
        if getattr(self, "optimizer", None) is not None:
            self._build_before_tracing()
            self.build_optimizers()

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """Keras `evaluate`, with `fit`'s data checks (of x and of `sample_weight`)."""
        x = self.check_data(x, "x")
        if kwargs.get("sample_weight") is not None:
            y, kwargs["sample_weight"] = _weighted(x, y, kwargs["sample_weight"])
        with input_errors():
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        x = self.check_data(x, "x")
        with input_errors():
            return super().predict(x, *args, **kwargs)


def _build_or_check(optimizer, variables, name):
    """Build `optimizer` on `variables`, or, built already (compiled again with it), check that it knows them all."""
    if not optimizer.built:
        optimizer.build(variables)
        return
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # (a LossScaleOptimizer's state is its inner one's)
    unknown = [v for v in variables if inner._var_key(v) not in inner._trainable_variables_indices]
    if unknown:
        raise ValueError(
            f"{name} was built for other variables than it now updates ({len(unknown)} new to it, e.g. "
            f"{unknown[0].path}): compiled again with the same optimizer, a model keeps its optimizers' state for the "
            "same variables only (a loss that trains another gradient group changes them). Compile with a new "
            "optimizer, or give the new variables' group an optimizer of its own in group_optimizers. "
            f"Received: {name}={type(optimizer).__name__} built for {len(inner._trainable_variables_indices)} variables"
        )


def _weighted(x, y, sample_weight, name="sample_weight"):
    """`(y, sample_weight)` to hand Keras for data x: the weights checked, and x itself as y when weights
    come without one.

    The bounds ignore targets, but Keras drops `sample_weight` from array data
    given without a `y` (`pack_x_y_sample_weight`), which would train and
    evaluate unweighted without a word.
    """
    if sample_weight is None:
        return y, None
    return (x if y is None else y), check_sample_weight(sample_weight, x, name)


class _Untracked:
    """Holds a value out of Keras's automatic attribute tracking."""

    def __init__(self, value):
        self.value = value


def _get_optimizer(identifier):
    # "adam" is vizoo's fused Adam; other names, configs and instances as keras.optimizers.get takes them.
    if isinstance(identifier, str) and identifier.lower() == "adam":
        from vizoo.optimizers import Adam

        return Adam()
    return keras.optimizers.get(identifier)


def _describe(loss):
    # k, and the options set to other than their defaults (new options do not lengthen every message): the
    # defaults are those of the loss rebuilt from k alone.
    config = loss.get_config()
    try:
        defaults = type(loss).from_config({"k": loss.k}).get_config()
    except (TypeError, ValueError):
        defaults = {}
    options = {
        key: value
        for key, value in config.items()
        if key not in ("name", "reduction", "dtype") and (key == "k" or defaults.get(key, object()) != value)
    }
    return f"{type(loss).__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"
