"""Importance-sampling diagnostics: ESS and PSIS's Pareto k-hat (vizoo.diagnostics, evaluate.log_likelihood).

References are exact: the linear-Gaussian (pPCA) model's posterior in closed form (q set to it,
wider, or 10x narrower in one direction), generalized Pareto draws of known shape, ArviZ's
psislw where it is installed, and the SBN's enumerated weights.
"""

import json

import numpy as np
import pytest
from scipy import stats

from tests import ppca
from tests import sbn_reference as ref
from tests.test_evaluate_hierarchical import hierarchical_ppca
from vizoo import cli, diagnostics, evaluate

K = 2000


@pytest.fixture(scope="module")
def reference():
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(60, weights, bias)
    return weights, bias, x, ppca.exact_log_px(x, weights, bias)


def test_tail_size_is_psis():
    assert [diagnostics.tail_size(s) for s in (10, 20, 21, 100, 225, 5000)] == [2, 4, 5, 20, 45, 213]


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.9])
def test_generalized_pareto_shape_is_recovered_at_5000_samples(shape):
    rng = np.random.default_rng(int(shape * 10))
    log_w = np.log(stats.genpareto.rvs(shape, size=(40, 5000), random_state=rng))
    khat = diagnostics.pareto_k_hat(log_w)
    # One fit's standard deviation at M = 213 is about 0.08-0.14; 40 fits average to within ~0.02.
    assert khat.mean() == pytest.approx(shape, abs=0.06), khat.mean()
    assert np.all(np.abs(khat - shape) < 0.5)


def test_k_hat_matches_arviz_psislw():
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(0)
    log_w = np.concatenate(
        [rng.normal(scale=3.0, size=(4, 1000)), np.log(stats.genpareto.rvs(0.6, size=(4, 1000), random_state=rng))]
    )
    _, expected = az.psislw(log_w.copy())
    np.testing.assert_allclose(diagnostics.pareto_k_hat(log_w), expected, rtol=1e-10)
    # Only the M + 1 largest are needed, in any order.
    top = np.sort(log_w, axis=1)[:, ::-1][:, : diagnostics.tail_size(1000) + 1]
    np.testing.assert_allclose(diagnostics.pareto_k_hat(top, num_samples=1000), expected, rtol=1e-10)


def test_k_hat_is_nan_without_a_tail_and_arguments_are_checked():
    assert np.all(np.isnan(diagnostics.pareto_k_hat(np.zeros((2, 100)))))  # all weights tied
    assert np.all(np.isnan(diagnostics.pareto_k_hat(np.random.default_rng(0).normal(size=(2, 20)))))  # M = 4
    atoms = np.random.default_rng(0).choice(np.log([1.0, 2.0, 3.0, 5.0, 8.0, 13.0]), size=(2, 1000))
    assert np.all(np.isnan(diagnostics.pareto_k_hat(atoms)))  # discrete weights: atoms, not a tail
    with pytest.raises(ValueError, match="Received: log_weights.shape=\\(2, 10\\)"):
        diagnostics.pareto_k_hat(np.zeros((2, 10)), num_samples=1000)
    with pytest.raises(ValueError, match="Received: diagnostics='yes'"):
        evaluate.log_likelihood(ppca.ppca_vae(*ppca.ppca_parameters()), np.zeros((2, 5), "float32"), k=5, diagnostics="yes")


def test_effective_sample_size_in_log_space():
    from scipy.special import logsumexp

    with np.errstate(divide="ignore"):
        log_w = np.log(np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0], [2.0, 1.0, 1.0, 0.0]])) + 800.0

    ess = diagnostics.effective_sample_size(logsumexp(log_w, axis=1), logsumexp(2 * log_w, axis=1))
    np.testing.assert_allclose(ess, [4.0, 1.0, 16.0 / 6.0])


def test_exact_posterior_gives_ess_k_and_a_low_k_hat(reference):
    weights, bias, x, log_px = reference
    result = evaluate.log_likelihood(ppca.ppca_vae(weights, bias), x, k=K, seed=0, return_per_example=True)
    # Every weight is p(x), up to float32 rounding of log w (~1e-6): ESS = k.
    np.testing.assert_allclose(result["per_example_ess"], K, rtol=1e-5)
    assert result["ess_min"] == pytest.approx(K, rel=1e-5) and result["ess_mean"] == pytest.approx(K, rel=1e-5)
    # The weights' "tail" is float32 rounding of one value: atoms, not fitted (k-hat NaN), never flagged.
    khat = result["per_example_pareto_k"]
    assert np.all(np.isnan(khat) | (khat < 0.5)) and result["pareto_k_exceeded"] == 0
    assert result["pareto_k_not_fitted"] == np.sum(np.isnan(khat)) >= 0.9 * len(x)


