"""Importance-sampled log p(x) and the diagnostics papers report with it.

`log_likelihood(model, data, k=5000)` estimates, for each example,

    log p(x) ~= logsumexp_i(log w_i) - log k,   log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),

with z_i ~ q(z|x) (the IWAE bound at k=5000, Burda et al. 2016), and from the same
samples the ELBO, the IWAE bound at the training k, the KL(q || p) estimate and the
reconstruction term. Samples are drawn in chunks inside one compiled loop, so memory
depends on the chunk size, not on k or on the size of the data.
"""

import math
import weakref

import keras
import numpy as np
import tensorflow as tf

from vizoo import diagnostics as diagnostics_module
from vizoo.losses import BoundLoss, logmeanexp
from vizoo.data.checks import input_errors
from vizoo.precision import with_precision
from vizoo.utils import check_bool, check_positive_int, check_vizoo_model, draw_seed

# Default cap on the largest [batch, chunk, input_dim] tensor of one chunk, in
# floats (2**21 floats = 8 MiB; a chunk's peak memory is a small multiple of it).
# On a 2-core CPU, chunks of 2,500 decoder rows ran at or near the matmul rate
# while 20,000-row chunks were up to 2x slower (cache); on a GPU, raise it.
_ELEMENTS_PER_CHUNK = 2**21
# Burda et al.: unit i is active if Cov_x(E_q[z_i | x]) > 0.01.
_ACTIVE_UNIT_THRESHOLD = 0.01


