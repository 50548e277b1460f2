"""compile(group_optimizers=...): each gradient group's own optimizer, its saved state and exact resume."""

import json
import os

import keras
import numpy as np
import pytest

import vizoo
from tests.helpers import (
    assert_cli_error, assert_reloaded_model_continues_bit_for_bit, digits_vae, fit_straight_and_resumed,
)
from vizoo import cli
from vizoo.losses import IWAELoss, NVILLoss
from vizoo.models import VAE, SigmoidBeliefNetwork


def _sbn(group_optimizers, optimizer=None, steps_per_execution=1):
    """A small SBN trained with NVIL: its baseline network is the `control` group."""
    keras.utils.set_random_seed(0)
    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4], baseline_hidden_units=[3], seed=0)
    model.build((None, 64))
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(0.01),
        loss=NVILLoss(k=2),
        group_optimizers=group_optimizers,
        steps_per_execution=steps_per_execution,
    )
    return model


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


@pytest.mark.parametrize("frozen", ["control", "main"])
def test_a_group_optimizer_updates_its_group_only(binary_data, frozen):
    """A zero learning rate freezes exactly the variables its optimizer owns."""
    main_lr, control_lr = (0.01, 0.0) if frozen == "control" else (0.0, 0.01)
    model = _sbn({"control": keras.optimizers.SGD(control_lr)}, optimizer=keras.optimizers.SGD(main_lr))
    groups = model.gradient_groups()
    control, others = groups["control"], groups["generative"] + groups["inference"]
    assert control and others
    before_control, before_others = _values(control), _values(others)
    history = model.fit(binary_data, batch_size=32, epochs=1, verbose=0).history
    assert sorted(history) == ["loss"] and np.isfinite(history["loss"][0])
    moved_control = [not np.array_equal(a, b.numpy()) for a, b in zip(before_control, control)]
    moved_others = [not np.array_equal(a, b.numpy()) for a, b in zip(before_others, others)]
    if frozen == "control":
        assert not any(moved_control) and all(moved_others)
    else:
        assert all(moved_control) and not any(moved_others)
    assert int(model.group_optimizers["control"].iterations) == 3  # 96 examples, batches of 32
    assert int(model.optimizer.iterations) == 3


def test_one_optimizer_per_group_equals_the_shared_optimizer_with_equal_settings(binary_data):
    """SGD has no state: a separate SGD of the same rate gives the shared optimizer's weights exactly."""
    shared = _sbn(None, optimizer=keras.optimizers.SGD(0.05))
    split = _sbn({"control": keras.optimizers.SGD(0.05)}, optimizer=keras.optimizers.SGD(0.05))
    split.set_weights(shared.get_weights())
    for model in (shared, split):
        model.fit(binary_data, batch_size=32, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(shared.weights, split.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_compiling_again_on_the_same_optimizer_keeps_the_group_optimizers(binary_data):
    # The README's K schedule: compile again with model.optimizer to change the loss, and go on.
    model = _sbn({"control": keras.optimizers.Adam(0.01)})
    control = model.group_optimizers["control"]
    model.fit(binary_data, batch_size=32, epochs=1, verbose=0)
    model.compile(optimizer=model.optimizer, loss=NVILLoss(k=3))
    assert model.group_optimizers == {"control": control}
    model.fit(binary_data, batch_size=32, epochs=1, verbose=0)
    assert int(control.iterations) == int(model.optimizer.iterations) == 6
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=NVILLoss(k=3))  # a new optimizer: a new start
    assert model.group_optimizers == {}


def test_an_optimizer_built_for_other_variables_is_named(binary_data):
    # Under VIMCO the SBN's baseline is frozen, so its optimizer never saw the baseline's variables; NVIL trains them.
    from vizoo.losses import VIMCOLoss

    model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4], baseline_hidden_units=[3], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=VIMCOLoss(k=2))
    model.fit(binary_data, batch_size=32, epochs=1, verbose=0)
    model.compile(optimizer=model.optimizer, loss=NVILLoss(k=2))
    with pytest.raises(ValueError, match=r"optimizer was built for other variables than it now updates \(4 new to it, "
                                         r"e\.g\. sigmoid_belief_network\w*/baseline/.*group_optimizers. Received: "
                                         r"optimizer=Adam built for \d+ variables"):
        model.fit(binary_data, batch_size=32, epochs=1, verbose=0)
    model.compile(optimizer=model.optimizer, loss=NVILLoss(k=2), group_optimizers={"control": "adam"})
    assert np.isfinite(model.fit(binary_data, batch_size=32, epochs=1, verbose=0).history["loss"][0])


