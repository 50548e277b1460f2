"""RenyiLoss: the VR-alpha bound of Li & Turner (2016) against float64 references, ELBO and IWAE."""

import json

import keras
import numpy as np
import pytest

from tests.helpers import random_terms, run_bound_loss_test, run_serialization_test
from vizoo.losses import LOSSES, ELBOLoss, IWAELoss, RenyiLoss


def renyi_reference(alpha):
    """L_alpha per example in float64: logmeanexp((1 - alpha) log w) / (1 - alpha); alpha = 1: mean log w."""

    def bound(terms):
        log_w = terms["log_px_z"] + terms["log_pz"] - terms["log_qz"]
        if alpha == 1.0:
            return log_w.mean(axis=1)
        scaled = (1.0 - alpha) * log_w
        top = scaled.max(axis=1, keepdims=True)
        return (top[:, 0] + np.log(np.mean(np.exp(scaled - top), axis=1))) / (1.0 - alpha)

    return bound


@pytest.mark.parametrize("alpha", [-2.0, -0.5, 0.0, 0.5, 0.999, 1.0, 3.0])
def test_value_is_the_float64_reference(alpha):
    run_bound_loss_test(RenyiLoss(k=4, alpha=alpha), renyi_reference(alpha))


def test_alpha_one_is_the_elbo_and_alpha_zero_the_iwae_bound_exactly():
    terms = random_terms(RenyiLoss(k=6), seed=3)
    assert float(RenyiLoss(k=6, alpha=1.0)(None, terms)) == float(ELBOLoss(k=6)(None, terms))
    assert float(RenyiLoss(k=6, alpha=0.0)(None, terms)) == float(IWAELoss(k=6)(None, terms))
    np.testing.assert_array_equal(RenyiLoss(k=6, alpha=1).bound(terms), ELBOLoss(k=6).bound(terms))
    np.testing.assert_array_equal(RenyiLoss(k=6, alpha=0).bound(terms), IWAELoss(k=6).bound(terms))


def test_near_alpha_one_it_tends_to_the_elbo():
    terms = random_terms(RenyiLoss(k=8), seed=4)
    elbo = np.asarray(ELBOLoss(k=8).bound(terms), dtype="float64")
    terms64 = {key: np.asarray(v, dtype="float64") for key, v in terms.items()}
    for alpha in (1.0 - 1e-6, 1.0 + 1e-6):
        reference = renyi_reference(alpha)(terms64)
        value = np.asarray(RenyiLoss(k=8, alpha=alpha).bound(terms), dtype="float64")
        np.testing.assert_allclose(value, reference, atol=1e-4)  # no cancellation blow-up near alpha = 1
        np.testing.assert_allclose(value, elbo, atol=1e-3)


@pytest.mark.parametrize("alpha", [0.5, 0.999, -1.0])
def test_a_zero_weight_counts_as_zero(alpha):
    # One log w = -inf (a sample the model gives no probability): the bound of the others with a zero in the
    # mean, and a gradient that ignores that sample; centring on the mean log-weight made both NaN.
    import tensorflow as tf

    log_w = np.array([[-5.0, -np.inf, -6.0], [-5.0, -4.0, -6.0]], "float32")
    zeros = np.zeros_like(log_w)
    with tf.GradientTape() as tape:
        log_px_z = tf.constant(log_w)
        tape.watch(log_px_z)
        value = RenyiLoss(k=3, alpha=alpha).bound({"log_px_z": log_px_z, "log_pz": zeros, "log_qz": zeros})
    gradient = tape.gradient(value, log_px_z).numpy()
    np.testing.assert_allclose(value, renyi_reference(alpha)({"log_px_z": log_w.astype("float64"), "log_pz": zeros,
                                                               "log_qz": zeros}), rtol=1e-6)
    assert np.all(np.isfinite(gradient)) and gradient[0, 1] == 0.0


def test_monotone_in_alpha_on_the_same_terms():
    terms = random_terms(RenyiLoss(k=10), seed=5)
    alphas = [-10.0, -1.0, -0.1, 0.0, 0.2, 0.5, 0.9, 1.0, 1.5, 4.0]
    values = np.stack([np.asarray(RenyiLoss(k=10, alpha=a).bound(terms), dtype="float64") for a in alphas])
    assert np.all(np.diff(values, axis=0) <= 1e-5), "L_alpha must not increase with alpha"
    assert np.all(values[0] - values[-1] > 0)  # and does change on these terms


def test_is_bound_only_for_non_negative_alpha():
    assert RenyiLoss(alpha=0.0).is_bound and RenyiLoss(alpha=2.0).is_bound
    assert not RenyiLoss(alpha=-0.5).is_bound
    assert RenyiLoss.requires_reparameterization and RenyiLoss.needs_density and not RenyiLoss.score_function


def test_serialization_keeps_alpha_and_k():
    loss = RenyiLoss(k=3, alpha=-0.25)
    restored = run_serialization_test(loss)
    assert (restored.k, restored.alpha, restored.is_bound) == (3, -0.25, False)
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(keras.saving.serialize_keras_object(loss))))
    assert isinstance(revived, RenyiLoss) and revived.alpha == -0.25


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), "half", True])
def test_bad_alpha_is_named(alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number. Received: alpha="):
        RenyiLoss(alpha=alpha)


@pytest.mark.parametrize("alpha", [1e39, -1e39])
def test_alpha_beyond_float32s_range_is_named(alpha):
    with pytest.raises(ValueError, match=r"alpha must lie within \+-1e\+30 .* Received: alpha="):
        RenyiLoss(alpha=alpha)
    assert RenyiLoss(alpha=1e30 * (1 if alpha > 0 else -1)).alpha == 1e30 * (1 if alpha > 0 else -1)


def test_registered_and_built_from_its_flags():
    from vizoo import cli

    assert LOSSES["renyi"] is RenyiLoss
    args = cli.build_parser().parse_args(["--loss", "renyi", "--alpha", "0"])
    assert cli.build_loss(args).alpha == 0.0  # 0 is kept, not dropped as falsy


@pytest.mark.slow  # two full train.py runs
def test_trains_from_the_command_line(tmp_path, capsys):
    from vizoo import cli

    tiny = ["--latent-dim", "2", "--hidden-units", "8", "--epochs", "1", "--eval-k", "10", "--verbose", "0"]
    out = tmp_path / "run"
    assert cli.main(tiny + ["--loss", "renyi", "--k", "3", "--alpha", "0.5", "--out-dir", str(out)]) == 0
    loss = keras.models.load_model(out / "model.keras").loss
    assert isinstance(loss, RenyiLoss) and (loss.k, loss.alpha) == (3, 0.5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training_loss"] == "RenyiLoss" and metrics["training_loss_is_bound"]
    assert np.isfinite(metrics["nll"])
    capsys.readouterr()

    out = tmp_path / "negative"
    assert cli.main(tiny + ["--loss", "renyi", "--k", "3", "--alpha", "-1", "--out-dir", str(out)]) == 0
    assert not json.loads((out / "metrics.json").read_text())["training_loss_is_bound"]
    assert "is an estimate, not a bound" in capsys.readouterr().out


def test_alpha_applies_to_renyi_only(tmp_path, capsys):
    from tests.helpers import assert_cli_error

    assert_cli_error(["--loss", "iwae", "--alpha", "0.5"], "alpha applies to the losses ['renyi']. Received: loss='iwae'", tmp_path, capsys)


def test_in_the_benchmark_model_list():
    from tests.test_benchmarks import load_script

    assert load_script("benchmark").MODELS["renyi"] == ("vae", "renyi", 5, "diagonal", {})
