"""KL warm-up and free bits change the gradients, never the reported bound (exact references)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import run_bound_loss_test, standard_normal_noise
from vizoo.callbacks import KLWarmup
from vizoo.losses import ELBOLoss, IWAELoss, logmeanexp
from vizoo.models import VAE

BATCH, K, LATENT = 8, 3, 4


@pytest.fixture
def setup():
    model = VAE(input_dim=6, latent_dim=LATENT, hidden_units=[5], seed=0)
    model.build((None, 6))
    x = (np.random.default_rng(0).random((BATCH, 6)) < 0.5).astype("float32")
    noise = standard_normal_noise(model, BATCH, K)
    return model, x, noise


def _step_gradients(model, x, noise, loss):
    """(reported value, {variable path: gradient}) exactly as train_step forms them, for fixed noise."""
    terms_needed = tuple(dict.fromkeys(("log_px_z", "log_pz", "log_qz") + tuple(loss.required_terms)))
    with tf.GradientTape(persistent=True) as tape:
        terms = model.sample_terms(x, noise=noise, terms=terms_needed)
        value = loss(None, terms)
        group_losses = loss.group_losses(terms) or {}
    gradients = {}
    for group, members in model._trainable_groups().items():
        if members:
            target = group_losses.get(group, value)
            gradients.update({v.path: g for v, g in zip(members, tape.gradient(target, members))})
    return float(value), gradients


def _reference_gradients(model, x, noise, objective):
    """Gradients of `-objective(terms)` (a scalar to maximize) for every trainable variable."""
    with tf.GradientTape() as tape:
        terms = model.sample_terms(x, noise=noise, terms=("log_px_z", "log_pz", "log_qz", "kl", "kl_per_dim"))
        target = -objective(terms)
    variables = model.trainable_variables
    return {v.path: g for v, g in zip(variables, tape.gradient(target, variables))}


def _assert_gradients(actual, expected, equal=True):
    assert sorted(actual) == sorted(expected)
    close = [np.allclose(actual[p], expected[p], atol=1e-6, rtol=1e-5) for p in actual]
    if equal:
        assert all(close), [p for p, c in zip(actual, close) if not c]
    else:
        assert not all(close), "the gradients should differ"


def _elbo(terms):
    return tf.reduce_mean(tf.reduce_mean(terms["log_px_z"] + terms["log_pz"] - terms["log_qz"], axis=1))


def _iwae(terms):
    return tf.reduce_mean(logmeanexp(terms["log_px_z"] + terms["log_pz"] - terms["log_qz"], axis=1))


def _check_warmup(setup, beta, loss, plain_loss, tempered):
    """At kl_weight beta: the value is the plain bound, the gradient the tempered objective's (the plain one at beta = 1)."""
    model, x, noise = setup
    model.kl_weight.assign(beta)
    value, gradients = _step_gradients(model, x, noise, loss)
    plain_value, plain = _step_gradients(model, x, noise, plain_loss)
    assert value == pytest.approx(plain_value, abs=1e-6)  # the exact bound, whatever beta
    _assert_gradients(gradients, _reference_gradients(model, x, noise, tempered))
    _assert_gradients(gradients, plain, equal=beta == 1.0)  # beta = 1: the plain gradients


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_elbo_warmup_reports_the_bound_and_follows_the_tempered_gradient(setup, beta):
    def tempered(terms):
        return tf.reduce_mean(tf.reduce_mean(terms["log_px_z"] + beta * (terms["log_pz"] - terms["log_qz"]), axis=1))

    _check_warmup(setup, beta, ELBOLoss(k=K, kl_warmup_epochs=5), ELBOLoss(k=K), tempered)


@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_analytic_elbo_warmup(setup, beta):
    def tempered(terms):
        return tf.reduce_mean(tf.reduce_mean(terms["log_px_z"], axis=1) - beta * terms["kl"][:, 0])

    _check_warmup(
        setup, beta, ELBOLoss(k=K, analytic_kl=True, kl_warmup_epochs=2), ELBOLoss(k=K, analytic_kl=True), tempered
    )


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_iwae_warmup_tempers_the_log_weights_inside_the_logsumexp(setup, beta):
    def tempered(terms):
        return tf.reduce_mean(logmeanexp(terms["log_px_z"] + beta * (terms["log_pz"] - terms["log_qz"]), axis=1))

    _check_warmup(setup, beta, IWAELoss(k=K, kl_warmup_epochs=3), IWAELoss(k=K), tempered)


