"""Issue #22, "Nothing lost, nothing silent": bad inputs and faults give one named error, and lose nothing."""

import json

import pytest

from vizoo import cli
from vizoo import config as run_config


# ------------------------------------------------------------------------------------------- typed config
def _parse_config(tmp_path, options, suffix=".json", text=None):
    path = tmp_path / f"run{suffix}"
    path.write_text(text if text is not None else json.dumps(options))
    return run_config.parse_args(cli.build_parser(), ["--config", str(path)])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"restart": "false"}, "config option 'restart' must be a boolean (true or false), not str. Received: restart='false'"),
        ({"tensorboard": 1}, "must be a boolean (true or false), not int. Received: tensorboard=1"),
        ({"epochs": 2.7}, "config option 'epochs' must be an integer, not float. Received: epochs=2.7"),
        ({"epochs": True}, "config option 'epochs' must be an integer, not bool. Received: epochs=True"),
        ({"latent-dim": "two"}, "config option 'latent-dim' must be an integer, not str. Received: latent-dim='two'"),
        ({"lr": False}, "config option 'lr' must be a number, not bool. Received: lr=False"),
        ({"hidden_units": [8, 2.5]}, "must be a list of integers, not list. Received: hidden_units=[8, 2.5]"),
        ({"hidden_units": 8}, "must be a list of integers, not int. Received: hidden_units=8"),
        ({"dataset": 5}, "config option 'dataset' must be a string, not int. Received: dataset=5"),
        ({"epochs": None}, "config option 'epochs' must be an integer, not NoneType. Received: epochs=None"),
    ],
)
def test_config_options_are_typed_like_their_flags(tmp_path, options, message):
    with pytest.raises(ValueError) as info:
        _parse_config(tmp_path, options)
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1


def test_config_conversions_that_are_accepted(tmp_path):
    args = _parse_config(
        tmp_path, {"restart": False, "tensorboard": True, "lr": 1, "epochs": 3.0, "hidden_units": [8, 4],
                   "control_lr": None, "latent_dim": "3"}
    )
    assert (args.restart, args.tensorboard, args.lr, args.epochs, args.hidden_units) == (False, True, 1.0, 3, [8, 4])
    assert type(args.lr) is float and type(args.epochs) is int and args.latent_dim == 3 and args.control_lr is None


def test_yaml_config_booleans_are_typed(tmp_path):
    pytest.importorskip("yaml")
    assert _parse_config(tmp_path, None, ".yaml", "restart: true\nepochs: 2\n").restart is True
    with pytest.raises(ValueError, match=r"'restart' must be a boolean .*Received: restart='no way'"):
        _parse_config(tmp_path, None, ".yaml", "restart: no way\n")


def test_mistyped_config_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"restart": "false"}))
    with pytest.raises(SystemExit) as info:
        cli.main(["--config", str(path), "--out-dir", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Received: restart='false'" in err
