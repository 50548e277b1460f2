"""Diagnostics of importance weights: effective sample size and the Pareto k-hat of their tail.

An importance-sampled log p(x) is one confident number even when it is wrong: when q(z|x) is
narrower than p(z|x) in some direction the weights w = p(x, z) / q(z|x) have infinite variance,
and the estimate at any affordable k sits below log p(x) with a small spread. Two numbers per
example, from the same samples, say so:

- the effective sample size ESS = (sum w)^2 / sum w^2, computed in log space as
  exp(2 logsumexp(log w) - logsumexp(2 log w)): k when all weights are equal, near 1 when
  one weight dominates [1];
- k-hat, the shape of a generalized Pareto distribution fitted to the M largest weights
  above the (M+1)-th largest, M = ceil(min(0.2 k, 3 sqrt(k))), with the empirical-Bayes
  estimator of Zhang & Stephens [2] and the weakly informative prior PSIS applies,
  k-hat = (M k + 10 * 0.5) / (M + 10) [3]. The weights have 1/k-hat finite moments:
  k-hat < 0.5, finite variance; 0.5 to 0.7, infinite variance but the estimate still
  converges usefully; above 0.7 the estimate is unreliable at any practical k [3, 4].

`evaluate.log_likelihood` keeps, per example, the M + 1 largest log-weights and the running
logsumexp of 2 log w inside its sampling loop, and calls `pareto_k_hat` and
`effective_sample_size` on them.

References:
    [1] Kong, A. (1992). A note on importance sampling using standardized weights.
        University of Chicago, Dept. of Statistics, Tech. Rep. 348.
        https://galton.uchicago.edu/techreports/tr348.pdf
    [2] Zhang, J. & Stephens, M. A. (2009). A new and efficient estimation method for the
        generalized Pareto distribution. Technometrics 51(3), 316-325.
        https://doi.org/10.1198/tech.2009.08017
    [3] Vehtari, A., Simpson, D., Gelman, A., Yao, Y. & Gabry, J. (2024). Pareto smoothed
        importance sampling. JMLR 25(72), 1-58. https://arxiv.org/abs/1507.02646
    [4] Yao, Y., Vehtari, A., Simpson, D. & Gelman, A. (2018). Yes, but did it work?:
        Evaluating variational inference. ICML. https://arxiv.org/abs/1802.02538
"""

import math

import numpy as np

from vizoo.utils import check_positive_int

# k-hat above this: the importance-sampling estimate is unreliable (Vehtari et al. 2024, sec. 3), for
# S >= 2154 samples; below, `pareto_k_threshold(S)` is lower.
PARETO_K_THRESHOLD = 0.7
# Fewer values above the threshold than this: no fit (as ArviZ and loo); k-hat is NaN.
MIN_TAIL_SIZE = 5
# The GPD is continuous: a tail whose distinct values are fewer than this fraction of its size is
# made of atoms (discrete latents with few configurations, or weights equal up to float rounding,
# as when q = p(z|x)) and is not fitted; k-hat is NaN. ArviZ fits such tails, to meaningless shapes
# (1.26 on the tiny SBN of tests/sbn_reference.py, whose weights take 16 values).
MIN_DISTINCT_FRACTION = 0.9
# Zhang & Stephens's prior on b and PSIS's weakly informative prior on k (weight 10 at k = 0.5).
_PRIOR_B = 3.0
_PRIOR_K_WEIGHT, _PRIOR_K = 10.0, 0.5


def pareto_k_threshold(num_samples):
    """The k-hat above which S importance samples are not enough: min(1 - 1 / log10 S, 0.7)
    (Vehtari et al. 2024, sec. 3: 0.7 from S = 2154 on; 0.667 at S = 1000, 0.41 at S = 50)."""
    num_samples = check_positive_int(num_samples, "num_samples")
    if num_samples < 10:
        return 0.0  # (1 - 1/log10 S <= 0: too few samples for any tail to be trusted)
    return min(1.0 - 1.0 / math.log10(num_samples), PARETO_K_THRESHOLD)


