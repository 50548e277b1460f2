"""train.py with a hierarchical posterior: --posterior hierarchical, --aux-dim, --reverse-samples, --loss hvm|iwhvi."""

import json

import keras
import pytest

from tests.helpers import build_from_flags
from vizoo import cli

TINY = ["--latent-dim", "2", "--hidden-units", "8", "--epochs", "1", "--eval-k", "10", "--verbose", "0"]
HIERARCHICAL = ["--posterior", "hierarchical", "--aux-dim", "3"]


@pytest.mark.parametrize(
    "flags, loss_name, sampler_options",
    [(["--loss", "hvm", "--k", "1"], "HVMLoss", {"num_reverse_samples": 0}),
     (["--loss", "iwhvi", "--k", "2", "--reverse-samples", "4"], "IWHVILoss", {"num_reverse_samples": 4}),
     (["--loss", "iwae", "--k", "2", "--reverse-samples", "4"], "IWAELoss", {})],
    ids=["hvm", "iwhvi", "iwae"],
)
def test_hierarchical_flags_build_the_posterior_and_loss(flags, loss_name, sampler_options):
    model, loss = build_from_flags(HIERARCHICAL + flags)
    assert type(model.posterior).__name__ == "HierarchicalPosterior" and model.posterior.aux_dim == 3
    assert model.posterior.num_reverse_samples == (4 if "--reverse-samples" in flags else 10)
    assert type(loss).__name__ == loss_name and loss.sampler_options == sampler_options
    model.compile(optimizer="adam", loss=loss)
    assert model.sampler_options == sampler_options


def test_reverse_model_flag_builds_sivi():
    model, loss = build_from_flags(HIERARCHICAL + ["--reverse-model", "sivi", "--loss", "iwhvi", "--k", "2"])
    assert model.posterior.reverse_model == "sivi" and model.posterior.reverse is None
    assert loss.gradient_estimator == "auto"
    model.compile(optimizer="adam", loss=loss)
    _, loss = build_from_flags(HIERARCHICAL + ["--loss", "iwhvi", "--gradient-estimator", "plain"])
    assert loss.gradient_estimator == "plain"


# A full run; the flags alone (HVM's too) are test_hierarchical_flags_build_the_posterior_and_loss, and HVM's
# .keras round trip is tests/layers/test_hierarchical_posterior.py's shared model checks.
@pytest.mark.slow
def test_hierarchical_posterior_trains_evaluates_and_exports(tmp_path, capsys):
    flags, loss_name, loss_k = ["--loss", "iwhvi", "--k", "2", "--reverse-samples", "4"], "IWHVILoss", 4
    out = tmp_path / "run"
    argv = TINY + HIERARCHICAL + flags + ["--eval-reverse-samples", "6", "--out-dir", str(out)]
    assert cli.main(argv) == 0
    model = keras.models.load_model(out / "model.keras")
    assert type(model.posterior).__name__ == "HierarchicalPosterior" and model.posterior.aux_dim == 3
    assert type(model.loss).__name__ == loss_name
    assert model.sampler_options == {"num_reverse_samples": loss_k}
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["log_likelihood_is_lower_bound"] is True
    assert metrics["sampler_options"] == {"num_reverse_samples": 6, "reverse_model": "learned"}
    assert "log q estimated: noisier weights, looser at this k" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--loss", "hvm"], "HVMLoss\\(k=5\\) samples with the options \\['num_reverse_samples'\\]"),
        (["--aux-dim", "3"], "aux_dim applies to the posteriors \\['hierarchical'\\]. Received: posterior='diagonal'"),
        (["--reverse-samples", "3"], "reverse_samples applies to the posteriors \\['hierarchical'\\]"),
        (HIERARCHICAL + ["--reverse-samples", "-1"], "Received: reverse_samples=-1"),
        (HIERARCHICAL + ["--reverse-model", "exact"], "Received: reverse_model='exact'"),
        (HIERARCHICAL + ["--reverse-model", "sivi", "--loss", "iwhvi", "--gradient-estimator", "dreg"],
         "SIVI has none"),
    ],
)
def test_bad_hierarchical_arguments_exit_with_a_named_error(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(TINY + argv + ["--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
