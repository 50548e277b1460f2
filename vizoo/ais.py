"""Annealed importance sampling, bidirectional Monte Carlo and the other estimators that check importance sampling.

`vizoo.evaluate.log_likelihood` importance-samples log p(x) with q(z|x) as the proposal: a stochastic
lower bound exactly as good as q. This module gives the field's answers:

- `ais_log_likelihood`: annealed importance sampling (Neal 2001) with HMC transitions, as Wu et al.
  (2017) evaluate decoder-based models. The intermediate targets are

      f_t(z) = r(z)^(1 - beta_t) p(x, z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1,

  with r = q(z|x) (where q has a density at any z; else a Gaussian fitted to q's samples, as
  `log_likelihood` does) or r = p(z). Each chain starts at z_0 ~ r and accumulates

      log w = sum_{t=1..T} (beta_t - beta_{t-1}) [log p(x, z_{t-1}) - log r(z_{t-1})],

  with z_t drawn by an HMC transition that leaves f_t invariant. E[w] = p(x), so the estimate
  log mean_chains w is a stochastic lower bound on log p(x) that tends to it as T grows.
- `bdmc`: bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015) on data simulated from the model,
  (z*, x) ~ p(z) p(x|z): forward AIS (a stochastic lower bound) and reverse AIS started at the exact
  posterior sample z* (its weights estimate 1/p(x): a stochastic upper bound). The gap bounds the
  error of forward AIS at that schedule, on data like the model's own.
- `simulated_sandwich`: the same idea at the cost of k + 1 decoder passes: the IWAE-k lower bound and
  the upper bound log (1/(k+1)) sum_{i=0..k} p(x, z_i)/q(z_i|x), with z_0 = z* and z_1..k ~ q.
- `posterior_kl_interval`: for a hierarchical posterior, whose log q(z|x) has no closed form, the
  IWHVI upper bound (psi_0 included) and the importance-sampled lower bound (psi_0 dropped) on
  log q give an interval on the ELBO, hence on KL(q(z|x) || p(z|x)) = log p(x) - ELBO.
- `harmonic_mean_log_likelihood`: the variational harmonic-mean estimator (Kingma & Welling 2014,
  appendix D), a diagnostic only: see its docstring and docs/evaluation.md.

HMC. Each transition draws a momentum p ~ N(0, I), runs `leapfrog_steps` leapfrog steps with the
per-dimension step sizes epsilon * s (s: r's standard deviations, estimated from samples of r drawn
apart from the chains; the same as HMC with the mass matrix diag(1/s^2)), and accepts by the
Metropolis rule on the Hamiltonian -log f_t(z) + |p|^2/2. The step size epsilon is one per example,
shared by its chains: the chains of an example sample the same targets, so pooling their acceptance
is a less noisy signal than one chain's, and examples differ (a sharp posterior needs small steps).
After every transition it moves toward the target acceptance rate (0.65, Neal 2011):
log epsilon += adaptation_rate * (mean acceptance probability - 0.65).

Validity of the weights under step-size adaptation. Each transition, given its step size, leaves its
own target f_t invariant (it is an exact HMC kernel), and the weights use only the states before it.
The step size itself is set from the acceptance of the previous transitions of the example's own
chains, so it depends (weakly, pooled over `num_chains` chains) on each chain's past: strictly this
makes the scheme an adaptive one whose weights are unbiased only up to that dependence, which
shrinks as the number of chains grows and vanishes when the step size has settled. With
`adapt_step_size=False` the step size is fixed and E[w] = p(x) exactly. tests/test_ais.py checks
both against pPCA's exact log p(x), and the adaptive one against quadrature on a nonlinear model.

References:
    Neal, R. M. (2001). Annealed importance sampling. Statistics and Computing 11, 125-139.
    Neal, R. M. (2011). MCMC using Hamiltonian dynamics. Handbook of Markov Chain Monte Carlo.
    Grosse, R., Ghahramani, Z. & Adams, R. P. (2015). Sandwiching the marginal likelihood using
        bidirectional Monte Carlo. https://arxiv.org/abs/1511.02543
    Wu, Y., Burda, Y., Salakhutdinov, R. & Grosse, R. (2017). On the quantitative analysis of
        decoder-based generative models. ICLR. https://arxiv.org/abs/1611.04273
    Kingma, D. P. & Welling, M. (2014). Auto-encoding variational Bayes, appendix D. ICLR.
    Sobolev, A. & Vetrov, D. (2019). Importance weighted hierarchical variational inference. NeurIPS.
"""

import math
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

from vizoo.evaluate import PROPOSAL_SAMPLES, _ELEMENTS_PER_CHUNK, _fit_gaussian, check_finite_per_example, check_unweighted
from vizoo.utils import (
    as_seed_generator, check_bool, check_choice, check_non_negative_int, check_positive_int, draw_seed, is_finite_real,
)

SCHEDULES = ("sigmoid", "linear")
INITIALS = ("posterior", "prior")
# The acceptance rate the step size is adapted toward (Neal 2011; Wu et al. 2017).
TARGET_ACCEPTANCE = 0.65
# Step size at the first transition, relative to r's standard deviations.
INITIAL_STEP_SIZE = 0.2
MAX_STEP_SIZE = 100.0
# log epsilon moves by this times (acceptance - 0.65) per transition: from acceptance 0 the step size
# shrinks 15% a transition, so a poor start is corrected within tens of transitions.
ADAPTATION_RATE = 0.25
MAX_ADAPTATION_RATE = 10.0
# Samples of r, drawn apart from the chains, that give the per-dimension scales s of the leapfrog steps.
SCALE_SAMPLES = 256
# The sigmoid schedule's steepness delta (Grosse et al. 2015, Wu et al. 2017 use 4).
SIGMOID_DELTA = 4.0
# Progress-bar updates per chunk of examples.
_SEGMENTS_PER_CHUNK = 20