def tail_size(num_samples):
    """M, the number of largest weights PSIS fits: ceil(min(0.2 S, 3 sqrt(S))).

    Args:
        num_samples: int S, importance samples per example.

    Returns:
        int M (the fit also reads the (M+1)-th largest weight, its threshold).
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    return int(math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples))))


def effective_sample_size(log_sum_w, log_sum_w2):
    """Kish's effective sample size exp(2 logsumexp(log w) - logsumexp(2 log w)).

    Args:
        log_sum_w: `[n]` logsumexp of each example's log-weights.
        log_sum_w2: `[n]` logsumexp of twice each example's log-weights.

    Returns:
        `[n]` float64 ESS in [1, S]; NaN where every weight is zero (both -inf).
    """
    log_sum_w = np.asarray(log_sum_w, np.float64)
    with np.errstate(invalid="ignore"):
        return np.exp(2.0 * log_sum_w - np.asarray(log_sum_w2, np.float64))


def generalized_pareto_fit(exceedances, counts=None):
    """Zhang & Stephens's (2009) empirical-Bayes fit of a generalized Pareto distribution, as in PSIS.

    Fits GPD(k, sigma) with location 0, density (1/sigma) (1 + k y / sigma)^(-1/k - 1), to
    each row of exceedances, and shrinks k towards 0.5 with PSIS's prior:
    k = (n k + 10 * 0.5) / (n + 10) (n the row's length) [3]. Matches ArviZ's `_gpdfit`.
    Rows of different lengths are fitted together (vectorized): row i is its last `counts[i]`
    values.

    Args:
        exceedances: `[n, L]` values, each row sorted ascending; row i's last `counts[i]` are
            its data (positive), the others are ignored.
        counts: `[n]` ints in [2, L]; default L for every row.

    Returns:
        (k `[n]`, sigma `[n]`) float64; sigma is that of the fit before the prior on k.
    """
    y = np.asarray(exceedances, np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"exceedances must be [n, L] with L >= 2. Received: exceedances.shape={y.shape}")
    rows, length = y.shape
    n = np.full(rows, length) if counts is None else np.asarray(counts, np.int64)
    if n.shape != (rows,) or np.any(n < 2) or np.any(n > length):
        raise ValueError(f"counts must be [n] ints in [2, {length}]. Received: counts={counts!r}")
    data = np.arange(length) >= (length - n)[:, None]  # [n, L]
    y = np.where(data, y, 0.0)  # log1p(-b * 0) = 0: ignored values add nothing
    m = 30 + np.floor(np.sqrt(n)).astype(np.int64)  # grid size per row
    j = np.arange(1, m.max() + 1, dtype=np.float64)
    on_grid = j <= m[:, None]  # [n, m_max]
    grid = 1.0 - np.sqrt(m[:, None] / (j - 0.5))
    quartile = y[np.arange(rows), length - n + (n / 4 + 0.5).astype(np.int64) - 1]
    # b (= -k / sigma) on a grid scaled by the first quartile and the maximum: [n, m_max]
    b = np.where(on_grid, grid / (_PRIOR_B * quartile[:, None]) + 1.0 / y[:, -1:], 0.0)
    k = np.sum(np.log1p(-b[:, :, None] * y[:, None, :]), axis=-1) / n[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        profile = np.where(on_grid, n[:, None] * (np.log(-b / k) - k - 1.0), -np.inf)  # profile log-likelihood
        weights = 1.0 / np.sum(np.exp(profile[:, None, :] - profile[:, :, None]), axis=-1)
    weights = np.where(on_grid & (weights >= 10 * np.finfo(np.float64).eps), weights, 0.0)  # negligible out
    weights /= np.sum(weights, axis=-1, keepdims=True)
    b_post = np.sum(b * weights, axis=-1)
    k_post = np.sum(np.log1p(-b_post[:, None] * y), axis=-1) / n
    sigma = -k_post / b_post
    k_post = (n * k_post + _PRIOR_K_WEIGHT * _PRIOR_K) / (n + _PRIOR_K_WEIGHT)
    return k_post, sigma


def pareto_k_hat(log_weights, num_samples=None):
    """PSIS's k-hat per example from its largest log-weights.

    Takes the M largest of each row, M = `tail_size(num_samples)`, and its (M+1)-th largest
    as the threshold u; fits `generalized_pareto_fit` to w - u over the weights strictly
    above u (relative to the largest weight, in float64, and u at least the smallest normal
    float64 as ArviZ does). No fit, NaN, where fewer than 5 weights lie above u (S < 21, or
    ties) or fewer than 90% of them are distinct: atoms, not a tail (discrete latents with
    few configurations; weights equal up to float rounding, as when q = p(z|x)). Otherwise
    equal to ArviZ's `psislw` shape estimate (tested).

    Args:
        log_weights: `[n, L]` log-weights, L >= M + 1 of each example's largest (in any
            order; all S of them will do).
        num_samples: int S, the number of samples the rows were drawn from; default L.

    Returns:
        `[n]` float64 k-hat (NaN where no fit).
    """
    log_weights = np.asarray(log_weights, np.float64)
    if log_weights.ndim != 2:
        raise ValueError(f"log_weights must be [n, L]. Received: log_weights.shape={log_weights.shape}")
    num_samples = log_weights.shape[1] if num_samples is None else num_samples
    size = tail_size(num_samples)
    if log_weights.shape[1] < size + 1:
        raise ValueError(
            f"pareto_k_hat needs the {size + 1} largest log-weights of {num_samples} samples. "
            f"Received: log_weights.shape={log_weights.shape}"
        )
    khat = np.full(len(log_weights), np.nan)
    if size < MIN_TAIL_SIZE:
        return khat
    top = np.sort(log_weights, axis=1)[:, -(size + 1) :]  # ascending, [n, M + 1]
    with np.errstate(invalid="ignore"):  # a row of -inf (every weight zero) gives NaN: no fit
        top = top - top[:, -1:]
    cutoff = np.maximum(top[:, 0], np.log(np.finfo(np.float64).tiny))
    above = top[:, 1:] > cutoff[:, None]
    counts = np.sum(above, axis=1)
    distinct = np.sum(above & (top[:, 1:] > top[:, :-1]), axis=1)  # sorted: each rise is a new value
    counts = np.where(distinct >= MIN_DISTINCT_FRACTION * counts, counts, 0)  # atoms: no fit
    fit = np.flatnonzero(counts >= MIN_TAIL_SIZE)
    if len(fit):  # each row's tail is its last `count` columns (sorted ascending), fitted all at once
        tail = np.exp(top[fit, 1:]) - np.exp(cutoff[fit])[:, None]
        khat[fit] = generalized_pareto_fit(tail, counts[fit])[0]
    return khat