def test_wider_q_has_finite_variance_weights(reference):
    weights, bias, x, log_px = reference
    model = ppca.ppca_vae(weights, bias, log_scale_offset=np.log(1.5))  # 1.5x wider in every direction
    result = evaluate.log_likelihood(model, x, k=K, seed=0, return_per_example=True)
    # w has all moments below 1 / (1 - 1.5**-2) = 1.8 in that direction... and is bounded: k = 1 - 1.5**2 < 0.
    assert result["pareto_k_max"] < 0.5 and result["pareto_k_exceeded"] == 0
    assert 0.3 * K < result["ess_min"] < result["ess_mean"] < 0.9 * K
    assert result["log_likelihood"] == pytest.approx(log_px.mean(), abs=0.01)


def test_10x_narrower_q_is_flagged(reference):
    weights, bias, x, log_px = reference
    # 10x narrower than p(z|x) along the first latent direction: w ~ exp(99 z^2 / 2 sigma^2), tail shape 0.99.
    model = ppca.ppca_vae(weights, bias, log_scale_offset=np.log([0.1, 1.0, 1.0]))
    result = evaluate.log_likelihood(model, x, k=K, seed=0, return_per_example=True)
    khat = result["per_example_pareto_k"]
    flagged = np.flatnonzero(khat > 0.7)
    assert result["pareto_k_exceeded"] == len(flagged) >= 0.8 * len(x)
    assert result["pareto_k_exceeded_fraction"] == len(flagged) / len(x)
    assert result["pareto_k_max"] == np.max(khat) > 0.9
    assert result["pareto_k_worst"] == list(np.argsort(-khat, kind="stable")[:10])
    assert set(result["pareto_k_worst"]) <= set(flagged)
    assert result["ess_mean"] < 0.1 * K
    # The flagged examples are the ones whose estimate is far low; the few unflagged are not.
    error = result["per_example_log_likelihood"] - log_px
    assert np.mean(error[flagged]) < -0.5


def test_log_likelihood_is_bit_identical_with_and_without_diagnostics(reference):
    weights, bias, x, _ = reference
    model = ppca.ppca_vae(weights, bias, loc_offset=0.3, log_scale_offset=-0.5)
    # k = 250 in chunks of 100 and a remainder of 50: two compiled passes.
    options = dict(k=250, seed=3, return_per_example=True, chunk_elements=100 * 5 * 25, batch_size=25)
    on = evaluate.log_likelihood(model, x, **options)
    off = evaluate.log_likelihood(model, x, diagnostics=False, **options)
    np.testing.assert_array_equal(on["per_example_log_likelihood"], off["per_example_log_likelihood"])
    for key in ("log_likelihood", "elbo", "iwae_k", "kl", "reconstruction"):
        assert on[key] == off[key], key
    assert not any(key.startswith(("ess", "pareto", "per_example_ess", "per_example_pareto")) for key in off)
    assert {"ess_mean", "ess_min", "pareto_k_max", "pareto_k_threshold", "pareto_k_exceeded",
            "pareto_k_exceeded_fraction", "pareto_k_worst", "pareto_k_tail_size", "pareto_k_not_fitted"} <= set(on)
    assert on["pareto_k_tail_size"] == diagnostics.tail_size(250) == 48
    assert on["pareto_k_threshold"] == pytest.approx(1 - 1 / np.log10(250))  # 0.583: k < 2154
    assert on["per_example_ess"].shape == on["per_example_pareto_k"].shape == (len(x),)
    json.dumps({key: value for key, value in on.items() if not key.startswith("per_example")})  # JSON-ready


