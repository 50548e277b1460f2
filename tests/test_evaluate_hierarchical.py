"""evaluate.log_likelihood with a hierarchical posterior: an evaluation-time K, bounded memory, a stated lower bound."""

import numpy as np
import pytest

from tests import ppca
from vizoo import evaluate
from vizoo.layers import HierarchicalPosterior


@pytest.fixture(scope="module")
def reference():
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(200, weights, bias)
    return weights, bias, x, ppca.exact_log_px(x, weights, bias)


def hierarchical_ppca(weights, bias, **kwargs):
    posterior = HierarchicalPosterior(3, aux_dim=2, hidden_units=[8], reverse_hidden_units=[8], name="posterior", **kwargs)
    return ppca.ppca_decoder_vae(weights, bias, posterior, seed=0)


def test_result_says_the_estimate_is_a_lower_bound_and_tightens_with_k(reference):
    weights, bias, x, log_px = reference
    model = hierarchical_ppca(weights, bias, num_reverse_samples=1)
    results = {K: evaluate.log_likelihood(model, x, k=200, seed=0, num_reverse_samples=K) for K in (0, 50)}
    for K, result in results.items():
        assert result["log_likelihood_is_lower_bound"] is True
        assert result["sampler_options"] == {"num_reverse_samples": K, "reverse_model": "learned"}
        assert result["elbo"] <= result["log_likelihood"] < log_px.mean()
    assert results[0]["log_likelihood"] < results[50]["log_likelihood"] - 0.05
    default = evaluate.log_likelihood(model, x, k=20, seed=0)  # the posterior's own K
    assert default["sampler_options"] == {"num_reverse_samples": 1, "reverse_model": "learned"} and default["log_likelihood_is_lower_bound"]
    assert "log_likelihood_is_lower_bound" not in evaluate.log_likelihood(ppca.ppca_vae(weights, bias), x, k=5)


@pytest.mark.parametrize("num_reverse_samples", [1, 3])
def test_weights_stay_unbiased_when_log_q_is_estimated(reference, num_reverse_samples):
    """q(z|x) / q^_K(z|x) has mean exactly 1 over z, psi_0 ~ q and psi_1..K ~ tau, for any tau (here one off the
    exact q(psi|z)), though log q^_K is above log q on average: p(x, z) / q^_K is an unbiased weight, so the
    importance-sampled log p(x) of a hierarchical q is consistent in k (what evaluate's docstring says)."""
    from tests import hierarchical_reference
    from vizoo import ais

    weights, bias, x, _ = reference
    a_matrix = hierarchical_reference.mixing_matrix()
    posterior = hierarchical_reference.tractable_posterior(a_matrix, ppca.DATA_DIM, loc_offset=0.3, log_scale_offset=0.2)
    model = ppca.ppca_decoder_vae(weights, bias, posterior)
    z, _, upper = ais.log_q_bounds(model, x[:5], 100_000, num_reverse_samples, seed=0)
    log_ratio = hierarchical_reference.exact_log_q(z.numpy(), a_matrix) - upper.numpy()
    ratio = np.exp(log_ratio)
    standard_error = ratio.std(axis=1, ddof=1) / np.sqrt(ratio.shape[1])  # 0.002-0.003
    assert np.all(np.abs(ratio.mean(axis=1) - 1) < 4 * standard_error + 1e-3)
    assert np.all(log_ratio.mean(axis=1) < -0.01)  # the log estimate itself is biased: an upper bound on log q


def test_chunks_stay_within_the_memory_budget_and_agree(reference):
    weights, bias, x, _ = reference
    model = hierarchical_ppca(weights, bias)
    K = 40
    per_sample = model.posterior.sample_elements(num_reverse_samples=K)
    assert per_sample == (K + 1) * 8  # the widest per-sample tensor: K + 1 hidden layers of 8 units
    budget = 100 * per_sample * 6
    assert evaluate._chunk_size(300, 100, max(ppca.DATA_DIM, per_sample), 3, chunk_elements=budget) == 6
    options = dict(k=300, train_k=3, return_per_example=True, num_reverse_samples=K)
    chunked = evaluate.log_likelihood(model, x, seed=1, chunk_elements=budget, **options)
    assert {key[:2] for key in evaluate._COMPILED[model][-1]} == {(6, 50)}  # 50 passes of 6 samples, no others
    whole = evaluate.log_likelihood(model, x, seed=2, **options)
    # Two independent estimates of the same quantity: equal within their standard error.
    difference = chunked["per_example_log_likelihood"] - whole["per_example_log_likelihood"]
    assert abs(difference.mean()) < 4 * difference.std(ddof=1) / np.sqrt(len(difference))


def test_unknown_sampler_options_are_named(reference):
    weights, bias, x, _ = reference
    with pytest.raises(ValueError, match="Received: \\['num_reverse_sample'\\]"):
        evaluate.log_likelihood(hierarchical_ppca(weights, bias), x, k=5, num_reverse_sample=3)
    with pytest.raises(ValueError, match="Received: num_reverse_samples=-1"):
        evaluate.log_likelihood(hierarchical_ppca(weights, bias), x, k=5, num_reverse_samples=-1)


def test_a_learned_tau_models_sivi_estimate_is_its_sivi_twins(reference):
    """log_likelihood(..., reverse_model="sivi") of a learned-tau model is a twin built with SIVI's (same weights)."""
    weights, bias, x, _ = reference
    model = hierarchical_ppca(weights, bias)
    twin = hierarchical_ppca(weights, bias, reverse_model="sivi")
    for name in ("auxiliary", "conditional"):
        getattr(twin.posterior, name).set_weights(getattr(model.posterior, name).get_weights())
    rng = np.random.default_rng(0)
    model.posterior.reverse.set_weights([rng.normal(size=w.shape) * 0.5 for w in model.posterior.reverse.get_weights()])
    x = x[:50]
    options = dict(k=20, seed=3, num_reverse_samples=5, return_per_example=True)
    sivi = evaluate.log_likelihood(model, x, reverse_model="sivi", **options)
    assert sivi["sampler_options"] == {"num_reverse_samples": 5, "reverse_model": "sivi"}
    np.testing.assert_allclose(
        sivi["per_example_log_likelihood"], evaluate.log_likelihood(twin, x, **options)["per_example_log_likelihood"], atol=1e-4
    )
    learned = evaluate.log_likelihood(model, x, **options)["per_example_log_likelihood"]
    assert np.max(np.abs(learned - sivi["per_example_log_likelihood"])) > 0.01  # its own tau gives another estimate
    with pytest.raises(ValueError, match="Received: reverse_model='learned'"):
        evaluate.log_likelihood(twin, x, k=5, reverse_model="learned")