def annealing_schedule(num_steps, schedule="sigmoid"):
    """beta_0 = 0 < ... < beta_T = 1, `[num_steps + 1]` float64.

    `"linear"`: beta_t = t / T. `"sigmoid"` (Grosse et al. 2015): beta~_t = sigmoid(delta (2t/T - 1))
    with delta = 4, rescaled to [0, 1]: small steps near the prior end and the posterior end, where
    the targets change fastest.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    check_choice(schedule, "schedule", SCHEDULES)
    t = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    if schedule == "linear":
        return t
    s = 1.0 / (1.0 + np.exp(-SIGMOID_DELTA * (2.0 * t - 1.0)))
    return (s - s[0]) / (s[-1] - s[0])


# ------------------------------------------------------------------ the reference distribution r(z)
class _Reference:
    """r(z): the initial distribution of the chains, per example.

    kind "posterior": q(z|x) itself (a posterior with `has_log_prob` and an exact density);
    kind "fitted_gaussian": a full-covariance Gaussian fitted to `PROPOSAL_SAMPLES` of q's samples
    (any other posterior: flows, hierarchical, implicit); kind "prior": p(z).
    `state` holds r's parameters for a chunk of examples (tensors the compiled loop takes as input).
    """

    def __init__(self, model, kind):
        self.model, self.kind = model, kind

    def build(self, x, seed_generator):
        """r's parameters for x `[batch, D]`: a dict of tensors."""
        model = self.model
        if self.kind == "posterior":
            return dict(model.encode(x))
        if self.kind == "fitted_gaussian":
            draws = model.sample_terms(x, PROPOSAL_SAMPLES, seed=seed_generator, terms=("z",))["z"]
            loc, scale_tril = _fit_gaussian(draws)
            return {"loc": tf.cast(loc, tf.float32), "scale_tril": tf.cast(scale_tril, tf.float32)}
        return {"batch": tf.zeros(tf.shape(x)[:1])}

    def sample(self, state, num, seed_generator):
        """z ~ r, `[batch, num, latent]`."""
        model = self.model
        if self.kind == "posterior":
            eps = model.posterior.sample_noise(state, num, seed=seed_generator)
            return tf.cast(model.posterior.transform(state, eps)[0], tf.float32)
        if self.kind == "fitted_gaussian":
            loc, scale_tril = state["loc"], state["scale_tril"]
            eps = keras.random.normal((tf.shape(loc)[0], num, tf.shape(loc)[1]), seed=seed_generator)
            return loc[:, None, :] + tf.einsum("bij,bkj->bki", scale_tril, eps)
        batch = int(state["batch"].shape[0])
        z = model.sample_prior(batch * num, seed_generator)
        return tf.reshape(tf.cast(z, tf.float32), [batch, num, -1])

    def log_prob(self, state, z):
        """log r(z) for z `[batch, chains, latent]` -> `[batch, chains]` (float32)."""
        model = self.model
        if self.kind == "posterior":
            params = {key: value[:, None] for key, value in state.items()}
            return tf.cast(model.posterior.log_prob(z, params), tf.float32)
        if self.kind == "fitted_gaussian":
            loc, scale_tril = state["loc"], state["scale_tril"]
            centred = z - loc[:, None, :]  # [batch, chains, d]
            # L^-1 (z - loc) for every chain: a triangular solve against [batch, d, chains].
            white = tf.linalg.triangular_solve(scale_tril, tf.transpose(centred, [0, 2, 1]), lower=True)
            dim = tf.cast(tf.shape(loc)[1], tf.float32)
            log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(scale_tril)), axis=1)  # [batch]
            return (
                -0.5 * tf.reduce_sum(tf.square(white), axis=1)
                - 0.5 * dim * math.log(2.0 * math.pi)
                - log_det[:, None]
            )
        return tf.cast(model.log_prior(z), tf.float32)


def _reference_kind(model, initial):
    if initial == "prior":
        return "prior"
    posterior = model.posterior
    return "posterior" if posterior.has_log_prob and posterior.exact_density else "fitted_gaussian"


def _check_continuous(model, caller):
    from vizoo.utils import check_vizoo_model

    check_vizoo_model(model, caller)
    if model.latent_dim is None or not model.posterior.reparameterized:
        raise ValueError(
            f"{caller} needs a model with one continuous latent vector (HMC moves z by its gradient). "
            f"Received: {type(model).__name__} with {type(model.posterior).__name__}"
        )
    if not model.built:
        model.build((None, model.input_dim))


# ------------------------------------------------------------------ the compiled annealing loop
class _AnnealSegment:
    """Transitions t = start .. stop - 1 of an annealing run, for a chunk of examples (in a `tf.function`).

    A callable object rather than a closure (one trace per object; see `evaluate._BatchStatistics`).
    State: z `[batch, chains, d]`, log w `[batch, chains]` (float64), log epsilon `[batch]`, the sum of
    the mean acceptance probabilities `[batch]`. Each step t adds (beta_t - beta_{t-1}) (log p(x, z) -
    log r(z)) to log w, then (for t < T) moves z by one HMC transition that leaves f_t invariant.
    """

    def __init__(self, model, kind, leapfrog_steps, adapt_step_size, adaptation_rate):
        # A weak reference: the function lives in _COMPILED under the model, and must not keep it alive.
        self.model_ref, self.kind = weakref.ref(model), kind
        self.leapfrog_steps = leapfrog_steps
        self.adapt_step_size = adapt_step_size
        self.adaptation_rate = adaptation_rate

    def _energy_terms(self, x, state, z):
        """log p(x, z) and log r(z) `[batch, chains]` and their gradients in z."""
        model = self.model_ref()
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            terms = model.joint_terms(x, z)
            log_joint = tf.cast(terms["log_px_z"] + terms["log_pz"], tf.float32)
            log_r = _Reference(model, self.kind).log_prob(state, z)
            joint_sum, r_sum = tf.reduce_sum(log_joint), tf.reduce_sum(log_r)
        grad_joint = tape.gradient(joint_sum, z)
        grad_r = tape.gradient(r_sum, z)
        del tape
        return log_joint, log_r, grad_joint, grad_r

    def __call__(self, x, state, betas, scales, z, log_w, log_step, accept_sum, seed, start, stop):
        num_steps = tf.shape(betas)[0] - 1
        cached = self._energy_terms(x, state, z)

        def transition(t, z, cached, log_step):
            beta = tf.cast(betas[t], tf.float32)
            log_joint, log_r, grad_joint, grad_r = cached

            def log_target(log_joint, log_r):
                return (1.0 - beta) * log_r + beta * log_joint

            def grad_target(grad_joint, grad_r):
                return (1.0 - beta) * grad_r + beta * grad_joint

            key = tf.random.experimental.stateless_fold_in(seed, t)
            momentum = tf.random.stateless_normal(tf.shape(z), seed=tf.random.experimental.stateless_fold_in(key, 0))
            uniform = tf.random.stateless_uniform(
                tf.shape(log_joint), seed=tf.random.experimental.stateless_fold_in(key, 1)
            )
            h = tf.exp(log_step)[:, None, None] * scales  # per-example, per-dimension step [batch, 1, d]
            p = momentum + 0.5 * h * grad_target(grad_joint, grad_r)

            def leapfrog(i, z_new, p, terms):
                z_new = z_new + h * p
                terms = self._energy_terms(x, state, z_new)
                p = p + h * grad_target(terms[2], terms[3])
                return i + 1, z_new, p, terms

            _, z_new, p, new = tf.while_loop(
                lambda i, *_: i < self.leapfrog_steps, leapfrog, (tf.constant(0), z, p, cached)
            )
            p = p - 0.5 * h * grad_target(new[2], new[3])  # the last momentum step is a half step
            log_accept = (log_target(new[0], new[1]) - 0.5 * tf.reduce_sum(tf.square(p), axis=-1)) - (
                log_target(log_joint, log_r) - 0.5 * tf.reduce_sum(tf.square(momentum), axis=-1)
            )
            log_accept = tf.where(tf.math.is_nan(log_accept), -float("inf"), log_accept)  # diverged: reject
            accept = tf.math.log(uniform) < log_accept  # [batch, chains]
            z = tf.where(accept[..., None], z_new, z)
            cached = tuple(
                tf.where(accept[..., None] if a.shape.rank == 3 else accept, b, a) for a, b in zip(cached, new)
            )
            acceptance = tf.reduce_mean(tf.exp(tf.minimum(log_accept, 0.0)), axis=1)  # [batch]
            if self.adapt_step_size:
                log_step = log_step + self.adaptation_rate * (acceptance - TARGET_ACCEPTANCE)
            return z, cached, log_step, acceptance

        def step(t, z, log_w, log_step, accept_sum, cached):
            increment = tf.cast(betas[t] - betas[t - 1], tf.float64) * tf.cast(cached[0] - cached[1], tf.float64)
            log_w = log_w + increment
            z, cached, log_step, acceptance = tf.cond(
                t < num_steps,
                lambda: transition(t, z, cached, log_step),
                lambda: (z, cached, log_step, tf.zeros_like(log_step)),
            )
            return t + 1, z, log_w, log_step, accept_sum + acceptance, cached

        _, z, log_w, log_step, accept_sum, _ = tf.while_loop(
            lambda t, *_: t < stop, step, (start, z, log_w, log_step, accept_sum, cached)
        )
        return z, log_w, log_step, accept_sum


