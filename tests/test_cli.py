import csv
import json
import os

import numpy as np
import pytest

from tests.helpers import assert_cli_error, build_from_flags as built
from vizoo import cli

TINY = ["--latent-dim", "2", "--hidden-units", "8", "--epochs", "2", "--eval-k", "20", "--verbose", "0"]


def test_train_writes_model_history_metrics_and_encoder(tmp_path, capsys):
    out = tmp_path / "run"
    ais_flags = ["--eval", "ais", "--ais-steps", "5", "--ais-chains", "2", "--ais-examples", "7"]  # AIS beside IS
    assert cli.main(TINY + ["--loss", "iwae", "--k", "3", "--out-dir", str(out)] + ais_flags) == 0
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
    # Two epochs of a 2-unit model: better than a uniform model of 64 binary pixels, bounds in order.
    assert 0 < metrics["nll"] < 64 * np.log(2) and metrics["log_likelihood"] == pytest.approx(-metrics["nll"])
    assert metrics["elbo"] <= metrics["iwae_k"] + 1e-3 and metrics["iwae_k"] <= metrics["log_likelihood"] + 1e-3
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll"] / (64 * np.log(2)))
    assert metrics["kl"] >= 0 and 0 <= metrics["active_units"] <= metrics["latent_units"] == 2
    assert metrics["config"]["loss"] == "iwae" and metrics["config"]["k"] == 3
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) + 5  # trained, not diverged
    assert metrics["ais"]["num_examples"] == 7 and metrics["ais"]["num_steps"] == 5 and metrics["ais"]["num_chains"] == 2
    printed = capsys.readouterr().out
    assert f"AIS test NLL {metrics['ais']['nll']:.3f}" in printed
    assert f"test NLL {metrics['nll']:.3f} nats (k=20)" in printed
    assert "fitted Gaussian proposal" not in printed  # q's own ELBO and KL (an implicit q's are the proposal's)


@pytest.mark.slow  # a full run; the IDX loader itself is tests/data's
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
    assert metrics["dataset"] == "fashion_mnist" and 0 < metrics["nll"] < 2 * 784 * np.log(2)  # uniform noise images
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll"] / (784 * np.log(2)))


