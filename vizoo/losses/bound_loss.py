"""Base class of vizoo's bounds: a Keras loss that reduces a model's log-density terms."""

import keras
import numpy as np
from keras import ops

from vizoo.utils import check_positive_int

# Variable groups a loss may give surrogates of its own (`objectives`): the
# decoder/prior (`generative`), the encoder/posterior (`inference`),
# baselines or other variance-reduction networks (`control`) and the
# discriminator of adversarial objectives (`adversary`: AVB's T(x, z)).
GRADIENT_GROUPS = ("generative", "inference", "control", "adversary")


class BoundLoss(keras.losses.Loss):
    """A negated lower bound on log p(x), in nats per example.

    Models return a dict of per-sample log-density terms shaped `[batch, k]`
    (`log_px_z`, `log_pz`, `log_qz`, ...). A `BoundLoss` only reduces them:
    subclasses implement `bound(terms)`, returning the bound for each example
    (shape `[batch]`); the loss value is its negation, averaged over the batch
    (weighted by `sample_weight` when given).

    The contract with models:
    - `required_terms`: the term names `bound` and `objectives` read. A model
      compiled with the loss computes exactly these (e.g. the closed-form `kl`
      only when a loss asks for it), so they are known before the forward pass.
    - `objectives(terms)`: optional per-variable-group surrogates. `None` (the
      default) means one group: every variable follows the gradient of the
      bound. A dict `{group: surrogate [batch]}` (groups in `GRADIENT_GROUPS`)
      sends each named group the gradient of its own surrogate, and every
      other variable the bound's. The value reported is always the bound:
      `-(bound + sum_g (s_g - stop_gradient(s_g)))`, whose gradient on
      group g's variables is the surrogate's. Estimators such as DReG or
      VIMCO live here, never in the reported number.
    - `posterior_support(posterior)`: None, or the reason (a sentence) this
      loss cannot train with `posterior`; `compile` raises it as a named error.
    - `requires_reparameterization`: the gradient flows through the samples
      z, so the model's posterior must be reparameterized (compiling with a
      score-function posterior is refused with a named error).

    The loss's `k` is the number of samples per example the model draws when it
    is compiled with this loss: `model.compile(loss=IWAELoss(k=5))` alone sets
    it for `fit` and `evaluate`.

    Args:
        k: int, number of samples of z per example (>= 1).
        name, reduction, dtype: as for `keras.losses.Loss`.

    Call arguments:
        y_true: ignored (may be `None`): the bounds are unsupervised, so
            `fit(x)` and `fit(x, x)` both work.
        y_pred: the dict of terms returned by the model.
        sample_weight: optional per-example weights, shape `[batch]`.
    """

    required_terms = ("log_px_z", "log_pz", "log_qz")
    # Capabilities, declared (read directly by models, evaluation and the command line; subclasses override):
    # - is_bound: the value is a lower bound on log p(x) (in expectation). False for an estimate that may lie
    #   above it (e.g. RenyiLoss with alpha < 0): reports then call it an estimate, not a bound.
    is_bound = True
    # - requires_reparameterization: the gradient flows through the samples z (the posterior must be
    #   reparameterized, else compile refuses it).
    requires_reparameterization = True
    # - score_function: the surrogates differentiate log q(z|x) at samples that must carry no gradient
    #   (VIMCO, NVIL); compile refuses a reparameterized posterior.
    score_function = False
    # - needs_density: the loss reads log q(z|x) (`log_qz`); compile refuses a posterior without a density.
    needs_density = True
    # - needs_adversary: the loss reads the terms of the model's adversary T(x, z) (AVB) and trains it (its
    #   `adversary` group); compile refuses a model without one, and a model with one compiled with a loss
    #   that does not train it.
    needs_adversary = False
    # Per-example diagnostics the loss computes from the terms (`diagnostics(terms)`), `{name: meaning}`: the
    # model tracks each as an epoch metric of that name (History, history.csv), and
    # `vizoo.callbacks.StopOnNonFinite` names a non-finite one with its meaning.
    diagnostic_meanings = {}
    # Epochs of KL warm-up the loss trains with (0: none); `fit` adds `vizoo.callbacks.KLWarmup` when positive.
    kl_warmup_epochs = 0
    # Constructor arguments on the command line, `{argument: vizoo.registry.Option}` (vizoo/cli.py reads them;
    # `k` is every loss's, `--k`).
    cli_options = {}

    def __init__(self, k=1, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._k = check_positive_int(k, "k")
        # Kept for the config only when given (Keras's Loss.get_config leaves it out): configs, and the
        # checkpoints that record them, of losses in the default dtype stay as they were.
        self._given_dtype = None if dtype is None else self._dtype_policy.name

    @property
    def k(self):
        """Number of samples of z per example (read-only: compile again with a new loss)."""
        return self._k

    @property
    def sampler_options(self):
        """Options the model's posterior samples with under this loss (e.g. `num_reverse_samples`); `{}` here.

        Like `k`, they are decided by the compiled loss alone; compiling with a
        posterior that does not take them is refused with a named error.
        """
        return {}

    @property
    def value_name(self):
        """What the value (negated) is, in logs and `metrics.json`: `"bound"` where `is_bound`, else `"estimate"`."""
        return "bound" if self.is_bound else "estimate"

    @property
    def group_steps(self):
        """`{group: n}`: updates of a group's variables per training step (n - 1 of them alone, first); `{}` here.

        A group not named takes one update per step (in the step's joint update). AVB's
        adversary may take several (`AVBLoss(adversary_steps=2)`, the paper's toy example).
        """
        return {}

    def diagnostics(self, terms):
        """`{name: [batch]}` for the names of `diagnostic_meanings` (none here): the model averages them per epoch."""
        return {}

    def __call__(self, y_true=None, y_pred=None, sample_weight=None):
        self._check_terms(y_pred)
        # The bounds are unsupervised: y_true is ignored and may be None.
        with keras.name_scope(self.name):
            terms = {name: ops.convert_to_tensor(value, dtype=self.dtype) for name, value in y_pred.items()}
            return reduce_weighted(self.call(None, terms), sample_weight, self.reduction, self.dtype)

    def call(self, y_true, y_pred):
        return -self.bound(y_pred)

    def _check_terms(self, terms):
        if not isinstance(terms, dict):
            raise ValueError(
                f"{type(self).__name__} reduces the dict of log-density terms "
                "returned by a vizoo model (keys log_px_z, log_pz, log_qz, ...). "
                f"Received: y_pred of type {type(terms).__name__}"
            )
        missing = [name for name in self.required_terms if name not in terms]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the terms {list(self.required_terms)} "
                f"from the model; missing {missing}. Received: terms with keys "
                f"{sorted(terms)}"
            )
        # The log-densities are [batch, k], one shape for all (static dimensions compared where known).
        # (BoundLoss.required_terms: the three log-densities every bound reads, whatever a subclass requires.)
        shapes = {name: _static_shape(terms[name]) for name in BoundLoss.required_terms if name in terms}
        shapes = {name: shape for name, shape in shapes.items() if shape is not None}  # (unknown rank: not checked)
        sizes = [{dims[axis] for dims in shapes.values() if len(dims) == 2 and dims[axis] is not None} for axis in (0, 1)]
        if any(len(dims) != 2 for dims in shapes.values()) or any(len(known) > 1 for known in sizes):
            raise ValueError(
                f"{type(self).__name__} reduces log-density terms of one shape [batch, k]. Received: terms of "
                f"shapes {shapes}"
            )

    def bound(self, terms):
        """The bound for each example, shape `[batch]`."""
        raise NotImplementedError

    def posterior_support(self, posterior):
        """None if this loss can train a model with `posterior`, else the reason it cannot (a sentence).

        Read by the model's `compile` (beyond the declared capabilities it checks itself); None here.
        """
        return None

    def objectives(self, terms):
        """Per-group surrogate objectives `{group: [batch]}` to maximize, or None for the bound alone."""
        return None

    def group_losses(self, terms, sample_weight=None):
        """`{group: scalar}`: each group's negated surrogate, reduced like the loss; None for one group.

        Only gradients of these scalars are used (their values are not the bound).
        """
        self._check_terms(terms)
        objectives = self.objectives(terms)
        if objectives is None:
            return None
        unknown = sorted(set(objectives) - set(GRADIENT_GROUPS))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.objectives must name groups among {list(GRADIENT_GROUPS)}. "
                f"Received: groups {unknown}"
            )
        return {
            group: reduce_weighted(-surrogate, sample_weight, self.reduction, self.dtype)
            for group, surrogate in objectives.items()
        }

    @staticmethod
    def log_weights(terms):
        """log w = log p(x|z) + log p(z) - log q(z|x), shape `[batch, k]`."""
        return terms["log_px_z"] + terms["log_pz"] - terms["log_qz"]

    def get_config(self):
        config = super().get_config()
        config["k"] = self.k
        if self._given_dtype is not None:
            config["dtype"] = self._given_dtype
        return config