# model -> {(r's kind, leapfrog steps, adaptation, rate, jit_compile): compiled segment}: tracing costs ~1 s,
# so repeated evaluations of a model (several budgets, forward and reverse runs) reuse it.
_COMPILED = weakref.WeakKeyDictionary()


def _segment_function(model, kind, leapfrog_steps, adapt_step_size, adaptation_rate, jit_compile):
    functions = _COMPILED.setdefault(model, {})
    key = (kind, leapfrog_steps, bool(adapt_step_size), adaptation_rate, bool(jit_compile))
    if key not in functions:
        segment = _AnnealSegment(model, kind, leapfrog_steps, adapt_step_size, adaptation_rate)
        functions[key] = tf.function(segment, autograph=False, reduce_retracing=True, jit_compile=jit_compile)
    return functions[key]


def _anneal(compiled, x, state, betas, scales, z, log_step, seed, progress=None):
    """Run every step of `betas` on one chunk; returns (z, log w [batch, chains] float64, log epsilon, acceptance)."""
    num_steps = len(betas) - 1
    betas = tf.constant(betas, tf.float64)
    log_w = tf.zeros(z.shape[:2], tf.float64)
    accept_sum = tf.zeros(z.shape[:1], tf.float32)
    segment = max(1, -(-num_steps // _SEGMENTS_PER_CHUNK))
    for start in range(1, num_steps + 1, segment):
        stop = min(start + segment, num_steps + 1)
        z, log_w, log_step, accept_sum = compiled(
            x, state, betas, scales, z, log_w, log_step, accept_sum, seed, tf.constant(start), tf.constant(stop)
        )
        if progress is not None:
            progress(stop - start)
    transitions = max(num_steps - 1, 1)
    return z, log_w.numpy(), log_step, (accept_sum / transitions).numpy()


def _chain_statistics(log_w):
    """Per example, from log-weights `[batch, chains]` (float64): logmeanexp, its standard error and the ESS."""
    num_chains = log_w.shape[1]
    top = np.max(log_w, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # a row of -inf or NaN weights gives NaN here: the callers name it
        w = np.exp(log_w - top)
        mean = np.mean(w, axis=1)
        log_mean = np.log(mean) + top[:, 0]
    # Delta method: sd(log mean w) ~= sd(w) / (sqrt(C) mean w).
    se = np.std(w, axis=1, ddof=1) / (math.sqrt(num_chains) * mean) if num_chains > 1 else np.full_like(mean, np.nan)
    ess = np.sum(w, axis=1) ** 2 / np.sum(w**2, axis=1)
    return log_mean, se, ess


def _check_common(num_steps, num_chains, leapfrog_steps, schedule, initial, step_size, adaptation_rate):
    num_steps = check_positive_int(num_steps, "num_steps")
    num_chains = check_positive_int(num_chains, "num_chains")
    leapfrog_steps = check_positive_int(leapfrog_steps, "leapfrog_steps")
    check_choice(schedule, "schedule", SCHEDULES)
    check_choice(initial, "initial", INITIALS)
    # Upper limits far beyond any useful value: a step of 100 of r's standard deviations is rejected always, and a
    # rate above 10 swings the log step by more than e^3 per transition (larger ones overflow float32 to NaN steps).
    for name, value, most in (("step_size", step_size, MAX_STEP_SIZE), ("adaptation_rate", adaptation_rate, MAX_ADAPTATION_RATE)):
        if not (is_finite_real(value) and value > 0):
            raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
        if value > most:
            raise ValueError(f"{name} must be at most {most:g}. Received: {name}={value!r}")
    return num_steps, num_chains, leapfrog_steps


def _check_seed(seed):
    """None, an int in [0, 2**63), or (inside this module) a keras SeedGenerator; else a ValueError naming `seed`."""
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    seed = check_non_negative_int(seed, "seed")
    if seed >= 2**63:  # (Keras's seed state is int64)
        raise ValueError(f"seed must be below 2**63. Received: seed={seed}")
    return seed


def _fresh_seed():
    return int(np.random.SeedSequence().generate_state(1)[0] >> 1)


def _independent_seeds(seed):
    """Two seeds whose random streams are independent, from one (None: a fresh one): the simulation's and the
    estimator's (`utils.draw_seed`: the estimator seeded with the simulation's own int would draw its chains'
    noise equal to the simulation's)."""
    seed = _fresh_seed() if seed is None else seed
    return draw_seed(seed, 1), draw_seed(seed, 2)


def _chunk_examples(model, num_chains, batch_size, chunk_elements):
    """Examples per compiled call: at most `batch_size`, and [examples, chains, max(D, d)] within the budget."""
    batch_size = check_positive_int(batch_size, "batch_size")
    if chunk_elements is not None:
        check_positive_int(chunk_elements, "chunk_elements")
    budget = (chunk_elements or _ELEMENTS_PER_CHUNK) // (num_chains * max(model.input_dim, model.latent_dim))
    return max(1, min(batch_size, budget))


def _as_array(model, data, name="data"):
    data = model.check_data(data, name)
    if isinstance(data, tf.data.Dataset):
        check_unweighted(data, name)
        batches = [element[0] if isinstance(element, tuple) else element for element in data]
        data = np.concatenate([np.asarray(b) for b in batches]) if batches else np.zeros((0, model.input_dim))
    data = np.asarray(data, np.float32)
    if len(data) == 0:
        raise ValueError("data must contain at least one example. Received: an empty data set")
    return data


class _Runner:
    """The shared machinery of forward and reverse AIS: r, the compiled segment, the seeds and the progress bar."""

    def __init__(self, model, initial, leapfrog_steps, adapt_step_size, step_size, adaptation_rate, seed, jit_compile):
        self.model = model
        self.kind = _reference_kind(model, initial)
        self.reference = _Reference(model, self.kind)
        self.compiled = _segment_function(
            model, self.kind, leapfrog_steps, adapt_step_size, float(adaptation_rate), jit_compile
        )
        self.step_size = float(step_size)
        seed = _fresh_seed() if seed is None else int(seed)
        self.seed = seed
        self.seed_generator = as_seed_generator(seed)
        self.calls = 0

    def prepare(self, x):
        """r's parameters for x and the leapfrog scales s `[batch, 1, d]` from samples of r apart from the chains."""
        state = self.reference.build(x, self.seed_generator)
        draws = self.reference.sample(state, SCALE_SAMPLES, self.seed_generator)
        scales = tf.math.reduce_std(draws, axis=1, keepdims=True)
        scales = tf.maximum(scales, 1e-3 * tf.reduce_max(scales, axis=-1, keepdims=True) + 1e-12)
        return state, scales

    def run(self, x, state, scales, z, betas, progress=None):
        self.calls += 1
        seed = tf.constant([self.seed % (2**31 - 1), self.calls], tf.int32)
        log_step = tf.fill([x.shape[0]], math.log(self.step_size))
        return _anneal(self.compiled, x, state, betas, scales, z, log_step, seed, progress)


class _Progress:
    """A Keras progress bar over annealing steps (all chunks), with the ETA and a running value."""

    def __init__(self, total, verbose, name):
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
        self.bar = keras.utils.Progbar(total, verbose=verbose, stateful_metrics=[name], unit_name="step")
        self.done, self.name, self.value = 0, name, float("nan")

    def __call__(self, steps):
        self.done += steps
        # The running value once a chunk of examples is done (none before).
        self.bar.update(self.done, values=[] if math.isnan(self.value) else [(self.name, self.value)])


def ais_log_likelihood(
    model,
    data,
    num_steps=1000,
    num_chains=16,
    leapfrog_steps=10,
    schedule="sigmoid",
    initial="posterior",
    step_size=INITIAL_STEP_SIZE,
    adapt_step_size=True,
    adaptation_rate=ADAPTATION_RATE,
    batch_size=100,
    chunk_elements=None,
    seed=None,
    jit_compile=False,
    verbose=0,
):
    """log p(x) by annealed importance sampling with HMC (Neal 2001; Wu et al. 2017).

    Targets f_t(z) = r(z)^(1 - beta_t) p(x, z)^beta_t from r = q(z|x) (`initial="posterior"`) or p(z)
    (`initial="prior"`, where q is not used at all) to the posterior; `num_chains` chains per example,
    each a stochastic lower bound's worth of weight; the estimate is log mean_chains w. The chains of
    every example in a chunk run together in one compiled loop (`tf.while_loop` over the steps);
    chunks of examples keep the largest `[examples, chains, max(D, d)]` tensor within `chunk_elements`.
    See the module docstring for the HMC transitions, the step-size adaptation and the validity of the
    weights under it.

    Args:
        model: a trained vizoo model with one continuous latent vector (VAE and its posteriors).
        data: `[num_examples, input_dim]` array or a `tf.data.Dataset` of x (or of (x, ...) tuples).
        num_steps: int T, the annealing steps: T + 1 distributions from r to p(z|x), T - 1 HMC transitions
            between them. With
            T = 1 this is importance sampling from r with `num_chains` samples.
        num_chains: int, independent chains per example.
        leapfrog_steps: int, leapfrog steps per HMC transition (10 as in Wu et al.).
        schedule: `"sigmoid"` (Grosse et al. 2015) or `"linear"` (see `annealing_schedule`).
        initial: `"posterior"`: r = q(z|x) where the posterior has a density at any z (`has_log_prob`,
            the Gaussian posteriors), else a full-covariance Gaussian fitted per example to
            `evaluate.PROPOSAL_SAMPLES` of q's samples (flows, IAF, hierarchical, implicit posteriors);
            `"prior"`: r = p(z).
        step_size: float, the first transition's leapfrog step, relative to r's standard deviations.
        adapt_step_size: bool, adapt the step size of each example toward 0.65 acceptance.
        adaptation_rate: float, log step size += rate * (acceptance - 0.65) per transition.
        batch_size: int, most examples per compiled call.
        chunk_elements: int, cap on the floats of one call's `[examples, chains, max(D, d)]` tensor
            (default `evaluate`'s 2**21).
        seed: optional int, for reproducible estimates.
        jit_compile: bool, compile the loop with XLA.
        verbose: 0 (silent), 1 (a progress bar over the annealing steps, with the ETA and the running
            NLL) or 2 (one line at the end).

    Returns:
        dict: `log_likelihood` (mean over examples of the per-example estimates), `nll`,
        `standard_error` (of that mean, from the per-example standard errors; NaN with one chain, which
        has no spread to estimate it from), `ess_mean` and
        `ess_min` (effective sample size (sum w)^2 / sum w^2 of the chain weights, out of
        `num_chains`), `acceptance` (mean HMC acceptance probability; 0 with `num_steps=1`, which makes
        no transition), `step_size_mean` (the final
        step sizes' mean, relative to r's scales), `num_steps`, `num_chains`, `leapfrog_steps`,
        `schedule`, `initial`, `proposal` (`"posterior"`, `"fitted_gaussian"` or `"prior"`: r),
        `num_examples`, `seconds`, and per example (numpy arrays, in the order of `data`):
        `per_example_log_likelihood`, `per_example_standard_error` (delta method,
        sd(w) / (sqrt(chains) mean w): itself noisy when the ESS is small), `per_example_ess`,
        `per_example_acceptance`.

    Example:
        >>> result = vizoo.evaluate.ais_log_likelihood(model, x_test[:100], num_steps=1000, num_chains=16, verbose=1)
        >>> result["nll"], result["standard_error"], result["ess_mean"], result["acceptance"]
    """
    _check_continuous(model, "ais_log_likelihood")
    num_steps, num_chains, leapfrog_steps = _check_common(
        num_steps, num_chains, leapfrog_steps, schedule, initial, step_size, adaptation_rate
    )
    seed = _check_seed(seed)
    adapt_step_size = check_bool(adapt_step_size, "adapt_step_size")
    jit_compile = check_bool(jit_compile, "jit_compile")
    chunk = _chunk_examples(model, num_chains, batch_size, chunk_elements)
    x_all = _as_array(model, data)
    start_time = time.perf_counter()
    runner = _Runner(model, initial, leapfrog_steps, adapt_step_size, step_size, adaptation_rate, seed, jit_compile)
    betas = annealing_schedule(num_steps, schedule)
    starts = range(0, len(x_all), chunk)
    progress = _Progress(len(starts) * num_steps, verbose, "nll")
    outputs = {key: [] for key in ("log_px", "se", "ess", "acceptance", "log_step")}
    for begin in starts:
        x = tf.constant(x_all[begin : begin + chunk])
        state, scales = runner.prepare(x)
        z = runner.reference.sample(state, num_chains, runner.seed_generator)
        _, log_w, log_step, acceptance = runner.run(x, state, scales, z, betas, progress)
        log_px, se, ess = _chain_statistics(log_w)
        for key, value in zip(outputs, (log_px, se, ess, acceptance, log_step.numpy())):
            outputs[key].append(value)
        progress.value = -float(np.mean(np.concatenate(outputs["log_px"])))
    if verbose == 2 or (verbose and progress.done == 0):
        progress.bar.update(progress.done, values=[("nll", progress.value)], finalize=True)
    per_example = {key: np.concatenate(value) for key, value in outputs.items()}
    log_px = per_example["log_px"]
    check_finite_per_example(log_px, "AIS log p(x)", f"the weights of all {num_chains} chains are zero or not a number")
    n = len(log_px)
    return {
        "log_likelihood": float(np.mean(log_px)),
        "nll": -float(np.mean(log_px)),
        "standard_error": float(np.sqrt(np.sum(per_example["se"] ** 2)) / n),
        "ess_mean": float(np.mean(per_example["ess"])),
        "ess_min": float(np.min(per_example["ess"])),
        "acceptance": float(np.mean(per_example["acceptance"])),
        "step_size_mean": float(np.mean(np.exp(per_example["log_step"]))),
        "num_steps": num_steps,
        "num_chains": num_chains,
        "leapfrog_steps": leapfrog_steps,
        "schedule": schedule,
        "initial": initial,
        "proposal": runner.kind,
        "num_examples": n,
        "seed": runner.seed,
        "seconds": time.perf_counter() - start_time,
        "per_example_log_likelihood": log_px,
        "per_example_standard_error": per_example["se"],
        "per_example_ess": per_example["ess"],
        "per_example_acceptance": per_example["acceptance"],
    }


# ------------------------------------------------------------------ simulated data
def simulate(model, num_examples, seed=None):
    """(x `[n, input_dim]`, z `[n, latent]`) drawn from the model: z ~ p(z), x ~ p(x|z) (numpy float32)."""
    _check_continuous(model, "simulate")
    num_examples = check_positive_int(num_examples, "num_examples")
    seed_generator = as_seed_generator(_check_seed(seed))
    if not model.built:
        model.build((None, model.input_dim))
    z = tf.cast(model.sample_prior(num_examples, seed_generator), tf.float32)
    params = model.decode(model.decoder_input(z))
    x = model.likelihood.sample(params, seed=seed_generator)
    return np.asarray(x, np.float32), np.asarray(z, np.float32)


def _simulated(model, num_examples, data, latents, seed):
    check_positive_int(num_examples, "num_examples")  # (checked with data given too, where the data's size counts)
    if data is None and latents is None:
        return simulate(model, num_examples, seed)
    if data is None or latents is None:
        raise ValueError(
            "data and latents go together: give both (x and the z that generated it) or neither. "
            f"Received: data={'given' if data is not None else None}, "
            f"latents={'given' if latents is not None else None}"
        )
    x = _as_array(model, data)
    z = np.asarray(latents, np.float32)
    if z.shape != (len(x), model.latent_dim):
        raise ValueError(
            f"latents must have shape [num_examples, latent_dim] = {(len(x), model.latent_dim)}. "
            f"Received: latents.shape={z.shape}"
        )
    if not np.all(np.isfinite(z)):
        row, column = np.argwhere(~np.isfinite(z))[0]
        raise ValueError(f"latents must be finite. Received: latents[{row}, {column}]={z[row, column]}")
    return x, z


def bdmc(
    model,
    num_examples=100,
    num_steps=1000,
    num_chains=16,
    leapfrog_steps=10,
    schedule="sigmoid",
    initial="posterior",
    step_size=INITIAL_STEP_SIZE,
    adapt_step_size=True,
    adaptation_rate=ADAPTATION_RATE,
    data=None,
    latents=None,
    batch_size=100,
    chunk_elements=None,
    seed=None,
    jit_compile=False,
    verbose=0,
):
    """Bidirectional Monte Carlo on data simulated from the model (Grosse et al. 2015; Wu et al. 2017).

    Draws (z*, x) ~ p(z) p(x|z), then runs forward AIS from r to p(z|x) (its log mean w is a stochastic
    lower bound on log p(x)) and reverse AIS: the same targets in the opposite order, from the exact
    posterior sample z* (every chain starts there) to r. Reverse weights w' have E[w'] = 1/p(x), so
    -log mean w' is a stochastic upper bound. The gap upper - lower bounds the error of either at this
    schedule: if it is small on simulated data, the forward schedule is long enough for data like the
    model's own (real data can be harder).

    Args:
        model, num_steps, num_chains, leapfrog_steps, schedule, initial, step_size, adapt_step_size,
            adaptation_rate, batch_size, chunk_elements, jit_compile: as for `ais_log_likelihood`.
        num_examples: int, examples to simulate.
        data, latents: optionally, simulated x `[n, D]` and the z* `[n, d]` that generated it (from
            `simulate`), instead of drawing `num_examples` here.
        seed: optional int (the simulation and both runs, from independent streams).
        verbose: 0, 1 (a progress bar over both runs' steps, with the running gap) or 2.

    Returns:
        dict: `lower` and `upper` (means over examples), `gap` (their difference, >= 0 up to Monte
        Carlo error), `gap_standard_error` (of the mean gap, from both runs' per-example standard
        errors; the reverse chains of an example all start at its z*, so they are not independent and
        this understates the reverse run's part), `forward_seconds`, `reverse_seconds`, `forward_acceptance`,
        `reverse_acceptance`, the settings, and per example `per_example_lower`, `per_example_upper`,
        `per_example_gap`, and `data` and `latents` (the simulated x and z*).
    """
    _check_continuous(model, "bdmc")
    num_steps, num_chains, leapfrog_steps = _check_common(
        num_steps, num_chains, leapfrog_steps, schedule, initial, step_size, adaptation_rate
    )
    seed = _check_seed(seed)
    adapt_step_size = check_bool(adapt_step_size, "adapt_step_size")
    jit_compile = check_bool(jit_compile, "jit_compile")
    chunk = _chunk_examples(model, num_chains, batch_size, chunk_elements)
    if data is None and latents is None:  # the simulation and the chains draw from independent streams
        seed = _fresh_seed() if seed is None else seed
        simulation_seed, run_seed = _independent_seeds(seed)
    else:
        simulation_seed = run_seed = seed
    x_all, z_all = _simulated(model, num_examples, data, latents, simulation_seed)
    runner = _Runner(model, initial, leapfrog_steps, adapt_step_size, step_size, adaptation_rate, run_seed, jit_compile)
    betas = annealing_schedule(num_steps, schedule)
    starts = range(0, len(x_all), chunk)
    progress = _Progress(2 * len(starts) * num_steps, verbose, "gap")
    lower, upper, accept_forward, accept_reverse, errors = [], [], [], [], []
    seconds = {"forward": 0.0, "reverse": 0.0}
    for begin in starts:
        x = tf.constant(x_all[begin : begin + chunk])
        state, scales = runner.prepare(x)
        start = time.perf_counter()
        z = runner.reference.sample(state, num_chains, runner.seed_generator)
        _, log_w, _, acceptance = runner.run(x, state, scales, z, betas, progress)
        seconds["forward"] += time.perf_counter() - start
        log_px, forward_se, _ = _chain_statistics(log_w)
        lower.append(log_px)
        accept_forward.append(acceptance)
        start = time.perf_counter()
        z = tf.tile(tf.constant(z_all[begin : begin + chunk])[:, None, :], [1, num_chains, 1])
        _, log_w, _, acceptance = runner.run(x, state, scales, z, betas[::-1].copy(), progress)
        seconds["reverse"] += time.perf_counter() - start
        log_inverse, reverse_se, _ = _chain_statistics(log_w)
        upper.append(-log_inverse)
        errors.append(forward_se**2 + reverse_se**2)
        accept_reverse.append(acceptance)
        progress.value = float(np.mean(np.concatenate(upper)) - np.mean(np.concatenate(lower)))
    if verbose == 2:
        progress.bar.update(progress.done, values=[("gap", progress.value)], finalize=True)
    lower, upper = np.concatenate(lower), np.concatenate(upper)
    check_finite_per_example(lower, "BDMC's lower bound", f"the forward weights of all {num_chains} chains are zero or not a number")
    check_finite_per_example(upper, "BDMC's upper bound", f"the reverse weights of all {num_chains} chains are zero or not a number")
    return {
        "lower": float(np.mean(lower)),
        "upper": float(np.mean(upper)),
        "gap": float(np.mean(upper - lower)),
        # Of the mean gap, from the per-example standard errors of both runs (delta method over chains).
        "gap_standard_error": float(np.sqrt(np.sum(np.concatenate(errors))) / len(lower)),
        "forward_seconds": seconds["forward"],
        "reverse_seconds": seconds["reverse"],
        "forward_acceptance": float(np.mean(np.concatenate(accept_forward))),
        "reverse_acceptance": float(np.mean(np.concatenate(accept_reverse))),
        "num_steps": num_steps,
        "num_chains": num_chains,
        "leapfrog_steps": leapfrog_steps,
        "schedule": schedule,
        "initial": initial,
        "proposal": runner.kind,
        "num_examples": len(lower),
        "seed": seed if seed is not None else runner.seed,
        "per_example_lower": lower,
        "per_example_upper": upper,
        "per_example_gap": upper - lower,
        "data": x_all,
        "latents": z_all,
    }


def simulated_sandwich(model, num_examples=100, k=100, data=None, latents=None, batch_size=100, seed=None):
    """An interval on log p(x) of simulated data from k + 1 decoder passes per example.

    With (z*, x) ~ p(z) p(x|z), z_0 = z* and z_1..k ~ r (r = q(z|x) where it has a density at any z,
    else the Gaussian fitted to q's samples, as in `ais_log_likelihood`) and w_i = p(x, z_i) / r(z_i):

        lower = log (1/k) sum_{i=1..k} w_i          (the IWAE-k bound: E[lower] <= log p(x)),
        upper = log (1/(k+1)) sum_{i=0..k} w_i      (E[upper] >= log p(x)),

    the upper bound because z_0 is an exact posterior sample (it is the reverse of importance sampling
    with k + 1 samples, Grosse et al. 2015). Both tighten as k grows and as r approaches p(z|x).

    Args:
        model: a vizoo model with one continuous latent vector.
        num_examples: int, examples to simulate (unless `data` and `latents` are given).
        k: int, samples of r per example.
        data, latents: optionally, simulated x and the z* that generated it (from `simulate`).
        batch_size: int, examples per pass.
        seed: optional int.

    Returns:
        dict: `lower`, `upper` (means), `gap`, `k`, `proposal`, `num_examples`, per example
        `per_example_lower`, `per_example_upper`, and `data`, `latents`.
    """
    _check_continuous(model, "simulated_sandwich")
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = _check_seed(seed)
    if data is None and latents is None:  # z_1..k must be independent of z* = z_0: independent streams
        simulation_seed, seed = _independent_seeds(seed)
    else:
        simulation_seed = seed
    x_all, z_all = _simulated(model, num_examples, data, latents, simulation_seed)
    seed_generator = as_seed_generator(seed)
    reference = _Reference(model, _reference_kind(model, "posterior"))
    lower, upper = [], []
    for begin in range(0, len(x_all), batch_size):
        x = tf.constant(x_all[begin : begin + batch_size])
        state = reference.build(x, seed_generator)
        exact = tf.constant(z_all[begin : begin + batch_size])[:, None, :]  # z_0 = z*
        z = tf.concat([exact, reference.sample(state, k, seed_generator)], axis=1)
        terms = model.joint_terms(x, z)
        log_w = (terms["log_px_z"] + terms["log_pz"] - reference.log_prob(state, z)).numpy().astype(np.float64)
        lower.append(np.logaddexp.reduce(log_w[:, 1:], axis=1) - math.log(k))
        upper.append(np.logaddexp.reduce(log_w, axis=1) - math.log(k + 1))
    lower, upper = np.concatenate(lower), np.concatenate(upper)
    check_finite_per_example(lower, "the sandwich's lower bound", f"all its k={k} weights are zero or not a number")
    check_finite_per_example(upper, "the sandwich's upper bound", "its weights, the exact latent's included, are zero or not a number")
    return {
        "lower": float(np.mean(lower)),
        "upper": float(np.mean(upper)),
        "gap": float(np.mean(upper - lower)),
        "k": k,
        "proposal": reference.kind,
        "num_examples": len(lower),
        "per_example_lower": lower,
        "per_example_upper": upper,
        "data": x_all,
        "latents": z_all,
    }


# ------------------------------------------------------------------ hierarchical posteriors
def log_q_bounds(model, x, num_samples, num_reverse_samples, seed=None):
    """z ~ q(z|x) and two estimates of log q(z|x) at it, for a hierarchical posterior.

    With log v_j the posterior's reverse log-weights (`HierarchicalPosterior.reverse_log_weights`;
    j = 0 the psi_0 that generated z, j >= 1 psi_j ~ tau(psi|z, x)):

        upper = logmeanexp_{j=0..K} log v_j   (IWHVI: E[upper] >= log q(z|x)),
        lower = logmeanexp_{j=1..K} log v_j   (importance sampling of q(z|x) = E_tau[q(z|psi) q(psi)/tau]:
                                               E[lower] <= log q(z|x); SIVI: tau = q(psi|x)).

    Returns:
        (z `[batch, k, d]`, lower `[batch, k]`, upper `[batch, k]`) tensors.
    """
    posterior = model.posterior
    if not hasattr(posterior, "reverse_log_weights"):
        raise ValueError(
            "log_q_bounds needs a hierarchical posterior (one with reverse_log_weights). "
            f"Received: {type(posterior).__name__}"
        )
    num_samples = check_positive_int(num_samples, "num_samples")
    num_reverse_samples = check_positive_int(num_reverse_samples, "num_reverse_samples")
    seed = _check_seed(seed)
    params = model.encode(x)
    eps = posterior.sample_noise(params, num_samples, seed=seed, num_reverse_samples=num_reverse_samples)
    z, log_v = posterior.reverse_log_weights(params, eps, num_reverse_samples)
    log_v = tf.cast(log_v, tf.float64)
    lower = tf.reduce_logsumexp(log_v[..., 1:], axis=-1) - math.log(num_reverse_samples)
    upper = tf.reduce_logsumexp(log_v, axis=-1) - math.log(num_reverse_samples + 1)
    return tf.cast(z, tf.float32), lower, upper


def posterior_kl_interval(model, data, log_px, num_samples=100, num_reverse_samples=100, batch_size=100, seed=None):
    """An interval on KL(q(z|x) || p(z|x)) for a hierarchical posterior (HVM, IWHVI, SIVI).

    KL(q || p(z|x)) = log p(x) - ELBO, and the ELBO E_q[log p(x, z) - log q(z|x)] is bracketed by the
    two estimates of log q of `log_q_bounds` (K = `num_reverse_samples`):

        elbo_lower = E_q[log p(x, z) - upper],   elbo_upper = E_q[log p(x, z) - lower],
        kl_lower = log p(x) - elbo_upper,        kl_upper = log p(x) - elbo_lower.

    Both ends hold in expectation for the exact log p(x); with an estimate in its place (importance
    sampling or AIS, stochastic lower bounds) `kl_lower` stays a lower bound, while `kl_upper` is an
    upper bound up to the estimate's shortfall. The interval narrows as K grows and as the reverse
    model tau approaches q(psi|z, x).

    Args:
        model: a vizoo model with a hierarchical posterior.
        data: `[n, input_dim]` array (or dataset).
        log_px: `[n]` (or a scalar, for all examples) log p(x): exact, or an estimate (say
            `ais_log_likelihood(...)["per_example_log_likelihood"]`).
        num_samples: int, z ~ q(z|x) per example for the expectations.
        num_reverse_samples: int K >= 1.
        batch_size: int, examples per pass.
        seed: optional int.

    Returns:
        dict: `kl_lower`, `kl_upper`, `elbo_lower`, `elbo_upper` (means over examples, nats),
        `num_samples`, `num_reverse_samples`, and per example `per_example_kl_lower`,
        `per_example_kl_upper`.
    """
    x_all = _as_array(model, data)
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    try:
        log_px = np.asarray(log_px, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"log_px must be numbers (log p(x) per example). Received: log_px={log_px!r}") from None
    if log_px.shape not in ((), (len(x_all),)):
        raise ValueError(
            f"log_px must be a scalar or hold one value per example, shape ({len(x_all)},). "
            f"Received: log_px.shape={log_px.shape}"
        )
    log_px = np.broadcast_to(log_px, (len(x_all),))
    if not np.all(np.isfinite(log_px)):
        bad = int(np.sum(~np.isfinite(log_px)))
        raise ValueError(f"log_px must be finite. Received: log_px with {bad} non-finite values")
    seed_generator = as_seed_generator(_check_seed(seed))
    elbo_lower, elbo_upper = [], []
    for begin in range(0, len(x_all), batch_size):
        x = tf.constant(x_all[begin : begin + batch_size])
        z, lower, upper = log_q_bounds(model, x, num_samples, num_reverse_samples, seed=seed_generator)
        terms = model.joint_terms(x, z)
        log_joint = tf.cast(terms["log_px_z"] + terms["log_pz"], tf.float64)
        elbo_lower.append(tf.reduce_mean(log_joint - upper, axis=1).numpy())
        elbo_upper.append(tf.reduce_mean(log_joint - lower, axis=1).numpy())
    elbo_lower, elbo_upper = np.concatenate(elbo_lower), np.concatenate(elbo_upper)
    kl_lower, kl_upper = log_px - elbo_upper, log_px - elbo_lower
    return {
        "kl_lower": float(np.mean(kl_lower)),
        "kl_upper": float(np.mean(kl_upper)),
        "elbo_lower": float(np.mean(elbo_lower)),
        "elbo_upper": float(np.mean(elbo_upper)),
        "num_samples": num_samples,
        "num_reverse_samples": int(num_reverse_samples),
        "per_example_kl_lower": kl_lower,
        "per_example_kl_upper": kl_upper,
    }


# ------------------------------------------------------------------ the harmonic-mean estimator
def harmonic_mean_log_likelihood(
    model,
    data,
    num_samples=100,
    burn_in=200,
    mixing_steps=50,
    leapfrog_steps=10,
    initial="posterior",
    batch_size=100,
    seed=None,
):
    """The variational harmonic-mean estimator of log p(x) (Kingma & Welling 2014, appendix D): a diagnostic.

    1/p(x) = E_{p(z|x)}[r(z) / p(x, z)] for any normalized density r, so with z_l ~ p(z|x)

        log p^(x) = -log mean_l r(z_l) / p(x, z_l).

    Here z_1..2L come from 2L HMC chains per example (L = `num_samples`), run for `burn_in` annealing
    steps from r0 (q or the prior, as in `ais_log_likelihood`) to p(z|x) and then `mixing_steps` + 1
    transitions at p(z|x) (the last annealing step's target is p(z|x) already); r is a full-covariance
    Gaussian fitted to the first L samples and the estimate uses the other L (so r does not depend on the
    samples it is evaluated at).

    Why it is a diagnostic and not an estimator: the variance of r/p(x, z) under p(z|x) is finite
    only if r has lighter tails than the posterior, and it is easily infinite (a fitted Gaussian that
    is too wide in one direction; any heavy posterior tail). With exact posterior samples it is a
    stochastic upper bound (E[log p^] >= log p(x)), the opposite side to AIS and importance sampling,
    and its error is invisible from the samples: an estimate can look stable and be far off. On pPCA,
    where everything is Gaussian and it is at its best, its spread across seeds is larger than AIS's
    at a comparable budget (tests/test_ais.py asserts it; docs/evaluation.md gives the numbers).

    Returns:
        dict: `log_likelihood` (mean), `nll`, `num_samples`, `per_example_log_likelihood`.
    """
    _check_continuous(model, "harmonic_mean_log_likelihood")
    num_samples = check_positive_int(num_samples, "num_samples")
    if num_samples < 2:  # the fitted Gaussian's covariance needs two samples at least
        raise ValueError(f"num_samples must be at least 2. Received: num_samples={num_samples}")
    burn_in = check_positive_int(burn_in, "burn_in")
    mixing_steps = check_non_negative_int(mixing_steps, "mixing_steps")
    leapfrog_steps = check_positive_int(leapfrog_steps, "leapfrog_steps")
    check_choice(initial, "initial", INITIALS)
    seed = _check_seed(seed)
    x_all = _as_array(model, data)
    runner = _Runner(model, initial, leapfrog_steps, True, INITIAL_STEP_SIZE, ADAPTATION_RATE, seed, False)
    # Annealing to beta = 1, then mixing_steps + 1 more targets at beta = 1 (transitions at the posterior).
    betas = np.concatenate([annealing_schedule(burn_in, "sigmoid"), np.ones(mixing_steps + 1)])
    chunk = _chunk_examples(model, 2 * num_samples, batch_size, None)
    estimates = []
    for begin in range(0, len(x_all), chunk):
        x = tf.constant(x_all[begin : begin + chunk])
        state, scales = runner.prepare(x)
        z = runner.reference.sample(state, 2 * num_samples, runner.seed_generator)
        z, _, _, _ = runner.run(x, state, scales, z, betas)
        fit, held_out = z[:, :num_samples], z[:, num_samples:]
        loc, scale_tril = _fit_gaussian(fit)
        fitted = _Reference(model, "fitted_gaussian")
        fitted_state = {"loc": tf.cast(loc, tf.float32), "scale_tril": tf.cast(scale_tril, tf.float32)}
        log_r = fitted.log_prob(fitted_state, held_out)
        terms = model.joint_terms(x, held_out)
        log_ratio = tf.cast(log_r - terms["log_px_z"] - terms["log_pz"], tf.float64).numpy()
        estimates.append(-(np.logaddexp.reduce(log_ratio, axis=1) - math.log(num_samples)))
    estimates = np.concatenate(estimates)
    check_finite_per_example(
        estimates, "the harmonic-mean log p(x)", f"its {num_samples} held-out ratios r(z) / p(x, z) are infinite or not a number"
    )
    return {
        "log_likelihood": float(np.mean(estimates)),
        "nll": -float(np.mean(estimates)),
        "num_samples": num_samples,
        "num_examples": len(estimates),
        "per_example_log_likelihood": estimates,
    }


# ------------------------------------------------------------------ command line
def summary(result):
    """The JSON-ready scalars of a result of this module (per-example arrays and simulated data left out)."""
    return {
        key: value
        for key, value in result.items()
        if not key.startswith("per_example_") and key not in ("data", "latents")
    }


def run_test_split(args_namespace):
    """The test split of a run directory's config: (the test `tf.data.Dataset`, the config dict)."""
    import json
    import os

    from vizoo.data import load_from_config

    with open(os.path.join(args_namespace.run_dir, "config.json")) as f:
        config = json.load(f)
    return load_from_config(config).test, config


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m vizoo.evaluate",
        description="Estimate the test log p(x) of a saved run (train.py's OUT_DIR): importance sampling, or AIS.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run directory written by train.py (model.keras and config.json)")
    parser.add_argument("--ais", action="store_true", help="annealed importance sampling (else importance sampling)")
    parser.add_argument("--ais-steps", type=int, default=1000, help="AIS annealing steps T (T - 1 HMC transitions)")
    parser.add_argument("--ais-chains", type=int, default=16, help="AIS chains per example")
    parser.add_argument("--ais-leapfrog-steps", type=int, default=10, help="leapfrog steps per HMC transition")
    parser.add_argument("--ais-schedule", default="sigmoid", help=f"one of {list(SCHEDULES)}")
    parser.add_argument("--ais-initial", default="posterior", help=f"one of {list(INITIALS)}")
    parser.add_argument(
        "--bdmc", type=int, default=0, help="also run BDMC on this many examples simulated from the model (0: none)"
    )
    parser.add_argument("--k", type=int, default=5000, help="importance samples (without --ais)")
    parser.add_argument("--examples", type=int, default=None, help="evaluate the first N test examples (default all)")
    parser.add_argument("--model-file", default="model.keras", help="the model file in RUN_DIR")
    parser.add_argument("--seed", type=int, default=0, help="seed of the estimates")
    parser.add_argument("--verbose", type=int, default=1, help="0, 1 (progress bar with ETA) or 2")
    parser.add_argument("--output", default=None, help="JSON file of the result (default RUN_DIR/ais.json or is.json)")
    return parser


def main(argv=None):
    """`python -m vizoo.evaluate RUN_DIR [--ais]`; returns the exit code (2 for a named error, 1 for a file error)."""
    import json
    import os

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import vizoo
        from vizoo.cli import _finite_or_none

        for name in ("ais_steps", "ais_chains", "ais_leapfrog_steps", "k"):
            check_positive_int(getattr(args, name), name)
        check_non_negative_int(args.bdmc, "bdmc")
        check_choice(args.ais_schedule, "ais_schedule", SCHEDULES)
        check_choice(args.ais_initial, "ais_initial", INITIALS)
        if args.examples is not None:
            check_positive_int(args.examples, "examples")
        path = os.path.join(args.run_dir, args.model_file)
        if not os.path.exists(path):
            raise ValueError(
                f"run_dir must hold {args.model_file} (a run of train.py). Received: run_dir={args.run_dir!r}"
            )
        model = vizoo.load_model(path, compile=False)
        test, config = run_test_split(args)
        x = _as_array(model, test, "test data")
        if args.examples is not None:
            x = x[: args.examples]
        if args.ais:
            result = summary(
                ais_log_likelihood(
                    model,
                    x,
                    num_steps=args.ais_steps,
                    num_chains=args.ais_chains,
                    leapfrog_steps=args.ais_leapfrog_steps,
                    schedule=args.ais_schedule,
                    initial=args.ais_initial,
                    seed=args.seed,
                    verbose=args.verbose,
                )
            )
            line = (
                f"AIS test NLL {result['nll']:.3f} +- {result['standard_error']:.3f} nats ({result['num_examples']} "
                f"examples, T={args.ais_steps}, {args.ais_chains} chains, r={result['proposal']}, "
                f"acceptance {result['acceptance']:.2f}, {result['seconds']:.0f} s)"
            )
        else:
            start = time.perf_counter()
            result = vizoo.evaluate.log_likelihood(model, x, k=args.k, seed=args.seed, verbose=args.verbose)
            result["seconds"] = time.perf_counter() - start
            line = (
                f"test NLL {result['nll']:.3f} nats (k={args.k}, {result['num_examples']} examples, "
                f"{result['seconds']:.0f} s)"
            )
        if args.bdmc:
            result["bdmc"] = summary(
                bdmc(
                    model,
                    num_examples=args.bdmc,
                    num_steps=args.ais_steps,
                    num_chains=args.ais_chains,
                    leapfrog_steps=args.ais_leapfrog_steps,
                    schedule=args.ais_schedule,
                    initial=args.ais_initial,
                    seed=args.seed,
                    verbose=args.verbose,
                )
            )
            line += f"; BDMC gap {result['bdmc']['gap']:.3f} nats on {args.bdmc} simulated examples"
        result["run_dir"] = args.run_dir
        result["dataset"] = config.get("dataset")
        output = args.output or os.path.join(args.run_dir, "ais.json" if args.ais else "is.json")
        with open(output, "w") as f:  # strict JSON: non-finite numbers written as null, as in metrics.json
            json.dump(_finite_or_none(result), f, indent=2, allow_nan=False)
        print(f"{line}; written to {output}")
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except OSError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    return 0