@pytest.mark.parametrize(
    "argv, loss_name, loss_config",
    [
        ([], "IWAELoss", {"k": 5, "gradient_estimator": None}),
        (["--loss", "elbo", "--analytic-kl", "--k", "2"], "ELBOLoss", {"k": 2, "analytic_kl": True}),
        (["--gradient-estimator", "dreg", "--k", "7"], "IWAELoss", {"k": 7, "gradient_estimator": "dreg"}),
        (["--gradient-estimator", "stl"], "IWAELoss", {"gradient_estimator": "stl"}),
        (["--loss", "elbo", "--kl-warmup-epochs", "2", "--free-bits", "0.1", "--free-bits-groups", "2"], "ELBOLoss",
         {"kl_warmup_epochs": 2, "free_bits": 0.1, "free_bits_groups": 2}),
        (["--model", "sbn", "--loss", "nvil", "--k", "1"], "NVILLoss", {"k": 1, "baselines": True}),
        (["--model", "sbn", "--loss", "vimco", "--k", "2"], "VIMCOLoss", {"k": 2}),
    ],
    ids=["default", "analytic_kl", "dreg", "stl", "warmup_free_bits", "nvil", "vimco"],
)
def test_loss_flags_build_the_loss_they_name(argv, loss_name, loss_config):
    model, loss = built(argv)
    assert type(loss).__name__ == loss_name
    assert {key: loss.get_config()[key] for key in loss_config} == loss_config
    model.compile(optimizer="adam", loss=loss)  # the model takes it
    if loss_config.get("analytic_kl"):  # the closed-form KL is what the compiled model computes
        assert "kl" in loss.required_terms and "kl" in model(np.zeros((2, 64), "float32"))


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], {"latent_dim": 50, "hidden_units": [200, 200], "posterior": "DiagonalGaussianPosterior",
              "prior": "StandardNormalPrior", "dtype": "float32"}),
        (["--latent-dim", "3", "--hidden-units", "8", "4", "--activation", "relu", "--seed", "7"],
         {"latent_dim": 3, "hidden_units": [8, 4], "activation": "relu", "seed": 7}),
        (["--hidden-units", "--decoder-hidden-units", "8", "4"], {"hidden_units": [], "decoder_hidden_units": [8, 4]}),
        (["--posterior", "iaf", "--flow-steps", "1", "--flow-hidden-units", "8"],
         {"posterior": "IAFPosterior", "posterior.num_steps": 1, "posterior.hidden_units": [8]}),
        (["--posterior", "planar", "--prior", "maf", "--prior-flow-steps", "1"],
         {"posterior": "PlanarFlowPosterior", "prior": "MAFPrior", "prior.num_steps": 1}),
        (["--posterior", "radial"], {"posterior": "RadialFlowPosterior", "posterior.num_steps": 4}),
        (["--posterior", "full_covariance", "--prior", "vamp", "--prior-components", "7"],
         {"posterior": "FullCovarianceGaussianPosterior", "prior": "VampPrior", "prior.num_components": 7}),
        (["--prior", "mixture", "--prior-components", "3"], {"prior": "MixtureOfGaussiansPrior", "prior.num_components": 3}),
        (["--posterior", "hierarchical", "--aux-dim", "3", "--reverse-samples", "4", "--loss", "iwhvi"],
         {"posterior": "HierarchicalPosterior", "posterior.aux_dim": 3, "posterior.num_reverse_samples": 4}),
        (["--precision", "mixed_bfloat16"], {"dtype": "mixed_bfloat16"}),
        (["--model", "sbn", "--sbn-layers", "6", "4", "--loss", "nvil"],
         {"model": "SigmoidBeliefNetwork", "latent_dims": [6, 4], "hidden_units": [], "posterior": "BernoulliPosterior"}),
    ],
    ids=["defaults", "mlp", "decoder_units", "iaf", "planar_maf", "radial", "full_covariance_vamp", "mixture", "hierarchical", "bf16", "sbn"],
)
def test_model_flags_build_the_model_they_name(argv, expected):
    model, loss = built(argv)
    config = model.get_config()
    found = {
        "model": type(model).__name__,
        "posterior": type(model.posterior).__name__,
        "prior": type(getattr(model, "prior", None)).__name__,
        "dtype": model.dtype_policy.name,
    }
    for key, value in expected.items():
        if key.startswith(("posterior.", "prior.")):
            component, option = key.split(".")
            actual = getattr(getattr(model, component), option)
        else:
            actual = found[key] if key in found else config[key]
        assert (list(actual) if isinstance(value, list) else actual) == value, (key, actual)
    model.compile(optimizer="adam", loss=loss)


