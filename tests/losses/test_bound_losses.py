import numpy as np
import pytest
from scipy.special import logsumexp

from tests.helpers import run_bound_loss_test
from vizoo.losses import LOSSES, ELBOLoss, IWAELoss


def random_terms(batch=7, k=5, scale=30.0, seed=0):
    rng = np.random.default_rng(seed)
    terms = {
        "log_px_z": -scale * rng.random((batch, k)),
        "log_pz": rng.normal(size=(batch, k)) - 3.0,
        "log_qz": rng.normal(size=(batch, k)) - 2.0,
    }
    return {key: value.astype("float32") for key, value in terms.items()}


def log_weights64(terms):
    return (terms["log_px_z"].astype("float64") + terms["log_pz"] - terms["log_qz"])


def iwae64(k):
    return lambda terms: logsumexp(log_weights64(terms), axis=1) - np.log(k)


@pytest.mark.parametrize(
    "loss, reference",
    [
        (ELBOLoss(k=3), lambda terms: np.mean(log_weights64(terms), axis=1)),
        (ELBOLoss(k=4, analytic_kl=True), lambda terms: np.mean(terms["log_px_z"], axis=1) - terms["kl"][:, 0]),
        (IWAELoss(k=1), iwae64(1)),
        (IWAELoss(k=5), iwae64(5)),
        (IWAELoss(k=5, gradient_estimator="dreg"), iwae64(5)),
        (IWAELoss(k=5, gradient_estimator="stl"), iwae64(5)),
    ],
    ids=["elbo", "elbo_analytic_kl", "iwae1", "iwae5", "iwae5_dreg", "iwae5_stl"],
)
def test_every_bound_passes_the_shared_checks(loss, reference):
    # Value = the float64 bound (also at log-weights ~ -1e4), sample weights, y_true ignored,
    # surrogates on known groups, missing terms named, serialization (tests/helpers.py).
    run_bound_loss_test(loss, reference)


def test_iwae_value_is_the_negated_bound():
    terms = random_terms(k=5)
    expected = -np.mean(logsumexp(log_weights64(terms), axis=1) - np.log(5))
    assert float(IWAELoss(k=5)(None, terms)) == pytest.approx(expected, abs=1e-4)


def test_iwae_is_stable_for_extreme_log_weights():
    terms = random_terms(k=50, scale=1e4)  # weights far below float32's range
    expected = -np.mean(logsumexp(log_weights64(terms), axis=1) - np.log(50))
    value = float(IWAELoss(k=50)(None, terms))
    assert np.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-6)


def test_elbo_value_is_the_mean_log_weight():
    terms = random_terms(k=3)
    expected = -np.mean(log_weights64(terms))
    assert float(ELBOLoss(k=3)(None, terms)) == pytest.approx(expected, abs=1e-4)


def test_elbo_with_analytic_kl_uses_the_kl_term():
    terms = random_terms(k=4)
    terms["kl"] = np.arange(1, 8, dtype="float32")[:, None]
    expected = -np.mean(terms["log_px_z"].astype("float64").mean(axis=1) - terms["kl"][:, 0])
    assert float(ELBOLoss(k=4, analytic_kl=True)(None, terms)) == pytest.approx(expected, abs=1e-4)


def test_iwae_with_k_1_equals_elbo_with_k_1():
    terms = random_terms(k=1)
    assert float(IWAELoss(k=1)(None, terms)) == pytest.approx(float(ELBOLoss(k=1)(None, terms)), abs=1e-5)


def test_bounds_are_ordered_on_the_same_samples():
    terms = random_terms(k=10, scale=5.0)
    # Jensen: the mean of log w never exceeds log of the mean of w.
    assert float(ELBOLoss(k=10)(None, terms)) >= float(IWAELoss(k=10)(None, terms))


def test_sample_weight_weights_examples():
    terms = random_terms(batch=4, k=2)
    weights = np.array([1.0, 0.0, 2.0, 1.0], dtype="float32")
    per_example = -(logsumexp(log_weights64(terms), axis=1) - np.log(2))
    expected = np.sum(per_example * weights) / 4  # Keras' sum_over_batch_size
    assert float(IWAELoss(k=2)(None, terms, sample_weight=weights)) == pytest.approx(expected, abs=1e-4)


def test_y_true_is_ignored():
    terms = random_terms()
    assert float(IWAELoss()(np.zeros((7, 64)), terms)) == float(IWAELoss()(None, terms))


@pytest.mark.parametrize("cls", [ELBOLoss, IWAELoss])
@pytest.mark.parametrize("k", [0, -3, 2.5, True, "5", None])
def test_invalid_k_is_rejected(cls, k):
    with pytest.raises(ValueError, match=r"k must be a positive integer. Received: k="):
        cls(k=k)


def test_k_is_read_only():
    with pytest.raises(AttributeError):
        IWAELoss(k=5).k = 50


def test_missing_terms_are_named():
    terms = random_terms()
    del terms["log_qz"]
    with pytest.raises(ValueError, match="missing \\['log_qz'\\]"):
        IWAELoss()(None, terms)
    with pytest.raises(ValueError, match="missing \\['kl'\\]"):
        ELBOLoss(analytic_kl=True)(None, random_terms())


def test_terms_of_other_shapes_are_named():
    flat = {key: value[:, 0] for key, value in random_terms().items()}
    with pytest.raises(ValueError, match="log-density terms of one shape \\[batch, k\\]. Received: terms of shapes"):
        IWAELoss()(None, flat)
    mixed = random_terms()
    mixed["log_qz"] = random_terms(k=4)["log_qz"]
    with pytest.raises(ValueError, match="'log_qz': \\(7, 4\\)"):
        ELBOLoss()(None, mixed)


def test_terms_as_lists_still_reduce():
    terms = random_terms()
    expected = float(IWAELoss(k=5)(None, terms))
    assert float(IWAELoss(k=5)(None, {key: value.tolist() for key, value in terms.items()})) == pytest.approx(expected)


def test_non_dict_predictions_are_rejected():
    with pytest.raises(ValueError, match="Received: y_pred of type ndarray"):
        IWAELoss()(None, np.zeros((3, 5)))


def test_analytic_kl_must_be_bool():
    with pytest.raises(ValueError, match="Received: analytic_kl='yes'"):
        ELBOLoss(analytic_kl="yes")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_given_dtype_survives_the_config_and_the_default_stays_out_of_it(name):
    from tests.helpers import run_serialization_test

    loss = LOSSES[name](dtype="float64")
    assert run_serialization_test(loss).dtype == "float64"
    # Checkpoints record the config of the compiled loss: a default loss's must not change with this.
    assert "dtype" not in LOSSES[name]().get_config()
