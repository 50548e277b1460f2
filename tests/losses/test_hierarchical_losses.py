"""HVM and IWHVI: exact values, bound orderings against pPCA's exact log p(x), and tau's DReG estimator."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import hierarchical_reference as ref
from tests import ppca
from tests.helpers import run_serialization_test
from vizoo.layers import HierarchicalPosterior
from vizoo.losses import LOSSES, HVMLoss, IWHVILoss, logmeanexp


def random_terms(K=3, seed=0):
    rng = np.random.default_rng(seed)
    terms = {name: (rng.normal(size=(6, 5)) * 30).astype("float32") for name in ("log_px_z", "log_pz", "log_qz")}
    terms["reverse_log_weights_detached"] = rng.normal(size=(6, 5, K + 1)).astype("float32")
    return terms


def test_values_are_the_bounds_exactly():
    terms = random_terms()
    log_w = np.asarray(terms["log_px_z"] + terms["log_pz"] - terms["log_qz"], "float64")
    assert float(HVMLoss(k=5)(None, terms)) == pytest.approx(-log_w.mean(axis=1).mean(), rel=1e-6)
    iwhvi = -np.mean(np.logaddexp.reduce(log_w, axis=1) - np.log(5))
    assert float(IWHVILoss(k=5, num_reverse_samples=3)(None, terms)) == pytest.approx(iwhvi, rel=1e-6)
    dreg = IWHVILoss(k=5, num_reverse_samples=3, gradient_estimator="dreg")
    assert float(dreg(None, terms)) == float(IWHVILoss(k=5, num_reverse_samples=3)(None, terms))


def test_losses_serialize_and_register():
    assert LOSSES["hvm"] is HVMLoss and LOSSES["iwhvi"] is IWHVILoss
    assert run_serialization_test(HVMLoss(k=2)).sampler_options == {"num_reverse_samples": 0}
    restored = run_serialization_test(IWHVILoss(k=3, num_reverse_samples=50, gradient_estimator="dreg"))
    assert restored.sampler_options == {"num_reverse_samples": 50} and restored.k == 3
    assert "reverse_log_weights_detached" in restored.required_terms


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_reverse_samples": -1}, "Received: num_reverse_samples=-1"),
        ({"k": 0}, "Received: k=0"),
        ({"gradient_estimator": "stl"}, "Received: gradient_estimator='stl'"),
        ({"gradient_estimator": np.array(["dreg"])}, "Received: gradient_estimator=array"),  # not compared per element
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IWHVILoss(**kwargs)


# ------------------------------------------------------------------ pPCA references
@pytest.fixture(scope="module")
def reference():
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(400, weights, bias)
    return weights, bias, x, ppca.exact_log_px(x, weights, bias)


def per_example_bounds(model, x, k, reverse_samples, seed=0):
    """{K: (ELBO over log q^_K, IWAE_k over log q^_K)} per example, all K from the same z (nested noise)."""
    posterior = model.posterior
    size = posterior.aux_dim + posterior.latent_dim
    eps = np.random.default_rng(seed).normal(size=(len(x), k, size + max(reverse_samples) * posterior.aux_dim))
    bounds = {}
    for K in reverse_samples:
        noise = eps[..., : size + K * posterior.aux_dim].astype("float32")
        terms = model.sample_terms(x, noise=noise, terms=("z", "log_px_z", "log_pz", "log_qz"))
        log_w = np.asarray(terms["log_px_z"] + terms["log_pz"] - terms["log_qz"], "float64")
        bounds[K] = (log_w.mean(axis=1), np.logaddexp.reduce(log_w, axis=1) - np.log(k))
    return bounds, terms


def assert_smaller(lower, upper, z_score=5):
    gap = upper - lower
    assert gap.mean() > z_score * gap.std(ddof=1) / np.sqrt(len(gap)), (gap.mean(), gap.std())


def test_hierarchical_bounds_are_ordered_below_the_exact_log_likelihood(reference):
    weights, bias, x, log_px = reference
    # An untrained tau unrelated to q(psi|x) (the direct parameterization; the residual one starts at SIVI's
    # proposal, whose gaps are smaller): the orderings hold for any tau.
    posterior = HierarchicalPosterior(
        3, aux_dim=2, hidden_units=[8], reverse_hidden_units=[8], reverse_residual=False, name="posterior"
    )
    model = ppca.ppca_decoder_vae(weights, bias, posterior, seed=0)
    bounds, _ = per_example_bounds(model, x, k=5, reverse_samples=(0, 5, 50))
    hvm = bounds[0][0]
    assert_smaller(hvm, log_px)  # the ELBO with the hierarchical q's estimate is a lower bound
    assert_smaller(bounds[50][0], log_px)
    for smaller, larger in ((0, 5), (5, 50)):  # IWHVI_{k=5, K} increases with K
        assert_smaller(bounds[smaller][1], bounds[larger][1])
    assert_smaller(bounds[50][1], log_px)
    assert_smaller(hvm, bounds[0][1])  # and with k


def test_hvm_is_below_the_elbo_with_the_exact_q_by_the_reverse_kl(reference):
    weights, bias, x, _ = reference
    a_matrix = ref.mixing_matrix()
    loc_offset, log_scale_offset = 0.4, 0.2
    posterior = ref.tractable_posterior(a_matrix, ppca.DATA_DIM, loc_offset, log_scale_offset)
    model = ppca.ppca_decoder_vae(weights, bias, posterior, seed=0)
    bounds, terms = per_example_bounds(model, x, k=20, reverse_samples=(0,))
    log_p_xz = np.asarray(terms["log_px_z"] + terms["log_pz"], "float64")
    elbo_exact = (log_p_xz - ref.exact_log_q(np.asarray(terms["z"]), a_matrix)).mean(axis=1)
    hvm = bounds[0][0]
    assert_smaller(hvm, elbo_exact)
    # ELBO - HVM = E KL(q(psi|z) || tau(psi|z)), here a constant in closed form.
    kl = float(ref.reverse_kl(np.zeros((1, 3)), a_matrix, loc_offset, log_scale_offset)[0])
    difference = elbo_exact - hvm - kl
    assert abs(difference.mean()) < 4 * difference.std(ddof=1) / np.sqrt(len(difference))


@pytest.mark.slow  # long training (30 epochs)
def test_training_reverse_model_alone_tightens_the_bound(reference):
    """tau trained jointly on the bound: with q and p frozen, only tau moves, and the bound rises."""
    weights, bias, x, _ = reference
    posterior = ref.tractable_posterior(ref.mixing_matrix(), ppca.DATA_DIM, loc_offset=0.8, log_scale_offset=0.5)
    model = ppca.ppca_decoder_vae(weights, bias, posterior, seed=0)
    posterior.auxiliary.trainable = False
    posterior.conditional.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=HVMLoss(k=1))
    before = float(model.evaluate(x, batch_size=400, verbose=0))
    model.fit(x, batch_size=100, epochs=30, verbose=0)
    after = float(model.evaluate(x, batch_size=400, verbose=0))
    assert after < before - 0.5  # the reverse KL (~1.1 nats at the start) shrinks


# ------------------------------------------------------------------ DReG for tau
def control_gradients(model, loss, x, seed):
    """(plain gradient of the bound, the loss's gradient) for tau's variables, from the same draws, flattened."""
    variables = model.gradient_groups()["control"]
    with tf.GradientTape(persistent=True) as tape:
        terms = model.sample_terms(x, loss.k, seed=seed, terms=loss.required_terms, **loss.sampler_options)
        plain = -tf.reduce_mean(loss.bound(terms))
        surrogate = loss.group_losses(terms)["control"]
    flat = [tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(value, variables)], 0) for value in (plain, surrogate)]
    return [np.asarray(g, "float64") for g in flat]


@pytest.mark.slow  # statistical: gradient draws against the plain estimator
@pytest.mark.parametrize("k, K", [(3, 4), (1, 2)])
def test_reverse_model_dreg_gradient_is_unbiased(reference, k, K):
    weights, bias, x, _ = reference
    posterior = ref.tractable_posterior(ref.mixing_matrix(), ppca.DATA_DIM, loc_offset=0.5, log_scale_offset=0.3)
    model = ppca.ppca_decoder_vae(weights, bias, posterior, seed=0)
    loss = IWHVILoss(k=k, num_reverse_samples=K, gradient_estimator="dreg")
    copies = np.repeat(x[:4], 500, axis=0)  # every row draws its own samples: a batch mean is a mean over draws
    seed = keras.random.SeedGenerator(0)
    plain, other = map(np.array, zip(*(control_gradients(model, loss, copies, seed) for _ in range(30))))
    assert np.max(np.abs(plain.mean(axis=0))) > 0.1  # a gradient worth comparing
    difference = other - plain  # paired: both from the same draws
    assert np.max(np.abs(difference)) > 1e-3  # the estimator is not the plain one in disguise
    standard_error = difference.std(axis=0, ddof=1) / np.sqrt(len(difference))
    z_scores = np.abs(difference.mean(axis=0)) / (standard_error + 1e-6)
    assert np.max(z_scores) < 5, z_scores


def test_dreg_changes_only_the_reverse_model_step(binary_data):
    from vizoo.models import VAE

    def model():
        posterior = HierarchicalPosterior(4, aux_dim=3, hidden_units=[8], reverse_hidden_units=[8])
        vae = VAE(input_dim=64, latent_dim=4, hidden_units=[16], posterior=posterior, seed=0)
        vae.build((None, 64))
        return vae

    plain, dreg = model(), model()
    dreg.set_weights(plain.get_weights())
    losses = []
    for vae, estimator in ((plain, None), (dreg, "dreg")):
        vae.compile(optimizer=keras.optimizers.SGD(0.1), loss=IWHVILoss(k=3, num_reverse_samples=4, gradient_estimator=estimator))
        losses.append(vae.fit(binary_data, batch_size=len(binary_data), epochs=1, shuffle=False, verbose=0).history["loss"][0])
    assert losses[0] == losses[1]  # the reported value is the bound
    for group, same in (("generative", True), ("inference", True), ("control", False)):
        moved = [
            np.max(np.abs(np.asarray(a) - np.asarray(b)))
            for a, b in zip(plain.gradient_groups()[group], dreg.gradient_groups()[group])
        ]
        assert (max(moved) < 1e-6) == same, (group, max(moved))


def test_losses_pass_the_shared_bound_loss_checks():
    from tests.helpers import random_terms as shared_random_terms
    from tests.helpers import run_bound_loss_test

    def mean_log_weight(terms):
        return np.mean(terms["log_px_z"] + terms["log_pz"] - terms["log_qz"], axis=1)

    def iwae(terms):
        log_w = terms["log_px_z"] + terms["log_pz"] - terms["log_qz"]
        return np.logaddexp.reduce(log_w, axis=1) - np.log(log_w.shape[1])

    run_bound_loss_test(HVMLoss(k=3), mean_log_weight)
    run_bound_loss_test(IWHVILoss(k=4, num_reverse_samples=2), iwae)
    dreg = IWHVILoss(k=4, num_reverse_samples=2, gradient_estimator="dreg")
    terms = shared_random_terms(IWHVILoss(k=4))
    terms["reverse_log_weights_detached"] = np.random.default_rng(1).normal(size=(7, 4, 3)).astype("float32")
    run_bound_loss_test(dreg, iwae, terms=terms)


@pytest.mark.slow  # long training
def test_training_on_ppca_brings_the_iwhvi_bound_close_to_the_exact_log_likelihood(reference):
    """q, tau trained jointly with IWHVI (decoder frozen): the bound nears log p(x) and still orders with K."""
    weights, bias, x, log_px = reference
    posterior = HierarchicalPosterior(3, aux_dim=2, hidden_units=[8], reverse_hidden_units=[8], name="posterior")
    model = ppca.ppca_decoder_vae(weights, bias, posterior, seed=0)
    steps = 600
    # Near the optimum the gradient noise shrinks but Adam's steps do not: decay the rate.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.03, decay_steps=steps, decay_rate=0.03)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=IWHVILoss(k=1, num_reverse_samples=5), steps_per_execution=50)
    model.fit(tf.data.Dataset.from_tensors(x).repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    bounds, _ = per_example_bounds(model, x, k=5, reverse_samples=(0, 50))
    assert_smaller(bounds[0][0], bounds[0][1])  # HVM < IWHVI_{5,0}
    # IWHVI_{5,0} <= IWHVI_{5,50}: with the defaults (residual tau, DReG) tau is close enough to q(psi|z, x)
    # after training that K adds little (measured: 0.007 +- 0.006 nats), so only "not smaller beyond its
    # Monte-Carlo error" is asserted (before #25, with tau unrelated to q(psi|x) at the start, it was > 5 s.e.).
    gain = bounds[50][1] - bounds[0][1]
    assert gain.mean() > -3 * gain.std(ddof=1) / np.sqrt(len(gain))
    gap = log_px - bounds[50][1]
    assert gap.mean() > -3 * gap.std(ddof=1) / np.sqrt(len(gap))  # a lower bound (within its Monte-Carlo error)
    # Measured: 0.006, HVM 0.07 below log p(x) (before #25: 0.03, HVM 0.67 below).
    assert gap.mean() < 0.15


# ------------------------------------------------------------------ defaults (issue #25)
def test_tau_gets_dreg_by_default_and_sivi_refuses_an_explicit_dreg():
    from vizoo.models import VAE

    assert IWHVILoss().gradient_estimator == "auto" and "reverse_log_weights_detached" in IWHVILoss().required_terms
    plain = IWHVILoss(gradient_estimator=None)  # IWAELoss's spelling, and that of configs saved before "auto"
    assert plain.gradient_estimator == "plain" and plain.objectives(random_terms()) is None
    assert IWHVILoss.from_config({**IWHVILoss().get_config(), "gradient_estimator": None}).gradient_estimator == "plain"
    assert run_serialization_test(IWHVILoss(k=2, num_reverse_samples=3)).gradient_estimator == "auto"
    terms = random_terms()  # "auto" is "dreg" for a learned tau: the same surrogate
    auto, dreg = (IWHVILoss(k=5, num_reverse_samples=3, gradient_estimator=e).objectives(terms)["control"] for e in ("auto", "dreg"))
    np.testing.assert_array_equal(auto, dreg)

    def model(reverse_model):
        posterior = HierarchicalPosterior(4, aux_dim=3, hidden_units=[8], reverse_model=reverse_model)
        return VAE(input_dim=64, latent_dim=4, hidden_units=[16], posterior=posterior, seed=0)

    sivi = model("sivi")
    for estimator in ("auto", "plain"):
        sivi.compile(optimizer="adam", loss=IWHVILoss(k=2, num_reverse_samples=3, gradient_estimator=estimator))
    with pytest.raises(ValueError, match="SIVI has none .* Received: gradient_estimator='dreg', reverse_model='sivi'"):
        sivi.compile(optimizer="adam", loss=IWHVILoss(k=2, num_reverse_samples=3, gradient_estimator="dreg"))
    model("learned").compile(optimizer="adam", loss=IWHVILoss(k=2, num_reverse_samples=3, gradient_estimator="dreg"))


@pytest.mark.slow  # training (40 steps)
def test_training_tau_from_its_residual_start_tightens_the_estimate_below_sivis(reference):
    """q frozen at the tractable q of tests/hierarchical_reference.py, tau from its start (= q(psi|x), SIVI) trained
    alone with the default IWHVI loss: log q^_K is then tighter than SIVI's at K = 0, 1, 10 (exact log q in closed form).

    The same with joint training of a q with MLPs, several seeds and the parameterizations before #25:
    benchmarks/hierarchical_tau.py (docs/benchmarks_hierarchical.md).
    """
    weights, bias, x, _ = reference
    a_matrix = ref.mixing_matrix()
    posterior = ref.tractable_posterior(a_matrix, ppca.DATA_DIM)
    posterior.reverse.set_weights([np.zeros_like(w) for w in posterior.reverse.get_weights()])  # its initialisation
    model = ppca.ppca_decoder_vae(weights, bias, posterior, seed=0)
    posterior.auxiliary.trainable = False
    posterior.conditional.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss=IWHVILoss(k=1, num_reverse_samples=10), steps_per_execution=40)
    model.fit(tf.data.Dataset.from_tensor_slices(x).repeat().batch(100), steps_per_epoch=40, epochs=1, verbose=0)
    size = ref.AUX_DIM + ref.LATENT_DIM
    eps = np.random.default_rng(1).normal(size=(len(x), 5, size + 10 * ref.AUX_DIM)).astype("float32")
    params = model.encode(x)
    for K in (0, 1, 10):
        noise = eps[..., : size + K * ref.AUX_DIM]  # the same z and psi_0 for both
        z, tau = posterior.transform(params, noise)
        _, sivi = posterior.transform(params, noise, reverse_model="sivi")
        exact = ref.exact_log_q(np.asarray(z), a_matrix)
        gap_tau, gap_sivi = np.asarray(tau, "float64") - exact, np.asarray(sivi, "float64") - exact
        # Tighter, paired over 2,000 z (measured after 40 steps: 0.20 vs 1.41 nats at K=0, 0.10 vs 0.94 at K=1,
        # 0.025 vs 0.27 at K=10; 16 to 47 standard errors apart).
        assert_smaller(gap_tau.reshape(-1), gap_sivi.reshape(-1))
        assert gap_tau.mean() > -3 * gap_tau.std(ddof=1) / np.sqrt(gap_tau.size)  # still an upper bound on log q
