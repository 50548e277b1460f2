import csv
import json
import os

import numpy as np
import pytest

from tests.helpers import assert_cli_error, run_in_fresh_process
from vizoo import cli

TINY = ["--latent-dim", "2", "--hidden-units", "8", "--epochs", "2", "--eval-k", "20", "--verbose", "0"]


def test_train_writes_model_history_metrics_and_encoder(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(TINY + ["--loss", "iwae", "--k", "3", "--out-dir", str(out)]) == 0
    assert sorted(os.listdir(out)) == [
        "best.keras", "command.txt", "config.json", "encoder", "history.csv", "metrics.json", "model.keras",
        "posteriors.png", "reconstructions.png", "samples.png", "training_curves.png",
    ]  # the checkpoint is removed once the run is complete
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


def test_fashion_mnist_from_idx_files_end_to_end(tmp_path):
    import numpy as np

    from vizoo.data import write_idx

    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (120, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28), dtype=np.uint8))
    out = tmp_path / "run"
    argv = TINY + ["--dataset", "fashion_mnist", "--data-dir", str(tmp_path), "--out-dir", str(out)]
    assert cli.main(argv + ["--validation-size", "0"]) == 0
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["num_examples"] == 30 and metrics["data_source"] == str(tmp_path)


def test_elbo_with_analytic_kl(tmp_path):
    assert cli.main(TINY + ["--loss", "elbo", "--analytic-kl", "--out-dir", str(tmp_path)]) == 0


def test_iwae_with_dreg(tmp_path):
    import keras

    assert cli.main(TINY + ["--epochs", "1", "--gradient-estimator", "dreg", "--out-dir", str(tmp_path)]) == 0
    loss = keras.models.load_model(tmp_path / "model.keras").loss
    assert (type(loss).__name__, loss.k, loss.gradient_estimator) == ("IWAELoss", 5, "dreg")


def test_bfloat16_training_float32_evaluation_under_a_strategy(tmp_path):
    import keras

    argv = TINY + ["--epochs", "1", "--precision", "mixed_bfloat16", "--eval-precision", "float32",
                   "--distribute", "mirrored", "--out-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.dtype_policy.name == "mixed_bfloat16" and model.decoder_layers[0].compute_dtype == "bfloat16"
    with open(tmp_path / "metrics.json") as f:
        assert np.isfinite(json.load(f)["nll"])


@pytest.mark.parametrize(
    "flags, posterior, prior",
    [
        (["--posterior", "iaf", "--flow-steps", "1", "--flow-hidden-units", "8", "--loss", "elbo"],
         "IAFPosterior", "StandardNormalPrior"),
        (["--posterior", "planar", "--prior", "maf", "--prior-flow-steps", "1"], "PlanarFlowPosterior", "MAFPrior"),
        (["--posterior", "full_covariance", "--prior", "vamp", "--prior-components", "7"],
         "FullCovarianceGaussianPosterior", "VampPrior"),
    ],
    ids=["iaf", "planar_maf", "full_covariance_vamp"],
)
def test_posterior_and_prior_flags(flags, posterior, prior, tmp_path, capsys):
    import keras

    out = tmp_path / "run"
    code = cli.main(TINY + ["--epochs", "1", "--out-dir", str(out)] + flags)
    assert code == 0
    model = keras.models.load_model(out / "model.keras")
    assert (type(model.posterior).__name__, type(model.prior).__name__) == (posterior, prior)
    if prior == "VampPrior":  # pseudo-inputs start as binarized training examples; one epoch moves them little
        pseudo_inputs = model.prior.pseudo_inputs.numpy()
        assert pseudo_inputs.shape == (7, 64)
        assert np.all(np.minimum(np.abs(pseudo_inputs), np.abs(pseudo_inputs - 1.0)) < 0.05)
    assert os.path.exists(out / "encoder" / "1" / "saved_model.pb")


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
        (["--loss", "elbo", "--analytic-kl", "--posterior", "iaf"], "needs the term 'kl'"),
        (["--posterior", "gaussian"], "Received: posterior='gaussian'"),
        (["--prior", "flow"], "Received: prior='flow'"),
        (["--flow-steps", "2"], "Received: posterior='diagonal'"),
        (["--posterior", "radial", "--flow-steps", "0"], "Received: flow_steps=0"),
        (["--prior", "maf", "--prior-components", "3"], "Received: prior='maf'"),
        (["--prior", "vamp", "--prior-components", "5000"], "Received: num_components=5000"),
        (["--prior", "vamp", "--posterior", "planar"], "Received: posterior=PlanarFlowPosterior"),
        (["--steps-per-execution", "0"], "Received: steps_per_execution=0"),
        (["--gradient-estimator", "dreg", "--loss", "elbo"], "Received: loss='elbo'"),
        (["--gradient-estimator", "reinforce"], "Received: gradient_estimator='reinforce'"),
        (["--gradient-estimator", "dreg", "--posterior", "planar"], "needs the term 'log_qz_detached'"),
        (["--data-dir", "/no/such/dir"], "Received: data_dir='/no/such/dir'"),
        (["--precision", "float8"], "Received: precision='float8'"),
        (["--eval-precision", "half"], "Received: eval_precision='half'"),
        (["--distribute", "tpu"], "Received: distribute='tpu'"),
        (["--distribute", "multi_worker"], "keras-team/keras#20585"),
    ],
)
def test_bad_arguments_exit_with_a_named_error(argv, message, tmp_path, capsys):
    assert_cli_error(argv, message, tmp_path, capsys)