def _kl_per_group(model, x, groups):
    kl = np.asarray(model.sample_terms(x, 1, terms=("kl_per_dim",))["kl_per_dim"], dtype=np.float64)
    return np.stack([part.sum(axis=1) for part in np.array_split(kl, groups, axis=1)], axis=1)  # [batch, groups]


def _free_bits_objective(free_bits, groups, beta=1.0):
    """E log p(x|z) - beta sum_g max(lambda, mean over the batch of KL_g), written directly (the paper's form)."""

    def objective(terms):
        kl = terms["kl_per_dim"]
        kl_groups = tf.stack([tf.reduce_sum(part, axis=1) for part in tf.split(kl, groups, axis=1)], axis=1)
        penalty = tf.reduce_sum(tf.maximum(free_bits, tf.reduce_mean(kl_groups, axis=0)))
        return tf.reduce_mean(tf.reduce_mean(terms["log_px_z"], axis=1)) - beta * penalty

    return objective


@pytest.mark.parametrize("analytic_kl", [False, True])
def test_free_bits_reports_the_bound_and_follows_the_free_bits_gradient(setup, analytic_kl):
    model, x, noise = setup
    groups = 2
    kl = _kl_per_group(model, x, groups).mean(axis=0)  # the minibatch KL of each group
    plain_value, plain = _step_gradients(model, x, noise, ELBOLoss(k=K, analytic_kl=analytic_kl))
    analytic_value, analytic = _step_gradients(model, x, noise, ELBOLoss(k=K, analytic_kl=True))
    between = float(np.mean(kl))  # above one group's KL, below the other's
    assert kl.min() < between < kl.max()
    for free_bits in (kl.min() / 2, between, kl.max() * 2):
        loss = ELBOLoss(k=K, analytic_kl=analytic_kl, free_bits=float(free_bits), free_bits_groups=groups)
        value, gradients = _step_gradients(model, x, noise, loss)
        assert value == pytest.approx(plain_value, abs=1e-6)  # the exact bound, whatever lambda
        _assert_gradients(gradients, _reference_gradients(model, x, noise, _free_bits_objective(free_bits, groups)))
        # lambda below every group's KL: the closed-form-KL ELBO's gradient; above any: the KL is not pushed
        _assert_gradients(gradients, analytic, equal=free_bits < kl.min())


def test_free_bits_with_warmup_and_one_group_per_dimension(setup):
    model, x, noise = setup
    model.kl_weight.assign(0.5)
    kl = _kl_per_group(model, x, LATENT).mean(axis=0)
    free_bits = float(np.median(kl))
    loss = ELBOLoss(k=K, kl_warmup_epochs=4, free_bits=free_bits)
    value, gradients = _step_gradients(model, x, noise, loss)
    assert value == pytest.approx(_step_gradients(model, x, noise, ELBOLoss(k=K))[0], abs=1e-6)
    reference = _reference_gradients(model, x, noise, _free_bits_objective(free_bits, LATENT, beta=0.5))
    _assert_gradients(gradients, reference)


def test_train_step_reports_the_exact_bound_under_warmup_and_free_bits(setup):
    model, x, _ = setup
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=ELBOLoss(k=K, kl_warmup_epochs=3, free_bits=0.5))
    model.kl_weight.assign(0.2)
    state = model.seed_generator.state.numpy()
    logs = model.train_on_batch(x, return_dict=True)
    model.seed_generator.state.assign(state)  # the same noise again; lr=0 kept the weights
    terms = model(x)
    assert logs["loss"] == pytest.approx(-float(np.mean(ELBOLoss(k=K).bound(terms))), abs=1e-5)


def test_fit_adds_the_warmup_schedule_and_logs_beta(setup):
    model, x, _ = setup
    model.compile(optimizer="adam", loss=IWAELoss(k=2, kl_warmup_epochs=4))
    history = model.fit(x, epochs=6, batch_size=4, verbose=0)
    assert history.history["kl_weight"] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    history = model.fit(x, epochs=2, batch_size=4, verbose=0, callbacks=[KLWarmup(2)])  # one's own schedule
    assert history.history["kl_weight"] == pytest.approx([0.0, 0.5])


