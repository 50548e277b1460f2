"""VIMCO and NVIL: the value is the exact bound; the gradient matches exact enumeration on a tiny SBN."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tests import sbn_reference as ref
from tests.helpers import run_serialization_test
from vizoo.losses import ELBOLoss, IWAELoss, NVILLoss, VIMCOLoss, logmeanexp
from vizoo.losses.vimco_loss import leave_one_out_bounds
from vizoo.models import VAE, SigmoidBeliefNetwork

CORE = ("log_px_z", "log_pz", "log_qz")
DRAWS, COPIES = 40, 1000  # 40 gradient draws, each a mean over 1,000 copies of every example


class ScoreFunctionIWAELoss(VIMCOLoss):
    """The naive score-function estimator of the same bound: signal L for every sample, no baseline."""

    def objectives(self, terms):
        log_w = self.log_weights(terms)
        bound = logmeanexp(log_w, axis=1)
        return {"inference": ops.stop_gradient(bound) * ops.sum(terms["log_qz"], axis=1) + bound}


def flat(gradients):
    return np.concatenate([np.reshape(g, [-1]) for g in gradients]).astype("float64")


def estimator_draws(model, loss, seed=0):
    """`{group: [DRAWS, params]}` of the loss's gradient (each group its surrogate's, else the bound's),
    and the plain gradient of the bound for the inference group (the samples held fixed)."""
    x = np.repeat(ref.DATA, COPIES, axis=0)  # every row draws its own samples: a batch mean is a mean over draws
    seed = keras.random.SeedGenerator(seed)
    model.compile(optimizer="sgd", loss=loss)  # what training does: a baseline the loss does not read is frozen
    groups = {g: v for g, v in model.gradient_groups().items() if v}
    draws, plain = {g: [] for g in groups}, []
    for _ in range(DRAWS):
        with tf.GradientTape(persistent=True) as tape:
            terms = model.sample_terms(x, loss.k, seed=seed, terms=tuple(dict.fromkeys(CORE + loss.required_terms)))
            bound = -tf.reduce_mean(loss.bound(terms))
            surrogates = loss.group_losses(terms)
        for group, variables in groups.items():
            draws[group].append(flat(tape.gradient(surrogates.get(group, bound), variables)))
        plain.append(flat(tape.gradient(bound, groups["inference"])))
    return {g: np.array(d) for g, d in draws.items()}, np.array(plain)


def exact_gradients(model, objective):
    """`{group: gradient}` of the scalar `objective(model)` (an enumerated expectation)."""
    groups = {g: v for g, v in model.gradient_groups().items() if v}
    with tf.GradientTape(persistent=True) as tape:
        value = objective(model)
    gradients = {g: tape.gradient(value, v) for g, v in groups.items()}
    return {g: flat([np.zeros(v.shape) if d is None else d for d, v in zip(gradients[g], groups[g])]) for g in groups}


def z_scores(draws, exact):
    """|mean(draws) - exact| / standard error, per parameter."""
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    return np.abs(draws.mean(axis=0) - exact) / (standard_error + 1e-8)


# ------------------------------------------------------------------ values
def random_terms(rng, k):
    terms = {name: (rng.normal(size=(6, k)) * 30).astype("float32") for name in CORE}
    terms["baseline"] = rng.normal(size=(6, 1)).astype("float32")
    terms["signal_scale"] = np.full((6, 1), 3.0, "float32")
    return terms


def test_values_are_the_bounds_exactly():
    terms = random_terms(np.random.default_rng(0), 5)
    assert float(VIMCOLoss(k=5)(None, terms)) == float(IWAELoss(k=5)(None, terms))
    for loss in (NVILLoss(k=5), NVILLoss(k=5, baselines=False)):
        assert float(loss(None, terms)) == float(ELBOLoss(k=5)(None, terms))


def test_leave_one_out_bounds_swap_in_the_geometric_mean_of_the_others():
    rng = np.random.default_rng(1)
    log_w = rng.normal(size=(4, 5)) * 20 - 300.0
    log_w[2, 3] = -np.inf  # a zero weight: its own baseline is that of the others, theirs have a zero in the mean
    expected = np.zeros_like(log_w)
    for b, j in itertools.product(range(4), range(5)):
        others = np.delete(log_w[b], j)
        swapped = np.append(others, others.mean())  # log of the geometric mean of the other weights
        expected[b, j] = np.logaddexp.reduce(swapped) - np.log(5)
    np.testing.assert_allclose(leave_one_out_bounds(log_w.astype("float32")), expected, atol=1e-3)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="VIMCOLoss needs k >= 2.*Received: k=1"):
        VIMCOLoss(k=1)
    with pytest.raises(ValueError, match="Received: k=0"):
        NVILLoss(k=0)
    with pytest.raises(ValueError, match="Received: baselines='yes'"):
        NVILLoss(baselines="yes")


@pytest.mark.parametrize("loss", [VIMCOLoss(k=7), NVILLoss(k=2, baselines=False), NVILLoss()])
def test_losses_serialize(loss):
    restored = run_serialization_test(loss)
    assert restored.k == loss.k and restored.required_terms == loss.required_terms


def test_reparameterized_posteriors_and_missing_baselines_are_refused():
    for loss in (VIMCOLoss(k=3), NVILLoss()):
        with pytest.raises(ValueError, match=f"{type(loss).__name__} is a score-function estimator.*"
                           "Received: loss=.*posterior=DiagonalGaussianPosterior"):
            VAE(input_dim=5, latent_dim=2, hidden_units=[]).compile(optimizer="adam", loss=loss)
    model = SigmoidBeliefNetwork(input_dim=5, latent_dims=[2], baseline_hidden_units=None)
    with pytest.raises(ValueError, match="NVILLoss.*needs the term 'baseline'.*baseline_hidden_units=None"):
        model.compile(optimizer="adam", loss=NVILLoss())
    model.compile(optimizer="adam", loss=NVILLoss(baselines=False))  # plain REINFORCE needs no baseline


# ---------------------------------------------------- the exact reference itself
def test_enumeration_gives_exact_log_px_and_ordered_bounds():
    model = ref.tiny_sbn()
    log_px = ref.exact_log_px(model, ref.DATA).numpy()
    np.testing.assert_allclose(log_px, ref.numpy_log_px(model, ref.DATA), atol=1e-5)
    _, log_q = ref.enumerated_terms(model, ref.DATA)
    np.testing.assert_allclose(log_q, ref.numpy_log_q(model, ref.DATA), atol=1e-5)
    np.testing.assert_allclose(np.exp(log_q).sum(axis=1), 1.0, atol=1e-5)
    bounds = [ref.exact_bound(model, ref.DATA, k).numpy() for k in (1, 2, 3)]
    assert np.all(bounds[0] < bounds[1]) and np.all(bounds[1] < bounds[2]) and np.all(bounds[2] < log_px)
    # The model's own samples: their mean bound matches the enumerated one (the sampler draws from q).
    loss = VIMCOLoss(k=3)
    x = np.repeat(ref.DATA, 4000, axis=0)
    sampled = loss.bound(model.sample_terms(x, 3, seed=0)).numpy().reshape(3, 4000)
    z = np.abs(sampled.mean(axis=1) - bounds[2]) / (sampled.std(axis=1) / np.sqrt(4000))
    assert np.max(z) < 5


# ------------------------------------------------------------- the gradients
@pytest.mark.slow  # statistical: 40 x 1,000 gradient draws against enumeration
@pytest.mark.parametrize("k", [2, 3])
def test_vimco_gradient_is_the_exact_gradient_of_the_bound(k):
    model = ref.tiny_sbn()
    loss = VIMCOLoss(k=k)
    draws, plain = estimator_draws(model, loss)
    exact = exact_gradients(model, lambda m: -tf.reduce_mean(ref.exact_bound(m, ref.DATA, k)))
    assert "control" not in draws  # VIMCO leaves the baseline network out
    assert np.max(np.abs(exact["inference"])) > 0.05 and np.max(np.abs(exact["generative"])) > 0.1
    for group in ("generative", "inference"):
        assert np.max(z_scores(draws[group], exact[group])) < 5, group
    # The test has power: the gradient of the bound with the samples held fixed is far off.
    assert np.max(z_scores(plain, exact["inference"])) > 20


@pytest.mark.slow  # statistical
def test_vimco_variance_is_below_reinforce():
    model = ref.tiny_sbn()
    vimco, _ = estimator_draws(model, VIMCOLoss(k=3))
    reinforce, _ = estimator_draws(model, ScoreFunctionIWAELoss(k=3))
    exact = exact_gradients(model, lambda m: -tf.reduce_mean(ref.exact_bound(m, ref.DATA, 3)))
    assert np.max(z_scores(reinforce["inference"], exact["inference"])) < 5  # both unbiased
    ratio = vimco["inference"].var(axis=0).sum() / reinforce["inference"].var(axis=0).sum()
    assert ratio < 0.1, ratio  # about 0.008 here


def nvil_model(signal_mean=-2.0, signal_variance=4.0):
    model = ref.tiny_sbn()
    model.signal_mean.assign(signal_mean)
    model.signal_variance.assign(signal_variance)  # signal_scale s = max(1, sqrt(v)) = 2
    return model


@pytest.mark.slow  # statistical
def test_nvil_gradient_is_the_exact_gradient_of_the_elbo_up_to_its_scale():
    model = nvil_model()
    draws, _ = estimator_draws(model, NVILLoss())
    exact = exact_gradients(model, lambda m: -tf.reduce_mean(ref.exact_bound(m, ref.DATA, 1)))
    control = exact_gradients(model, lambda m: tf.reduce_mean(ref.exact_baseline_error(m, ref.DATA)))
    assert np.max(z_scores(draws["generative"], exact["generative"])) < 5
    # The inference gradient is the ELBO's divided by the scale s = 2 of the running variance.
    assert np.max(z_scores(2.0 * draws["inference"], exact["inference"])) < 5
    assert np.max(z_scores(draws["inference"], exact["inference"])) > 20  # so the scale is really applied
    # The baseline network follows the gradient of E_q (l - b(x) - c)^2.
    assert np.max(np.abs(control["control"])) > 0.1
    assert np.max(z_scores(draws["control"], control["control"])) < 5


@pytest.mark.slow  # statistical
def test_plain_reinforce_is_unbiased_and_nvil_reduces_its_variance():
    model = ref.tiny_sbn()
    reinforce, _ = estimator_draws(model, NVILLoss(baselines=False))
    exact = exact_gradients(model, lambda m: -tf.reduce_mean(ref.exact_bound(m, ref.DATA, 1)))
    assert "control" not in reinforce  # the baseline is frozen under a loss that does not read it
    assert np.max(z_scores(reinforce["inference"], exact["inference"])) < 5
    # Centred at the mean learning signal (as the running mean c tracks it), variance drops.
    model = nvil_model(signal_mean=float(tf.reduce_mean(ref.exact_bound(model, ref.DATA, 1))), signal_variance=1.0)
    nvil, _ = estimator_draws(model, NVILLoss())
    ratio = nvil["inference"].var(axis=0).sum() / reinforce["inference"].var(axis=0).sum()
    assert ratio < 0.5, ratio  # about 0.17 here


@pytest.mark.parametrize("loss", [VIMCOLoss(k=3), NVILLoss(k=2)], ids=["vimco", "nvil"])
def test_training_step_reports_the_bound(loss):
    model = ref.tiny_sbn()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    x = np.repeat(ref.DATA, 10, axis=0)
    state = model.seed_generator.state.numpy()
    bound = loss.bound(model.sample_terms(x, loss.k, terms=CORE + loss.required_terms)).numpy()
    model.seed_generator.state.assign(state)  # the step draws the same samples
    logs = model.train_step((x,))
    np.testing.assert_allclose(float(logs["loss"]), -np.mean(bound), rtol=1e-6)


@pytest.mark.parametrize("loss", [VIMCOLoss(k=4), NVILLoss(k=4), NVILLoss(k=2, baselines=False)], ids=["vimco", "nvil", "reinforce"])
def test_losses_pass_the_shared_bound_loss_checks(loss):
    from scipy.special import logsumexp

    from tests.helpers import run_bound_loss_test

    rng = np.random.default_rng(2)
    terms = {name: (-30.0 * rng.random((7, loss.k)) if name == "log_px_z" else rng.normal(size=(7, loss.k)) - 2.0).astype("float32")
             for name in CORE}
    terms.update(baseline=rng.normal(size=(7, 1)).astype("float32"), signal_scale=np.full((7, 1), 2.0, "float32"))
    terms = {name: terms[name] for name in loss.required_terms}

    def reference(t):  # VIMCO reports the IWAE-k bound, NVIL the ELBO (mean over k)
        log_w = t["log_px_z"] + t["log_pz"] - t["log_qz"]
        return logsumexp(log_w, axis=1) - np.log(log_w.shape[1]) if isinstance(loss, VIMCOLoss) else log_w.mean(axis=1)

    run_bound_loss_test(loss, reference, terms=terms)
