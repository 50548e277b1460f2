import csv
import json
import os

import pytest

from tests.helpers import run_in_fresh_process
from vizoo import cli

TINY = ["--latent-dim", "2", "--hidden-units", "8", "--epochs", "2", "--eval-k", "20", "--verbose", "0"]


def test_train_writes_model_history_metrics_and_encoder(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(TINY + ["--loss", "iwae", "--k", "3", "--out-dir", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["encoder", "history.csv", "metrics.json", "model.keras"]
    assert os.path.exists(out / "encoder" / "1" / "saved_model.pb")
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"loss", "val_loss"} <= set(rows[0])
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    for key in ("nll", "elbo", "iwae_k", "kl", "active_units", "bits_per_dim"):
        assert key in metrics
    assert metrics["k"] == 20 and metrics["train_k"] == 3 and metrics["num_examples"] == 300
    assert metrics["elbo"] <= metrics["iwae_k"] + 0.5
    assert "test NLL" in capsys.readouterr().out


def test_elbo_with_analytic_kl(tmp_path):
    assert cli.main(TINY + ["--loss", "elbo", "--analytic-kl", "--out-dir", str(tmp_path)]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "imagenet"], "Received: dataset='imagenet'"),
        (["--model", "gan"], "Received: model='gan'"),
        (["--loss", "mse"], "Received: loss='mse'"),
        (["--k", "0"], "Received: k=0"),
        (["--eval-k", "-1"], "Received: eval_k=-1"),
        (["--lr", "0"], "Received: lr=0.0"),
        (["--binarization", "fuzzy"], "Received: binarization='fuzzy'"),
        (["--analytic-kl"], "Received: loss='iwae'"),
    ],
)
def test_bad_arguments_exit_with_a_named_error(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_py_script_runs(tmp_path):
    output = run_in_fresh_process(
        f"""
        import runpy, sys
        sys.argv = ["train.py", {", ".join(repr(a) for a in TINY)}, "--epochs", "1", "--out-dir", {str(tmp_path)!r}]
        runpy.run_path("train.py", run_name="__main__")
        """
    )
    assert "test NLL" in output