def test_hierarchical_posterior_gets_the_diagnostics(reference):
    weights, bias, x, _ = reference
    model = hierarchical_ppca(weights, bias)
    result = evaluate.log_likelihood(model, x[:20], k=100, seed=0, num_reverse_samples=5, return_per_example=True)
    assert result["log_likelihood_is_lower_bound"] is True
    assert result["per_example_pareto_k"].shape == (20,) and np.all(np.isfinite(result["per_example_pareto_k"]))
    assert np.all((result["per_example_ess"] >= 1) & (result["per_example_ess"] <= 100))
    assert result["pareto_k_tail_size"] == 20


def test_sbn_ess_matches_the_enumerated_weights():
    model = ref.tiny_sbn()
    k = 2000
    result = evaluate.log_likelihood(model, ref.DATA, k=k, seed=0, return_per_example=True)
    log_w, log_q = (t.numpy().astype("float64") for t in ref.enumerated_terms(model, ref.DATA))
    q = np.exp(log_q)
    # ESS / k -> E_q[w]^2 / E_q[w^2] as k grows.
    expected = np.sum(q * np.exp(log_w), axis=1) ** 2 / np.sum(q * np.exp(2 * log_w), axis=1)
    np.testing.assert_allclose(result["per_example_ess"] / k, expected, rtol=0.1)
    # 16 configurations: bounded weights whose top M = 134 of 2000 are a few atoms: not fitted, not flagged.
    assert np.all(np.isnan(result["per_example_pareto_k"])) and result["pareto_k_exceeded"] == 0
    assert result["pareto_k_not_fitted"] == 3 and np.isnan(result["pareto_k_max"])


@pytest.mark.slow  # a full train.py run
def test_cli_writes_the_diagnostics_and_warns(tmp_path, capsys):
    from tests.test_cli import TINY

    out = tmp_path / "run"
    assert cli.main(TINY + ["--eval-k", "50", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    for key in ("ess_mean", "ess_min", "pareto_k_max", "pareto_k_exceeded", "pareto_k_exceeded_fraction",
                "pareto_k_worst", "pareto_k_threshold"):
        assert key in metrics, key
    nll_line = next(i for i, line in enumerate(printed) if line.startswith("test NLL"))
    warnings = [line for line in printed if line.startswith("importance sampling unreliable")]
    # Whether this tiny run's weights are flagged depends on its training: check the line either way.
    if metrics["pareto_k_exceeded"]:
        assert printed[nll_line + 1] == cli.reliability_warning(metrics)
        assert warnings == [cli.reliability_warning(metrics)]
    else:
        assert warnings == []
    assert metrics["pareto_k_exceeded_fraction"] == metrics["pareto_k_exceeded"] / metrics["num_examples"]


def test_cli_warning_line():
    metrics = {"num_examples": 50, "pareto_k_exceeded": 18, "pareto_k_threshold": 0.7}
    assert cli.reliability_warning(metrics) == (
        "importance sampling unreliable for 18 of 50 examples (Pareto k > 0.7): see metrics.json; consider AIS"
    )
    assert cli.reliability_warning(dict(metrics, pareto_k_exceeded=0)) is None
    assert cli.reliability_warning({"num_examples": 50}) is None  # evaluated without diagnostics


@pytest.mark.slow  # an XLA compilation
def test_the_sampling_loop_with_diagnostics_compiles_with_xla(reference):
    weights, bias, x, _ = reference
    model = ppca.ppca_vae(weights, bias, log_scale_offset=np.log([0.1, 1.0, 1.0]))
    options = dict(k=100, seed=0, return_per_example=True)
    xla = evaluate.log_likelihood(model, x[:10], jit_compile=True, **options)
    plain = evaluate.log_likelihood(model, x[:10], **options)
    assert xla["pareto_k_tail_size"] == 20 and xla["per_example_pareto_k"].shape == (10,)
    # XLA draws other noise than the plain loop: the two agree in distribution, not sample by sample.
    for result in (xla, plain):
        assert np.all((result["per_example_ess"] >= 1) & (result["per_example_ess"] <= 100))
        assert result["pareto_k_exceeded"] >= 5


@pytest.mark.slow  # runs the benchmark script
def test_benchmark_script_prints_its_tables(capsys):
    from tests.test_benchmarks import load_script

    load_script("is_diagnostics").main(["--epochs", "1", "--examples", "5", "--k", "100", "--skip-overhead"])
    out = capsys.readouterr().out
    assert "| 100 |" in out and "k-hat > 0.7" in out and "pareto_k_worst" in out