def _chunk_size(k, batch_size, input_dim, group, chunk_elements=None):
    """Samples per chunk: within the memory budget, a multiple of `group`, at most k."""
    budget = max(1, (chunk_elements or _ELEMENTS_PER_CHUNK) // (batch_size * input_dim))
    chunk = max(group, budget // group * group)
    return min(chunk, k)


# model -> (seed generator, the training estimate's seed generator,
#           {(chunk, num_chunks, group, jit_compile, sampler options, proposal, top, estimate): function}).
# Tracing and optimizing the sampling loop costs ~1 s; repeated evaluations of a model reuse it.
_COMPILED = weakref.WeakKeyDictionary()
# Samples of a posterior with no density from which evaluation fits its Gaussian proposal, per example.
PROPOSAL_SAMPLES = 1000


def _compiled_passes(model, chunks, group, seed, jit_compile, sampler_options, proposal_samples=0, top=0, estimate=None,
                     restart=True):
    """One compiled `_BatchStatistics` per (chunk, num_chunks) in `chunks`, reused across calls.

    The functions of a model share one seed generator, restarted here from `seed` (with `restart`:
    an evaluation restarts it once, before its first batch), so a call draws the same noise as a fresh
    `SeedGenerator(seed)` would. A training estimate draws from a second one (restarted from a seed
    derived from `seed`), so that measuring it leaves every other statistic's noise as it is without it.
    """
    if model not in _COMPILED:
        _COMPILED[model] = (keras.random.SeedGenerator(0), keras.random.SeedGenerator(0), {})
    seed_generator, estimate_generator, functions = _COMPILED[model]
    if restart:
        seed_generator.state.assign(keras.random.SeedGenerator(seed).state.value)  # seed None: a random start
        estimate_generator.state.assign(keras.random.SeedGenerator(draw_seed(seed, 2)).state.value)
    options = tuple(sorted(sampler_options.items()))
    passes = []
    for index, (chunk, num_chunks) in enumerate(chunks):
        own = estimate if index == 0 else None  # the first pass alone measures a training estimate
        key = (chunk, num_chunks, group, bool(jit_compile), options, proposal_samples, top, id(own))
        if key not in functions:
            functions[key] = _batch_statistics_fn(
                model, chunk, num_chunks, group, seed_generator, jit_compile, sampler_options, proposal_samples, top,
                own, estimate_generator,
            )
        passes.append(functions[key])
    return passes


def _batch_statistics_fn(
    model, chunk, num_chunks, group, seed_generator, jit_compile=False, sampler_options=None, proposal_samples=0, top=0,
    estimate=None, estimate_generator=None,
):
    """`(compiled function x [batch, D] -> per-example sums over num_chunks chunks, number of IWAE groups)`."""
    statistics = _BatchStatistics(
        model, chunk, num_chunks, group, seed_generator, sampler_options or {}, proposal_samples, top, estimate,
        estimate_generator,
    )
    compiled = tf.function(
        statistics,
        input_signature=[tf.TensorSpec([None, model.input_dim], tf.float32)],
        reduce_retracing=True,
        jit_compile=jit_compile,
    )
    return compiled, num_chunks * (chunk // group)


def _fit_gaussian(z):
    """Mean `[batch, d]` and Cholesky factor `[batch, d, d]` (float64) of samples z `[batch, M, d]`."""
    z = tf.cast(z, tf.float64)
    mean = tf.reduce_mean(z, axis=1)
    centred = z - mean[:, None, :]
    count = tf.cast(tf.shape(z)[1], tf.float64)
    covariance = tf.einsum("bmi,bmj->bij", centred, centred) / (count - 1.0)
    dim = tf.shape(z)[2]
    # A relative jitter keeps the factor finite for a (near-)degenerate sampler.
    jitter = 1e-6 * (1.0 + tf.reduce_mean(tf.linalg.diag_part(covariance), axis=1))[:, None, None]
    return mean, tf.linalg.cholesky(covariance + jitter * tf.eye(dim, dtype=tf.float64))


class _Unconverted:
    """The model's methods wrapped in `tf.autograph.experimental.do_not_convert`."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        attribute = getattr(self._model, name)
        return tf.autograph.experimental.do_not_convert(attribute) if callable(attribute) else attribute


class _BatchStatistics:
    """x `[batch, D]` -> per-example sums over num_chunks chunks of samples (wrapped in a `tf.function`).

    A callable object rather than a closure: TensorFlow counts tracings per function code, so
    closures of one code compiled for several (k, K) warned of retracing although each traces once.

    With `proposal_samples` (a posterior with no density), the importance samples come from a
    Gaussian r(z|x) fitted per example to that many of the posterior's own samples (mean and full
    covariance), and log r stands in for log q: importance sampling with any proposal is an unbiased
    estimate of p(x), so log p(x) stays a stochastic lower bound.

    With `top` > 0 it also keeps, for the importance diagnostics (`vizoo.diagnostics`), each
    example's `top` largest log-weights (`top_log_w`, `[batch, top]`, merged per chunk with
    `tf.math.top_k`) and the logsumexp of 2 log w (`log_sum_w2`). Neither touches the other
    statistics: log p(x) is bit-identical with and without them.

    With `estimate` (a compiled loss whose value is an estimate that needs no density, e.g. AVB's),
    it also draws one chunk of q's own samples per example, from `estimate_generator` (so the other
    statistics' noise, and they, do not change), and returns the loss's value per example on them (`estimate`) and E_q log p(x|z)
    (`posterior_reconstruction`).
    """

    def __init__(self, model, chunk, num_chunks, group, seed_generator, sampler_options, proposal_samples, top=0,
                 estimate=None, estimate_generator=None):
        # A weak reference: the function lives in _COMPILED under the model, and must not keep it alive.
        self.model_ref = weakref.ref(model)
        self.chunk, self.num_chunks, self.group = chunk, num_chunks, group
        self.num_groups = chunk // group  # full groups of the training k in one chunk
        self.seed_generator = seed_generator
        self.sampler_options = dict(sampler_options)
        self.proposal_samples = proposal_samples
        self.top = top
        self.estimate = estimate
        self.estimate_generator = estimate_generator

    def __call__(self, x):
        # The model's own code has no tensor-dependent Python control flow: it is traced as is, not converted
        # by AutoGraph (whose conversion cache handed a converted method of an unrelated class to
        # joint_terms' likelihood call in a long test session). Only this loop over chunks is converted.
        model = _Unconverted(self.model_ref())
        # Encoded once per batch and reused by every chunk of samples.
        encoding = model.encode(x)
        if self.proposal_samples:
            draws = model.sample_terms(
                x, self.proposal_samples, seed=self.seed_generator, terms=("z",), encoding=encoding, **self.sampler_options
            )["z"]
            loc, scale_tril = _fit_gaussian(draws)
            log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(scale_tril)), axis=1)  # [batch]
        zeros = tf.zeros(tf.shape(x)[:1], tf.float32)
        log_sum_w = zeros + float("-inf")
        sum_log_w, sum_iwae, sum_kl, sum_reconstruction = zeros, zeros, zeros, zeros
        # The diagnostics' running statistics: [batch, top] largest log-weights and logsumexp(2 log w).
        top_log_w = tf.fill([tf.shape(x)[0], max(self.top, 1)], float("-inf"))
        log_sum_w2 = zeros + float("-inf")
        for _ in tf.range(self.num_chunks):
            if self.proposal_samples:
                eps = tf.cast(
                    keras.random.normal((tf.shape(x)[0], self.chunk, tf.shape(loc)[1]), seed=self.seed_generator), tf.float64
                )
                z = loc[:, None, :] + tf.einsum("bij,bkj->bki", scale_tril, eps)  # [batch, chunk, d]
                dim = tf.cast(tf.shape(loc)[1], tf.float64)
                log_r = -0.5 * tf.reduce_sum(eps**2, axis=-1) - 0.5 * dim * math.log(2 * math.pi) - log_det[:, None]
                terms = dict(model.joint_terms(x, tf.cast(z, tf.float32)), log_qz=tf.cast(log_r, tf.float32))
            else:
                terms = model.sample_terms(
                    x,
                    self.chunk,
                    seed=self.seed_generator,
                    terms=("log_px_z", "log_pz", "log_qz"),
                    encoding=encoding,
                    **self.sampler_options,
                )
            log_w = BoundLoss.log_weights(terms)  # [batch, chunk]
            log_sum_w = tf.reduce_logsumexp(tf.stack([log_sum_w, tf.reduce_logsumexp(log_w, axis=1)]), axis=0)
            sum_log_w += tf.reduce_sum(log_w, axis=1)
            if self.top:
                top_log_w = tf.math.top_k(tf.concat([top_log_w, log_w], axis=1), k=self.top, sorted=False).values
                log_sum_w2 = tf.reduce_logsumexp(tf.stack([log_sum_w2, tf.reduce_logsumexp(2.0 * log_w, axis=1)]), axis=0)
            if self.num_groups:
                grouped = tf.reshape(log_w[:, : self.num_groups * self.group], [-1, self.num_groups, self.group])
                sum_iwae += tf.reduce_sum(logmeanexp(grouped, axis=2), axis=1)
            sum_kl += tf.reduce_sum(terms["log_qz"] - terms["log_pz"], axis=1)
            sum_reconstruction += tf.reduce_sum(terms["log_px_z"], axis=1)
        diagnostics_statistics = {"top_log_w": top_log_w, "log_sum_w2": log_sum_w2} if self.top else {}
        if self.estimate is not None:  # the training estimate on q's own samples (one chunk of them)
            names = tuple(dict.fromkeys(("log_px_z",) + tuple(self.estimate.required_terms)))
            own = model.sample_terms(x, self.chunk, seed=self.estimate_generator, terms=names, encoding=encoding)
            diagnostics_statistics["estimate"] = tf.cast(self.estimate.bound(own), tf.float32)
            diagnostics_statistics["posterior_reconstruction"] = tf.reduce_mean(own["log_px_z"], axis=1)
        return {
            **diagnostics_statistics,
            "log_sum_w": log_sum_w,
            "sum_log_w": sum_log_w,
            "sum_iwae": sum_iwae,
            "sum_kl": sum_kl,
            "sum_reconstruction": sum_reconstruction,
            "posterior_mean": tf.cast(model.posterior_mean(x), tf.float32),
        }


def check_unweighted(dataset, name="data"):
    """Refuse a dataset of (x, y, sample_weight) batches: the estimators give log p(x) per example, unweighted."""
    spec = dataset.element_spec
    if isinstance(spec, tuple) and len(spec) >= 3:
        raise ValueError(
            f"{name} holds (x, y, sample_weight) batches, but log p(x) is estimated per example and not weighted: "
            "give batches of x (or (x, y)), and weight the per-example estimates (return_per_example=True) "
            f"yourself. Received: {name} with elements of {len(spec)} parts"
        )


def check_finite_per_example(values, what, cause):
    """Raise a ValueError naming the examples (in data's order) whose estimate `values[i]` is not finite.

    An estimate of -inf or NaN would poison every mean over examples, silently: every estimator of this
    module and of `vizoo.ais` stops here instead. `cause` says which weights were all zero or NaN.
    """
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        shown = f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}"
        raise ValueError(
            f"{what} is not finite for {len(bad)} example(s) (in data's order: {shown}): {cause}, so the model gives "
            "those x no probability at its samples. Check the data against the likelihood (its support, its scale) "
            f"and the model's weights. Received: data with non-finite estimates at examples {bad[:10].tolist()}"
        )


def log_likelihood(
    model,
    data,
    k=5000,
    batch_size=100,
    train_k=None,
    seed=None,
    return_per_example=False,
    jit_compile=False,
    chunk_elements=None,
    precision=None,
    verbose=0,
    proposal_samples=None,
    diagnostics=True,
    posterior_kl=False,
    **sampler_options,
):
    """Importance-sampled log p(x) of a trained model, with diagnostics.

    Args:
        model: a vizoo model (e.g. `VAE`).
        data: `[num_examples, input_dim]` array, or a `tf.data.Dataset` of
            batches of x (or of (x, ...) tuples).
        k: int, importance samples per example (5000 as in Burda et al.).
        batch_size: int, examples per batch when `data` is an array.
        train_k: int, k of the training bound to report (`iwae_k`); default
            the compiled loss's k (1 if not compiled), at most k (then the
            result's `train_k_note` says so).
        seed: optional int, for reproducible estimates.
        return_per_example: also return the per-example log p(x) estimates
            (and with `diagnostics`, the per-example ESS and k-hat).
        jit_compile: bool, compile the sampling loop with XLA (measure first:
            on CPU it was 3-4x slower).
        chunk_elements: int, cap on the floats of one chunk's largest
            `[batch, chunk, input_dim]` tensor (default 2**21); memory grows
            with it, not with k. A posterior whose samples carry a larger
            per-sample tensor (a hierarchical posterior's K + 1 auxiliary
            samples) counts that size instead of input_dim.
        precision: None (the model's own policy), `"float32"`,
            `"mixed_bfloat16"` or `"mixed_float16"`: evaluate a copy of the
            model computing in that precision (same weights; densities and
            log-sum-exps stay float32). See `vizoo.precision` and the README
            for the measured NLL difference and speed.
        verbose: 0 (silent, the default), 1 (a Keras progress bar over the
            batches with the ETA and the running NLL) or 2 (one line at the
            end). `train.py` shows the bar unless run with `--verbose 0`.
        proposal_samples: for a posterior with no density (`has_density`
            False) only: how many of its samples per example the Gaussian
            proposal is fitted to (mean and full covariance; default 1000).
        diagnostics: bool, also compute, from the same samples, each example's
            effective sample size and the Pareto k-hat of its weights' tail
            (`vizoo.diagnostics`; k-hat > 0.7: that example's estimate is
            unreliable) [1, 2]. log p(x) is bit-identical either way.
        posterior_kl: bool, for a hierarchical posterior (HVM, IWHVI, SIVI)
            only: also report `posterior_kl_lower` and `posterior_kl_upper`,
            an interval on KL(q(z|x) || p(z|x)) from the lower and upper
            bounds on log q with the evaluation's K (at least 1) and this
            log p(x) estimate (`vizoo.ais.posterior_kl_interval`; an extra
            pass of 100 samples per example).
        **sampler_options: passed to `model.sample_terms`, e.g.
            `num_reverse_samples=1000` for a `HierarchicalPosterior` (the
            evaluation-time K; default the posterior's own), and its
            `reverse_model="sivi"` (a learned-tau model's SIVI estimate,
            tau = q(psi|x), for comparison). Not the compiled
            loss's: evaluation states its own, and records every option it
            used in `sampler_options` (defaults included).

    Returns:
        dict (all per example, in nats unless said otherwise):
        `log_likelihood` (mean log p(x) estimate), `nll` (its negation),
        `elbo`, `iwae_k` (the IWAE bound at `train_k`, from groups of
        `train_k` of the same samples), `kl` (Monte-Carlo KL(q(z|x) || p(z))),
        `reconstruction` (E_q log p(x|z)), `active_units` (count with
        Cov_x(E_q[z_i]) > 0.01, Burda et al.; for flows, hierarchical and
        implicit posteriors `posterior_mean`'s location summary stands in for
        E_q[z]) out of `latent_units` (the
        size of `model.posterior_mean`: the SBN's first layer), `bits_per_dim` (nll / (D ln 2),
        meaningful for discrete data), `k`, `train_k`, `num_examples`,
        and with `return_per_example`, `per_example_log_likelihood`.
        When the posterior's log q(z|x) is an estimate (`exact_density` False,
        e.g. a hierarchical posterior's IWHVI estimate log q^_K with K reverse
        samples, an upper bound on log q in expectation), each weight
        p(x, z) / q^_K(z|x) is still an unbiased estimate of p(x) (importance
        sampling on the space of z and its K + 1 psi's: E over psi_0 ~ q(psi|z, x)
        and psi_1..K ~ tau of 1 / q^_K(z|x) is exactly 1 / q(z|x)), so log p(x)
        is still consistent in k and a stochastic lower bound, as with an exact
        log q, but from noisier weights: further below log p(x) at a given k
        (less so as K grows and tau approaches q(psi|z, x)). The result then has
        `log_likelihood_is_lower_bound: True` (the name says that log q was
        estimated; every importance-sampled `nll` is an upper bound in expectation),
        `sampler_options` records every sampler option used (the posterior's
        defaults included; `{}` for a posterior with none). `proposal` names
        the importance proposal: `"posterior"` (q itself), or for a posterior
        with no density `"fitted_gaussian"`: a Gaussian r(z|x) fitted per
        example to `proposal_samples` of q's samples (an unbiased estimate of
        p(x) still, so log p(x) stays a stochastic lower bound); `elbo`,
        `iwae_k`, `kl` and `reconstruction` are then those of r, not of q.
        A model with no density compiled with an estimate that reads none
        (AVB) also gets, from one chunk of q's own samples per example:
        `training_estimate` (the loss's value, for AVB the ELBO estimate
        E_q[log p(x|z)] - KL^), `training_estimate_gap` (log p(x) minus it: its
        true value for an ELBO is KL(q(z|x) || p(z|x)) >= 0, so a negative gap
        beyond ~3 `training_estimate_gap_se` shows an estimate above log p(x)),
        `posterior_reconstruction` (E_q log p(x|z)), `posterior_kl_lower_bound`
        (E_q log p(x|z) - log p(x), below the true KL(q || p(z))) and, for a
        loss with an adversary, `adversary_kl` (its KL(q || p(z)) estimate).
        These comparisons are as good as log p(x)'s estimate: it is a
        stochastic lower bound, so where the importance weights are unreliable
        (`pareto_k_exceeded`) the gap reads too low and the KL lower bound too high.
        For a compiled model, `training_loss` names the compiled loss and
        `training_loss_is_bound` says whether its value is a bound (False for
        an estimate such as `RenyiLoss` with alpha < 0).
        With `diagnostics` (the default), the importance weights' reliability,
        from the same samples: `ess_mean`, `ess_min` (effective sample size
        (sum w)^2 / sum w^2 per example, out of k; k when q = p(z|x)),
        `pareto_k_max` (the largest k-hat; NaN if none could be fitted),
        `pareto_k_threshold` (min(1 - 1/log10 k, 0.7): 0.7 from k = 2154 on,
        0.667 at k = 1000; `vizoo.diagnostics.pareto_k_threshold`), `pareto_k_exceeded` and
        `pareto_k_exceeded_fraction` (count and fraction of examples with
        k-hat above it), `pareto_k_worst` (indices of the up to 10 examples
        with the largest k-hat, largest first, in the order of `data`),
        `pareto_k_tail_size` (M, the number of largest weights fitted),
        `pareto_k_not_fitted` (examples whose k-hat is NaN, not counted above:
        fewer than 5 weights above the threshold (k < 21), or a tail of ties,
        under 90% distinct: weights equal up to float rounding as when
        q = p(z|x), or the few values of discrete latents), and with
        `return_per_example`,
        `per_example_ess` and `per_example_pareto_k`. See docs/evaluation.md.

    Example:
        >>> result = vizoo.evaluate.log_likelihood(model, x_test, k=5000)
        >>> print(result["nll"], result["active_units"])
        >>> print(result["pareto_k_exceeded"], result["pareto_k_worst"])  # examples whose estimate is unreliable
        >>> # A hierarchical posterior: an evaluation-time K, and a lower bound.
        >>> result = vizoo.evaluate.log_likelihood(model, x_test, k=1000, num_reverse_samples=100)
        >>> result["log_likelihood_is_lower_bound"]
        True

    References:
        [1] Vehtari, A., Simpson, D., Gelman, A., Yao, Y. & Gabry, J. (2024). Pareto smoothed
            importance sampling. JMLR 25(72), 1-58. https://arxiv.org/abs/1507.02646
        [2] Yao, Y., Vehtari, A., Simpson, D. & Gelman, A. (2018). Yes, but did it work?:
            Evaluating variational inference. ICML. https://arxiv.org/abs/1802.02538
    """
    check_vizoo_model(model, "log_likelihood")
    k = check_positive_int(k, "k")
    diagnostics = check_bool(diagnostics, "diagnostics")
    jit_compile = check_bool(jit_compile, "jit_compile")
    return_per_example = check_bool(return_per_example, "return_per_example")
    # The M largest log-weights per example and the (M+1)-th, the threshold of PSIS's tail fit.
    top = diagnostics_module.tail_size(k) + 1 if diagnostics else 0
    batch_size = check_positive_int(batch_size, "batch_size")
    train_k_note = None
    if train_k is None:  # the compiled loss's k, at most k (the caller did not ask for more)
        train_k = min(model.num_samples, k)
        if train_k < model.num_samples:
            train_k_note = f"the compiled loss's k={model.num_samples} is more than k={k}: iwae_k is at train_k={k}"
    train_k = check_positive_int(train_k, "train_k")
    if train_k > k:
        raise ValueError(f"train_k must be at most k={k}. Received: train_k={train_k}")
    if proposal_samples is None:
        proposal_samples = 0 if model.posterior.has_density else PROPOSAL_SAMPLES
    elif model.posterior.has_density:
        raise ValueError(
            "proposal_samples applies to posteriors with no density (has_density False); "
            f"{type(model.posterior).__name__} is its own proposal. Received: proposal_samples={proposal_samples!r}"
        )
    else:
        proposal_samples = check_positive_int(proposal_samples, "proposal_samples")
        if proposal_samples < 2:  # a covariance needs two samples at least
            raise ValueError(f"proposal_samples must be at least 2. Received: proposal_samples={proposal_samples}")
    unknown = sorted(set(sampler_options) - set(model.posterior.sampler_options))
    if unknown:
        raise ValueError(
            f"{type(model.posterior).__name__} takes the sampler options {list(model.posterior.sampler_options)}. "
            f"Received: {unknown}"
        )
    # Every sampler option used, the posterior's defaults included (its attribute of the option's name).
    sampler_options = {
        name: sampler_options[name] if name in sampler_options else getattr(model.posterior, name)
        for name in model.posterior.sampler_options
    }
    compiled_loss = getattr(model, "loss", None)  # None before compile
    # A density-free model trained on an estimate (AVB): that estimate is also measured, beside log p(x).
    estimate = (
        compiled_loss
        if isinstance(compiled_loss, BoundLoss) and proposal_samples and not compiled_loss.is_bound
        and not compiled_loss.needs_density and not compiled_loss.sampler_options
        else None
    )
    if chunk_elements is not None:
        check_positive_int(chunk_elements, "chunk_elements")
    if check_bool(posterior_kl, "posterior_kl") and not hasattr(model.posterior, "reverse_log_weights"):
        raise ValueError(
            "posterior_kl applies to hierarchical posteriors (bounds on log q from reverse samples). "
            f"Received: posterior_kl={posterior_kl!r} with {type(model.posterior).__name__}"
        )
    data = model.check_data(data, "data")
    if isinstance(data, tf.data.Dataset):
        check_unweighted(data)
        dataset = data.map(lambda *element: element[0]) if isinstance(data.element_spec, tuple) else data
    else:
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
    if not model.built:
        model.build((None, model.input_dim))
    if precision is not None:
        model = with_precision(model, precision)

    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
    num_batches = int(dataset.cardinality())  # negative when unknown
    progress = keras.utils.Progbar(
        num_batches if num_batches >= 0 else None, verbose=verbose, stateful_metrics=["nll"], unit_name="batch"
    )
    per_example = {key: [] for key in ("log_sum_w", "sum_log_w", "sum_iwae", "sum_kl", "sum_reconstruction")}
    posterior_means = []
    estimates = {"estimate": [], "posterior_reconstruction": []}  # per batch, with `estimate`
    ess, pareto_k = [], []  # per batch
    passes, sized_for = None, 0
    per_sample = max(model.input_dim, model.posterior.sample_elements(**sampler_options))
    with input_errors():
        for x in dataset:
            x = tf.cast(x, tf.float32)
            if int(x.shape[0]) > sized_for:
                # Chunks sized for the largest batch so far (a dataset's first is usually its largest; a larger
                # one later gets smaller chunks, within the memory budget). The noise stream goes on.
                chunk = _chunk_size(k, int(x.shape[0]), per_sample, train_k, chunk_elements)
                chunks = [(chunk, k // chunk)] + ([(k % chunk, 1)] if k % chunk else [])
                passes = _compiled_passes(
                    model, chunks, train_k, seed, jit_compile, sampler_options, proposal_samples, top, estimate,
                    restart=passes is None,
                )
                num_iwae_groups = sum(groups for _, groups in passes)  # k // train_k, whatever the chunk
                sized_for = int(x.shape[0])
            results = [fn(x) for fn, _ in passes]
            for key in per_example:
                values = np.stack([r[key].numpy().astype(np.float64) for r in results])
                combine = np.logaddexp.reduce if key == "log_sum_w" else np.sum
                per_example[key].append(combine(values, axis=0))
            posterior_means.append(results[0]["posterior_mean"].numpy().astype(np.float64))
            if estimate is not None:  # from the first pass's chunk of q's samples
                for key in estimates:
                    estimates[key].append(results[0][key].numpy().astype(np.float64))
            if top:  # reduced per batch: memory stays [batch, M + 1]
                log_sum_w2 = np.logaddexp.reduce([r["log_sum_w2"].numpy().astype(np.float64) for r in results], axis=0)
                ess.append(diagnostics_module.effective_sample_size(per_example["log_sum_w"][-1], log_sum_w2))
                top_log_w = np.concatenate([r["top_log_w"].numpy() for r in results], axis=1)
                pareto_k.append(diagnostics_module.pareto_k_hat(top_log_w, num_samples=k))
            if verbose:
                running_nll = math.log(k) - float(np.mean(np.concatenate(per_example["log_sum_w"])))
                progress.update(len(posterior_means), values=[("nll", running_nll)])
    if not posterior_means:
        raise ValueError("data must contain at least one example. Received: an empty data set")
    if verbose and num_batches < 0:
        progress.update(len(posterior_means), values=[("nll", running_nll)], finalize=True)

    stats = {key: np.concatenate(values) for key, values in per_example.items()}
    log_px = stats["log_sum_w"] - math.log(k)
    check_finite_per_example(log_px, "log p(x)", f"every one of the k={k} weights p(x, z) / q(z|x) is zero or not a number")
    means = np.concatenate(posterior_means)
    nll = -float(np.mean(log_px))
    result = {
        "log_likelihood": -nll,
        "nll": nll,
        "elbo": float(np.mean(stats["sum_log_w"])) / k,
        "iwae_k": float(np.mean(stats["sum_iwae"])) / num_iwae_groups if num_iwae_groups else float("nan"),
        "kl": float(np.mean(stats["sum_kl"])) / k,
        "reconstruction": float(np.mean(stats["sum_reconstruction"])) / k,
        "active_units": int(np.sum(np.var(means, axis=0) > _ACTIVE_UNIT_THRESHOLD)),
        "latent_units": int(means.shape[1]),
        "bits_per_dim": nll / (model.input_dim * math.log(2.0)),
        "k": k,
        "train_k": train_k,
        # The sampler options used (the posterior's defaults included) and the importance proposal.
        "sampler_options": dict(sampler_options),
        "proposal": "fitted_gaussian" if proposal_samples else "posterior",
        "num_examples": int(log_px.shape[0]),
    }
    if not model.posterior.exact_density and not proposal_samples:
        # log q is an estimate: the weights are still unbiased (see the docstring), but noisier than with the
        # exact log q. (A fitted proposal's log r is exact.)
        result["log_likelihood_is_lower_bound"] = True
    if proposal_samples:
        result["proposal_samples"] = proposal_samples
    # The training objective, and whether it is a bound or an estimate (the model's as given: a `precision`
    # copy is not compiled).
    if isinstance(compiled_loss, BoundLoss):
        result["training_loss"] = type(compiled_loss).__name__
        result["training_loss_is_bound"] = bool(compiled_loss.is_bound)
    if estimate is not None:
        result.update(_estimate_summary(estimate, log_px, {key: np.concatenate(v) for key, v in estimates.items()}))
    if train_k_note is not None:
        result["train_k_note"] = train_k_note
    if top:
        ess, pareto_k = np.concatenate(ess), np.concatenate(pareto_k)
        result.update(_diagnostics_summary(ess, pareto_k, top - 1, k))
    if posterior_kl:  # an interval on KL(q || p(z|x)) = log p(x) - ELBO (vizoo/ais.py)
        from vizoo.ais import posterior_kl_interval

        interval = posterior_kl_interval(
            model, dataset, log_px, num_reverse_samples=max(1, sampler_options["num_reverse_samples"]), seed=seed
        )
        result.update(posterior_kl_lower=interval["kl_lower"], posterior_kl_upper=interval["kl_upper"])
    if return_per_example:
        result["per_example_log_likelihood"] = log_px
        if top:
            result["per_example_ess"] = ess
            result["per_example_pareto_k"] = pareto_k
    return result


def _estimate_summary(loss, log_px, values):
    """The result's keys comparing a training estimate (e.g. AVB's ELBO estimate) with log p(x).

    `values`: per-example `estimate` (the loss's value on q's own samples) and `posterior_reconstruction`
    (E_q log p(x|z) on them), float64 `[n]`; `log_px` the per-example log p(x) estimates.
    """
    n = len(log_px)

    def standard_error(per_example):
        return float(np.std(per_example, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    gap = log_px - values["estimate"]
    summary = {
        "training_estimate": float(np.mean(values["estimate"])),
        # log p(x) - ELBO^: for an exact ELBO this is KL(q(z|x) || p(z|x)) >= 0, so a gap below 0 beyond a few
        # standard errors shows the estimate above log p(x) (the KL estimate too small).
        "training_estimate_gap": float(np.mean(gap)),
        "training_estimate_gap_se": standard_error(gap),
        "posterior_reconstruction": float(np.mean(values["posterior_reconstruction"])),
        # KL(q(z|x) || p(z)) = E_q log p(x|z) - log p(x) + KL(q || p(z|x)) >= E_q log p(x|z) - log p(x).
        "posterior_kl_lower_bound": float(np.mean(values["posterior_reconstruction"] - log_px)),
    }
    if loss.needs_adversary:  # E_q log p(x|z) - ELBO^: the adversary's estimate of KL(q(z|x) || p(z))
        summary["adversary_kl"] = float(np.mean(values["posterior_reconstruction"] - values["estimate"]))
    return summary


# Examples named in `pareto_k_worst`.
_WORST_EXAMPLES = 10


def _diagnostics_summary(ess, pareto_k, tail_size, num_samples):
    """The result's summaries of per-example ESS `[n]` and k-hat `[n]` (NaN where not fitted): JSON-ready."""
    fitted = np.flatnonzero(~np.isnan(pareto_k))
    threshold = diagnostics_module.pareto_k_threshold(num_samples)
    exceeded = int(np.sum(pareto_k[fitted] > threshold))
    worst = fitted[np.argsort(-pareto_k[fitted], kind="stable")[:_WORST_EXAMPLES]]
    return {
        "ess_mean": float(np.mean(ess)),
        "ess_min": float(np.min(ess)),
        "pareto_k_max": float(np.max(pareto_k[fitted])) if len(fitted) else float("nan"),
        "pareto_k_threshold": threshold,
        "pareto_k_exceeded": exceeded,
        "pareto_k_exceeded_fraction": exceeded / len(pareto_k),
        "pareto_k_worst": [int(i) for i in worst],
        "pareto_k_not_fitted": int(len(pareto_k) - len(fitted)),
        "pareto_k_tail_size": int(tail_size),
    }


# Annealed importance sampling and the estimators that check importance sampling (vizoo/ais.py), re-exported.
from vizoo.ais import (  # noqa: E402
    ais_log_likelihood,
    bdmc,
    harmonic_mean_log_likelihood,
    posterior_kl_interval,
    simulate,
    simulated_sandwich,
)


if __name__ == "__main__":  # python -m vizoo.evaluate RUN_DIR [--ais]
    import sys

    from vizoo.ais import main

    sys.exit(main())