def test_kl_weight_is_saved_with_the_model(setup, tmp_path):
    model, _, _ = setup
    model.compile(optimizer="adam", loss=ELBOLoss(kl_warmup_epochs=3))
    model.kl_weight.assign(0.75)
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert float(loaded.kl_weight) == 0.75 and loaded.loss.kl_warmup_epochs == 3


def test_warmup_callback_needs_a_loss_that_reads_beta(setup):
    model, x, _ = setup
    model.compile(optimizer="adam", loss=ELBOLoss())
    with pytest.raises(ValueError, match="ELBOLoss\\(kl_warmup_epochs=N\\).*Received: loss=ELBOLoss"):
        model.fit(x, epochs=1, verbose=0, callbacks=[KLWarmup(3)])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ELBOLoss(kl_warmup_epochs=-1), "Received: kl_warmup_epochs=-1"),
        (lambda: ELBOLoss(kl_warmup_epochs=1.5), "Received: kl_warmup_epochs=1.5"),
        (lambda: ELBOLoss(free_bits=-0.1), "Received: free_bits=-0.1"),
        (lambda: ELBOLoss(free_bits=float("nan")), "Received: free_bits=nan"),
        (lambda: ELBOLoss(free_bits_groups=2), "free_bits_groups applies with free_bits > 0"),
        (lambda: ELBOLoss(free_bits=1.0, free_bits_groups=0), "Received: free_bits_groups=0"),
        (lambda: IWAELoss(kl_warmup_epochs=2, gradient_estimator="dreg"), "gradient_estimator='dreg'"),
        (lambda: KLWarmup(0), "Received: epochs=0"),
    ],
)
def test_bad_options_are_named(make, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)")):
        make()


def test_free_bits_needs_a_factorized_posterior_and_more_dimensions_than_groups(setup):
    model, x, _ = setup
    with pytest.raises(ValueError, match="needs the term 'kl_per_dim'.*FullCovarianceGaussianPosterior"):
        VAE(6, 2, hidden_units=[4], posterior="full_covariance").compile(loss=ELBOLoss(free_bits=1.0))
    with pytest.raises(ValueError, match=f"at most the latent dimension \\({LATENT}\\). Received: free_bits_groups={LATENT + 1}"):
        model.compile(optimizer="adam", loss=ELBOLoss(free_bits=1.0, free_bits_groups=LATENT + 1))  # at compile


@pytest.mark.parametrize(
    "loss",
    [ELBOLoss(k=2, kl_warmup_epochs=3), ELBOLoss(k=2, free_bits=0.5, free_bits_groups=2),
     ELBOLoss(analytic_kl=True, kl_warmup_epochs=2, free_bits=0.1), IWAELoss(k=3, kl_warmup_epochs=5)],
    ids=["elbo_warmup", "elbo_free_bits", "analytic_both", "iwae_warmup"],
)
def test_shared_bound_loss_checks(loss):
    rng = np.random.default_rng(0)
    terms = {
        "log_px_z": -30 * rng.random((7, loss.k)),
        "log_pz": rng.normal(size=(7, loss.k)) - 2,
        "log_qz": rng.normal(size=(7, loss.k)) - 2,
        "kl": 5 * rng.random((7, 1)),
        "kl_weight": np.full((7, 1), 0.3),
        "kl_per_dim": rng.random((7, 4)),
    }
    terms = {name: terms[name].astype("float32") for name in loss.required_terms}

    def reference(t):
        if getattr(loss, "analytic_kl", False):
            return t["log_px_z"].mean(axis=1) - t["kl"][:, 0]
        log_w = t["log_px_z"] + t["log_pz"] - t["log_qz"]
        if isinstance(loss, IWAELoss):
            return np.logaddexp.reduce(log_w, axis=1) - np.log(loss.k)
        return log_w.mean(axis=1)

    run_bound_loss_test(loss, reference, terms)


def test_kl_weight_is_read_in_full_precision_under_mixed_float16():
    model = VAE(input_dim=8, latent_dim=2, hidden_units=[4], seed=0, dtype="mixed_float16")
    model.compile(optimizer="adam", loss=ELBOLoss(kl_warmup_epochs=3))
    model.kl_weight.assign(0.1234567)  # float16 would read 0.12347
    terms = model(np.zeros((2, 8), "float32"))
    assert terms["kl_weight"].dtype == "float32"
    assert float(np.max(terms["kl_weight"])) == np.float32(0.1234567)