def test_train_py_script_runs(tmp_path):
    output = run_in_fresh_process(
        f"""
        import runpy, sys
        sys.argv = ["train.py", {", ".join(repr(a) for a in TINY)}, "--epochs", "1", "--out-dir", {str(tmp_path)!r}]
        runpy.run_path("train.py", run_name="__main__")
        """
    )
    assert "test NLL" in output


@pytest.mark.parametrize("loss", ["vimco", "nvil"])
def test_sigmoid_belief_network(loss, tmp_path, capsys):
    import keras

    out = tmp_path / "run"
    argv = ["--model", "sbn", "--sbn-layers", "6", "4", "--loss", loss, "--k", "2", "--epochs", "1", "--eval-k", "20"]
    assert cli.main(argv + ["--verbose", "0", "--out-dir", str(out)]) == 0
    model = keras.models.load_model(out / "model.keras")
    assert type(model).__name__ == "SigmoidBeliefNetwork" and model.latent_dims == [6, 4] and not model.hidden_units
    assert os.path.exists(out / "encoder" / "1" / "saved_model.pb")
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["latent_units"] == 6 and np.isfinite(metrics["nll"])
    assert "active units" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "sbn", "--loss", "iwae"], "IWAELoss differentiates through the samples z, but BernoulliPosterior"),
        (["--model", "sbn", "--loss", "vimco", "--k", "1"], "Received: k=1"),
        (["--model", "sbn", "--loss", "nvil", "--posterior", "iaf"], "Received: model='sbn', posterior='iaf'"),
        (["--model", "sbn", "--loss", "nvil", "--prior", "vamp"], "Received: model='sbn', prior='vamp'"),
        (["--model", "sbn", "--loss", "nvil", "--sbn-layers", "2", "2", "2", "2"], "1 to 3 stochastic layers"),
        (["--sbn-layers", "5"], "sbn_layers applies to the models ['sbn']. Received: model='vae'"),
        (["--loss", "vimco"], "VIMCOLoss is a score-function estimator"),
    ],
)
def test_sigmoid_belief_network_bad_combinations_are_named(argv, message, tmp_path, capsys):
    assert_cli_error(argv, message, tmp_path, capsys)