def _static_shape(value):
    """The static shape of a tensor or array-like as a tuple (None entries where unknown), None at unknown rank."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return np.shape(value)
    if getattr(shape, "rank", 0) is None:
        return None
    return tuple(shape)


def replicas_in_sync():
    """Number of replicas the current `tf.distribute` strategy trains in sync (1 without one)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def reduce_weighted(values, sample_weight=None, reduction="sum_over_batch_size", dtype=None):
    """Weighted reduction of per-example losses, as `keras.losses.Loss` reduces them.

    With the default `"sum_over_batch_size"` the result is
    sum_i(values_i * sample_weight_i) / batch_size, divided by the number of
    replicas in sync under a `tf.distribute` strategy (each replica reduces its
    share of the global batch; the replicas' gradients are summed), so that the
    sum over replicas is the global batch mean when the replicas' shares are
    equal. (Keras's convention. A global batch split unevenly, e.g. a last
    batch of 97 rows as 49 and 48, gives `fit` the mean of the replicas' means,
    weighting the rows by 1/(R b_r) rather than 1/B; the reported loss is still
    the batch mean, and `vizoo.distribute.train` weights each row 1/B exactly.)
    `"mean"` is the same;
    `"mean_with_sample_weight"` divides by the sum of the weights instead;
    `"sum"` sums (no replica scaling); `None`/`"none"` returns the weighted values.

    Args:
        values: per-example losses, e.g. `[batch]`.
        sample_weight: optional weights, `[batch]` (or `[batch, 1]`).
        reduction: one of Keras's loss reductions (see above).
        dtype: dtype of the computation (default: that of `values`).

    Returns:
        A scalar (or the weighted values for no reduction).
    """
    values = ops.convert_to_tensor(values, dtype=dtype)
    if sample_weight is not None:
        sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), values.dtype)
        rank, weight_rank = len(values.shape), len(sample_weight.shape)
        if weight_rank == rank + 1 and sample_weight.shape[-1] == 1:
            sample_weight = ops.squeeze(sample_weight, axis=-1)
        elif rank == weight_rank + 1 and values.shape[-1] == 1:
            values = ops.squeeze(values, axis=-1)
        values = values * sample_weight
    if reduction in (None, "none") or tuple(values.shape) in ((), (0,)):
        return values
    total = ops.sum(values)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        divisor = ops.cast(ops.sum(sample_weight), total.dtype)
    else:
        divisor = ops.cast(ops.prod(ops.convert_to_tensor(ops.shape(values), dtype="int32")), total.dtype)
    total = ops.divide_no_nan(total, divisor)
    replicas = replicas_in_sync()
    return total * ops.cast(1.0 / replicas, total.dtype) if replicas > 1 else total


def logmeanexp(values, axis):
    """log(mean(exp(values))) along `axis`, computed stably."""
    count = ops.cast(ops.shape(values)[axis], values.dtype)
    return ops.logsumexp(values, axis=axis) - ops.log(count)