@pytest.mark.parametrize("flags", [["--validation-size", "5000"], ["--dataset", "fashion-mnist"]])
def test_data_refused_leaves_a_finished_runs_directory_as_it_was(flags, tmp_path, capsys):
    from tests.helpers import assert_cli_error

    files = {"metrics.json": '{"nll": 1.0}', "history.csv": "epoch,loss\n0,1.0\n", "config.json": '{"latent_dim": 2}',
             "command.txt": "python train.py --latent-dim 2", "samples.png": "the old run's"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    expected = "validation_size must be smaller than" if "--validation-size" in flags else "Unknown dataset"
    assert_cli_error(TINY + ["--latent-dim", "3"] + flags, expected, tmp_path, capsys)
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == files


@pytest.mark.slow  # a full run; the flag-to-loss mapping is test_loss_flags_build_the_loss_they_name
def test_elbo_with_analytic_kl_end_to_end(tmp_path, capsys):
    import keras

    (tmp_path / "metrics.json").write_text("{}")  # an earlier, finished run's: the new run says it replaces them
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n")
    (tmp_path / "posteriors.png").write_bytes(b"the old run's")  # drawn for 2-D latents only: not by this run
    (tmp_path / "mine.txt").write_text("kept")
    assert cli.main(TINY + ["--loss", "elbo", "--analytic-kl", "--latent-dim", "3", "--out-dir", str(tmp_path)]) == 0
    assert (f"{tmp_path} holds a finished run (history.csv, metrics.json): this new run replaces its outputs"
            in capsys.readouterr().out)
    assert not (tmp_path / "posteriors.png").exists() and (tmp_path / "mine.txt").read_text() == "kept"
    loss = keras.models.load_model(tmp_path / "model.keras").loss
    assert (type(loss).__name__, loss.analytic_kl, loss.k) == ("ELBOLoss", True, 5)
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert 0 < metrics["nll"] < 64 * np.log(2) and metrics["config"]["analytic_kl"] is True


@pytest.mark.slow  # a full run; the flag-to-loss mapping is test_loss_flags_build_the_loss_they_name
def test_iwae_with_dreg(tmp_path):
    import keras

    assert cli.main(TINY + ["--epochs", "1", "--gradient-estimator", "dreg", "--out-dir", str(tmp_path)]) == 0
    loss = keras.models.load_model(tmp_path / "model.keras").loss
    assert (type(loss).__name__, loss.k, loss.gradient_estimator) == ("IWAELoss", 5, "dreg")


@pytest.mark.slow  # a full run under MirroredStrategy
def test_bfloat16_training_float32_evaluation_under_a_strategy(tmp_path):
    import keras

    argv = TINY + ["--epochs", "1", "--precision", "mixed_bfloat16", "--eval-precision", "float32",
                   "--distribute", "mirrored", "--out-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.dtype_policy.name == "mixed_bfloat16" and model.decoder_layers[0].compute_dtype == "bfloat16"
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert 0 < metrics["nll"] < 64 * np.log(2) and metrics["config"]["eval_precision"] == "float32"


@pytest.mark.slow  # full runs; the flag-to-layer mapping is test_model_flags_build_the_model_they_name
@pytest.mark.parametrize(
    "flags, posterior, prior",
    [
        (["--posterior", "iaf", "--flow-steps", "1", "--flow-hidden-units", "8", "--loss", "elbo"],
         "IAFPosterior", "StandardNormalPrior"),
        (["--posterior", "full_covariance", "--prior", "vamp", "--prior-components", "7"],
         "FullCovarianceGaussianPosterior", "VampPrior"),
    ],
    ids=["iaf", "full_covariance_vamp"],
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
    with open(out / "metrics.json") as f:
        assert 0 < json.load(f)["nll"] < 64 * np.log(2)


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
        (["--distribute", "multi_worker", "--training-loop", "fit"], "keras-team/keras#20585"),
        (["--training-loop", "horovod"], "Received: training_loop='horovod'"),
        (["--jit-compile"], "Received: training_loop='auto', jit_compile=True"),
        (["--distribute", "multi_worker", "--peer-timeout", "0"], "Received: peer_timeout=0.0"),
        (["--distribute", "multi_worker", "--cluster", "k8s"], "Received: cluster='k8s'"),
        (["--cluster", "slurm"], "cluster applies to --distribute multi_worker. Received: distribute='none'"),
        (["--distribute", "multi_worker", "--slurm-port", "0"], "Received: slurm_port=0"),
        (["--ais-steps", "50"], "ais_steps applies with --eval ais. Received: ais_steps=50"),
        (["--ais-examples", "5"], "ais_examples applies with --eval ais. Received: ais_examples=5"),
        (["--slurm-port", "2000"], "slurm_port applies with --cluster slurm. Received: slurm_port=2000"),
        (["--peer-timeout", "5"], "peer_timeout applies with --distribute multi_worker. Received: peer_timeout=5.0"),
        (["--verbose", "7"], "Received: verbose=7"),
    ],
)
def test_bad_arguments_exit_with_a_named_error(argv, message, tmp_path, capsys):
    assert_cli_error(argv, message, tmp_path, capsys)


@pytest.mark.slow  # a full run; the SBN's flags are test_model_flags_build_the_model_they_name's
@pytest.mark.parametrize("loss", ["vimco"])
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
    assert metrics["latent_units"] == 6 and 0 < metrics["nll"] < 64 * np.log(2)
    assert metrics["elbo"] <= metrics["iwae_k"] + 1e-3 <= metrics["log_likelihood"] + 2e-3
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