@pytest.mark.parametrize(
    "group_optimizers, message",
    [
        (
            {"discriminator": "adam"},
            "group_optimizers keys must be among ['generative', 'inference', 'control', 'adversary']. Received: {'discriminator'}",
        ),
        ({"control": 3}, "Received: group_optimizers['control']=3"),
        ("adam", "group_optimizers must be a dict {group: optimizer}"),
    ],
)
def test_bad_group_optimizers_are_named(group_optimizers, message):
    model = SigmoidBeliefNetwork(input_dim=8, latent_dims=[2])
    with pytest.raises(ValueError) as error:
        model.compile(optimizer="adam", loss=NVILLoss(), group_optimizers=group_optimizers)
    assert message in str(error.value)


def test_the_main_optimizer_cannot_be_a_group_optimizer():
    model = SigmoidBeliefNetwork(input_dim=8, latent_dims=[2])
    optimizer = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="optimizers of their own"):
        model.compile(optimizer=optimizer, loss=NVILLoss(), group_optimizers={"control": optimizer})


def test_names_resolve_as_for_the_main_optimizer():
    model = SigmoidBeliefNetwork(input_dim=8, latent_dims=[2])
    model.compile(optimizer="sgd", loss=NVILLoss(), group_optimizers={"control": "adam", "inference": "rmsprop"})
    assert list(model.group_optimizers) == ["inference", "control"]  # in GRADIENT_GROUPS order
    assert isinstance(model.group_optimizers["control"], vizoo.optimizers.Adam)
    assert isinstance(model.group_optimizers["inference"], keras.optimizers.RMSprop)


