"""`python -m vizoo.evaluate RUN_DIR --ais` (vizoo.ais.main) on a saved run, and train.py's AIS flags.

train.py --eval ais end to end: tests/test_cli.py::test_train_writes_model_history_metrics_and_encoder.
"""

import json

import pytest

from tests.helpers import assert_cli_error
from vizoo import ais
from vizoo.models import VAE

TINY = ["--latent-dim", "2", "--hidden-units", "8", "--epochs", "1", "--eval-k", "10", "--verbose", "0"]


def test_evaluate_a_saved_run_by_ais_with_bdmc(tmp_path, capsys):
    """A run directory as train.py leaves it (model.keras, config.json), without training."""
    model = VAE(input_dim=64, latent_dim=2, hidden_units=[8], seed=0)
    model.build((None, 64))
    model.save(tmp_path / "model.keras")
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"dataset": "digits", "seed": 0, "binarization": "dynamic"}, f)
    argv = [str(tmp_path), "--ais", "--ais-steps", "5", "--ais-chains", "2", "--examples", "7", "--bdmc", "3"]
    argv += ["--verbose", "0"]
    assert ais.main(argv) == 0
    with open(tmp_path / "ais.json") as f:
        saved = json.load(f)
    assert saved["num_examples"] == 7 and saved["num_steps"] == 5 and saved["proposal"] == "posterior"
    assert 0 < saved["nll"] < 64 * 2 and saved["dataset"] == "digits"  # an untrained 64-pixel model
    # 5 steps, 2 chains: bounds too noisy to order, but both of the same model's data.
    assert saved["bdmc"]["num_examples"] == 3 and abs(saved["bdmc"]["gap"]) < 10
    assert "per_example_log_likelihood" not in saved
    assert f"AIS test NLL {saved['nll']:.3f}" in capsys.readouterr().out


def test_ais_flags_are_checked(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert_cli_error(TINY + ["--eval", "a1s"], "eval='a1s'", out, capsys)
    assert_cli_error(TINY + ["--eval", "ais", "--ais-steps", "0"], "ais_steps=0", out, capsys)
    assert_cli_error(["--model", "sbn", "--loss", "vimco", "--eval", "ais"], "eval='ais' needs a model", out, capsys)
    with pytest.raises(SystemExit) as exit_info:
        ais.main([str(tmp_path), "--ais"])
    assert exit_info.value.code == 2 and "run_dir must hold model.keras" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        ais.main([str(tmp_path), "--ais", "--ais-chains", "0"])
    assert exit_info.value.code == 2 and "ais_chains=0" in capsys.readouterr().err