def test_keras_file_keeps_every_optimizer_and_training_continues_bit_for_bit(binary_data, tmp_path):
    model = _sbn({"control": keras.optimizers.Adam(0.003, beta_1=0.5)})
    model.fit(binary_data, batch_size=32, epochs=2, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    control = loaded.group_optimizers["control"]
    assert type(control) is keras.optimizers.Adam and control.beta_1 == 0.5
    assert float(control.learning_rate) == pytest.approx(0.003)
    assert_reloaded_model_continues_bit_for_bit(model, loaded, binary_data, "control", iterations=6)


def test_mixed_float16_gives_each_group_optimizer_its_own_loss_scale(binary_data, tmp_path):
    model = VAE(64, 4, hidden_units=[16], seed=0, dtype="mixed_float16")
    model.build((None, 64))
    model.compile(
        optimizer="adam", loss=IWAELoss(k=2, gradient_estimator="dreg"), group_optimizers={"inference": "adam"}
    )
    inference = model.group_optimizers["inference"]
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(inference, keras.optimizers.LossScaleOptimizer)
    assert isinstance(inference.inner_optimizer, vizoo.optimizers.Adam)
    before = _values(model.gradient_groups()["inference"])
    history = model.fit(binary_data, batch_size=32, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    # A loss-scaled step whose gradients overflow is skipped (and the scale halved): count the applied ones.
    assert int(inference.iterations) > 0
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, model.gradient_groups()["inference"]))
    path = str(tmp_path / "mixed.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.group_optimizers["inference"], keras.optimizers.LossScaleOptimizer)
    assert int(loaded.group_optimizers["inference"].iterations) == int(inference.iterations)
    for a, b in zip(loaded.group_optimizers["inference"].variables, inference.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.slow  # three runs; plain resume (also with one step per call) is test_train_runs'
def test_resumed_run_with_a_group_optimizer_equals_uninterrupted_run(tmp_path):
    def make():
        return digits_vae(
            10,
            loss=IWAELoss(k=2, gradient_estimator="dreg"),
            group_optimizers={"inference": keras.optimizers.Adam(3e-3)},
        )

    straight, resumed, result = fit_straight_and_resumed(make, tmp_path)
    assert result["resumed_epoch"] == 2
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for optimizer in ("main", "inference"):
        pick = (lambda m: m.optimizer) if optimizer == "main" else (lambda m: m.group_optimizers["inference"])
        assert int(pick(resumed).iterations) == int(pick(straight).iterations) > 0
        for a, b in zip(pick(straight).variables, pick(resumed).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{optimizer}: {a.path}")


# Under MirroredStrategy: tests/test_distribute.py (its interpreter with two logical CPUs).


SBN_TINY = [
    "--model", "sbn", "--sbn-layers", "4", "--loss", "nvil", "--k", "2", "--epochs", "1", "--eval-k", "10",
    "--verbose", "0",
]


def test_cli_control_lr_gives_the_control_group_its_own_adam(tmp_path):
    out = tmp_path / "run"
    assert cli.main(SBN_TINY + ["--control-lr", "0.003", "--out-dir", str(out)]) == 0
    model = keras.models.load_model(out / "model.keras")
    control = model.group_optimizers["control"]
    assert isinstance(control, vizoo.optimizers.Adam) and float(control.learning_rate) == pytest.approx(0.003)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert int(control.iterations) == int(model.optimizer.iterations) > 0
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["control_lr"] == 0.003
    with open(os.path.join(out, "command.txt")) as f:
        assert "--control-lr 0.003" in f.read()


def test_cli_clip_norm_clips_every_groups_adam(tmp_path):
    out = tmp_path / "run"
    assert cli.main(SBN_TINY + ["--control-lr", "0.003", "--clip-norm", "0.5", "--out-dir", str(out)]) == 0
    model = keras.models.load_model(out / "model.keras")
    assert model.optimizer.global_clipnorm == 0.5 and model.group_optimizers["control"].global_clipnorm == 0.5
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["clip_norm"] == 0.5
    assert cli.build_parser().parse_args([]).clip_norm is None


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf"])
def test_cli_bad_clip_norm_is_named(value, tmp_path, capsys):
    expected = {"0": "0.0", "-0.5": "-0.5", "nan": "nan", "inf": "inf"}[value]
    assert_cli_error(SBN_TINY + ["--clip-norm", value], f"clip_norm must be finite and positive. Received: clip_norm={expected}",
                     tmp_path, capsys)


def test_cli_without_control_lr_shares_the_main_optimizer(tmp_path):
    parser = cli.build_parser()
    assert parser.parse_args([]).control_lr is None


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf"])
def test_cli_bad_control_lr_is_named(value, tmp_path, capsys):
    expected = {"0": "0.0", "-0.5": "-0.5", "nan": "nan", "inf": "inf"}[value]
    assert_cli_error(SBN_TINY + ["--control-lr", value], f"Received: control_lr={expected}", tmp_path, capsys)


def test_cli_control_lr_without_a_control_group_is_refused(tmp_path, capsys):
    # A diagonal Gaussian VAE has no control variables: the optimizer would train nothing.
    argv = ["--latent-dim", "2", "--hidden-units", "8", "--epochs", "1", "--control-lr", "0.01"]
    assert_cli_error(argv, "control_lr applies to models with a control gradient group", tmp_path, capsys)
    assert not (tmp_path / "config.json").exists()


def test_cli_control_lr_with_a_loss_that_does_not_train_the_control_group_is_refused(tmp_path, capsys):
    # An SBN's baseline network is the control group under NVIL only: VIMCO leaves it frozen.
    argv = ["--model", "sbn", "--sbn-layers", "4", "--loss", "vimco", "--k", "2", "--control-lr", "0.01"]
    assert_cli_error(argv, "control_lr applies to models with a control gradient group", tmp_path, capsys)
