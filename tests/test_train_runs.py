"""Long runs of train.py: checkpoints and resume (SIGKILL), Ctrl-C, the best model, config files, file errors."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests.helpers import REPO_ROOT, assert_cli_error, digits_vae, fit_straight_and_resumed
from vizoo import cli, runs
from vizoo.callbacks import TrainingCheckpoint

# Small but not instantaneous: 130 steps of one compiled call per epoch, so a kill lands between epochs.
SLOW_TINY = [
    "--dataset", "digits", "--hidden-units", "16", "--latent-dim", "4", "--eval-k", "10", "--k", "2",
    "--batch-size", "10", "--steps-per-execution", "1", "--verbose", "0",
]


def _history(out):
    with open(os.path.join(out, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _start(argv):
    return subprocess.Popen(
        [sys.executable, "train.py", *argv],
        cwd=REPO_ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A job started in the background of a non-interactive shell (as CI may run the suite) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt handler: restore the default, as
        # a terminal's Ctrl-C would find it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_epochs(process, out, epochs, timeout=240):
    """Poll the checkpoint until `epochs` epochs are saved; return the saved count."""
    checkpoint = TrainingCheckpoint(os.path.join(out, runs.CHECKPOINT_DIR))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = checkpoint.saved_epoch()
        if saved is not None and saved >= epochs:
            return saved
        assert process.poll() is None, f"train.py ended early:\n{process.communicate()[1][-3000:]}"
        time.sleep(0.02)
    process.kill()
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow  # two train.py processes
def test_sigkill_after_epoch_2_and_a_quiet_restart_finishes_the_run(tmp_path):
    out = str(tmp_path / "run")
    argv = SLOW_TINY + ["--epochs", "4", "--out-dir", out]
    process = _start(argv)
    saved = _wait_for_epochs(process, out, 2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert saved < 4 and not os.path.exists(os.path.join(out, "metrics.json")), "the run finished before the kill"

    # The restart runs as a user runs it (TF_CPP_MIN_LOG_LEVEL unset): it is also the test that `python
    # train.py` runs as a script from start to end with nothing on stderr (TensorFlow's start-up notices
    # filtered, no warnings).
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "train.py", *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.strip() == "", result.stderr
    assert "test NLL" in result.stdout
    assert [int(row["epoch"]) for row in _history(out)] == [0, 1, 2, 3]  # continued, each epoch once
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["resumed_from_epoch"] >= 2 and metrics["num_examples"] == 300
    for name in ("model.keras", "best.keras", "config.json", "command.txt", "samples.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, runs.CHECKPOINT_DIR))  # the run is complete


@pytest.mark.slow  # a train.py process
def test_ctrl_c_saves_and_exits_130_with_one_line(tmp_path):
    out = str(tmp_path / "run")
    process = _start(SLOW_TINY + ["--epochs", "50", "--out-dir", out])
    _wait_for_epochs(process, out, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: interrupted during training; the checkpoint after epoch") and "resume" in last
    assert os.path.exists(os.path.join(out, "model.keras"))
    assert TrainingCheckpoint(os.path.join(out, runs.CHECKPOINT_DIR)).saved_epoch() >= 1


@pytest.mark.parametrize("steps_per_execution", [pytest.param(1, marks=pytest.mark.slow), 10])
def test_resumed_run_equals_uninterrupted_run(tmp_path, steps_per_execution):
    """Weights, optimizer, noise and data order all continue: the same final weights to the last bit."""
    straight, resumed, result = fit_straight_and_resumed(lambda: digits_vae(steps_per_execution), tmp_path)
    assert result["resumed_epoch"] == 2
    assert result["history"].history["kl_weight"] == pytest.approx([2 / 3])  # the warm-up continued
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(straight.seed_generator.state.numpy(), resumed.seed_generator.state.numpy())
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations)
    rows_a, rows_b = _history(tmp_path / "a"), _history(tmp_path / "b")
    assert [r["epoch"] for r in rows_b] == ["0", "1", "2"]
    np.testing.assert_allclose([float(r["loss"]) for r in rows_a], [float(r["loss"]) for r in rows_b], rtol=1e-6)


def test_a_checkpoint_refuses_epochs_that_are_not_whole_passes_of_the_data(tmp_path):
    model, splits = digits_vae()
    for data, steps, shown in ((splits.train, 5, "of 13 batches"), (splits.train.repeat(), 13, "infinite")):
        checkpoint = TrainingCheckpoint(str(tmp_path / "checkpoint"), train_data=data)
        with pytest.raises(ValueError, match=rf"resumes train_data's position by whole passes.*Received: "
                                             rf"steps_per_epoch={steps}, train_data {shown}"):
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[checkpoint])
    assert not (tmp_path / "checkpoint").exists()


def test_a_later_fit_after_a_resumed_fit_that_failed_starts_where_asked(tmp_path):
    model, splits = digits_vae()
    directory = str(tmp_path / "checkpoint")
    model.fit(splits.train, epochs=1, verbose=0, callbacks=[TrainingCheckpoint(directory, train_data=splits.train)])

    class Fail(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("stopped")

    resumed, splits = digits_vae()
    with pytest.raises(RuntimeError, match="stopped"):
        resumed.fit(splits.train, epochs=3, verbose=0, callbacks=[TrainingCheckpoint(directory, train_data=splits.train), Fail()])
    assert resumed.fit(splits.train, epochs=2, verbose=0).epoch == [0, 1]  # not [] (it started at the checkpoint's 1)


@pytest.mark.slow  # the power of the test above: three more runs
def test_without_the_noise_state_the_resumed_run_differs(tmp_path, monkeypatch):
    """The check above is sensitive: dropping the seed-generator state changes the result."""
    import vizoo.callbacks as callbacks

    monkeypatch.setattr(callbacks, "_seed_states", lambda model: {})  # (the straight run restores nothing)
    straight, resumed, _ = fit_straight_and_resumed(digits_vae, tmp_path)
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(straight.weights, resumed.weights))


@pytest.mark.slow  # two runs; resume itself is test_resumed_run_equals_uninterrupted_run
def test_history_rows_after_the_checkpoint_are_dropped_and_best_threshold_kept(tmp_path):
    model, splits = digits_vae()
    out = str(tmp_path / "run")
    runs.fit_run(model, splits.train, out, 2, splits.validation, verbose=0)
    path = os.path.join(out, "history.csv")
    with open(path) as f:
        lines = f.read().splitlines()
    header = lines[0].split(",")
    # The threshold comes from the kept rows: epoch 1's val_loss set far below any the run reaches, so epoch 3
    # must not replace best.keras (its val_loss always improves on the real ones: the test would pass without it).
    last = lines[2].split(",")
    last[header.index("val_loss")] = "0.5"
    with open(path, "w", newline="") as f:
        f.write("\n".join(lines[:2] + [",".join(last)]) + "\n2,1.0,99.0,99.0\n")  # + a row written just before a kill
    rows = _history(out)[:2]
    best_mtime = os.path.getmtime(os.path.join(out, "best.keras"))
    model, splits = digits_vae()
    runs.fit_run(model, splits.train, out, 3, splits.validation, verbose=0)
    history = _history(out)
    assert [r["epoch"] for r in history] == ["0", "1", "2"] and history[:2] == rows
    assert 0.5 < float(history[2]["val_loss"])
    assert os.path.getmtime(os.path.join(out, "best.keras")) == best_mtime


def test_a_refused_fit_run_leaves_a_finished_runs_outputs_and_a_users_warmup_is_logged(tmp_path):
    import tensorflow as tf

    from vizoo.callbacks import KLWarmup

    model, splits = digits_vae(steps_per_execution=1)
    out = str(tmp_path / "run")
    runs.fit_run(model, splits.train.take(2), out, 1, splits.validation.take(1), verbose=0)
    runs.finish_run(out)
    before = {name: os.path.getmtime(os.path.join(out, name)) for name in ("history.csv", "best.keras")}
    wrong = tf.data.Dataset.from_tensor_slices(np.zeros((4, 63), "float32")).batch(2)
    for kwargs, message in [(dict(callbacks=keras.callbacks.History()), "callbacks must be a list"),
                            (dict(validation_data=wrong), "validation_data")]:
        model, splits = digits_vae(steps_per_execution=1)
        with pytest.raises(ValueError, match=message):
            runs.fit_run(model, splits.train.take(2), out, 1, **{"validation_data": splits.validation.take(1), **kwargs})
        assert {name: os.path.getmtime(os.path.join(out, name)) for name in before} == before
    # A warm-up the user passes, after other callbacks, still logs the epoch's kl_weight in history.csv.
    model, splits = digits_vae(steps_per_execution=1)
    runs.fit_run(model, splits.train.take(2), out, 2, verbose=0, callbacks=[keras.callbacks.History(), KLWarmup(4)])
    assert [row["kl_weight"] for row in _history(out)] == ["0.0", "0.25"]
    assert not os.path.exists(os.path.join(out, "best.keras"))  # the new run has no validation data: removed


def test_an_epoch_cut_short_is_not_checkpointed_as_finished(tmp_path, capsys):
    import tensorflow as tf

    from vizoo.losses import ELBOLoss
    from vizoo.models import VAE

    x = (np.random.default_rng(0).random((100, 16)) < 0.5).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(x).batch(20)  # 5 batches an epoch

    def make():
        model = VAE(16, 2, hidden_units=[4], seed=0)
        model.compile(optimizer="adam", loss=ELBOLoss())
        return model

    class StopAtStep7(keras.callbacks.Callback):  # e.g. a wall-clock limit, in epoch 2
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 7:
                self.model.stop_training = True

    out = str(tmp_path / "run")
    runs.fit_run(make(), data, out, 3, verbose=0, callbacks=[StopAtStep7()])
    assert runs.checkpoint_epoch(out) == 1
    assert "epoch 2 stopped after 2 of 5 batches: not checkpointed as finished (the checkpoint after epoch 1 stays)" \
        in capsys.readouterr().out
    resumed = make()
    runs.fit_run(resumed, data, out, 3, verbose=0)
    assert int(resumed.optimizer.iterations) == 15  # epochs 2 and 3 whole, after epoch 1's 5 steps
    assert [row["epoch"] for row in _history(out)] == ["0", "1", "2"]


def test_corrupt_checkpoint_is_a_named_error(tmp_path, capsys):
    out = tmp_path / "run"
    checkpoint = out / runs.CHECKPOINT_DIR
    checkpoint.mkdir(parents=True)
    (checkpoint / "epoch-1.weights.h5").write_bytes(b"this is not an HDF5 file")
    (checkpoint / "state.json").write_text(json.dumps({"epoch": 1, "weights": "epoch-1.weights.h5"}))
    argv = ["--latent-dim", "2", "--hidden-units", "8", "--epochs", "2", "--eval-k", "20", "--verbose", "0"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--out-dir", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"The checkpoint in {checkpoint} cannot be restored" in err and f"Received: directory='{checkpoint}'" in err
    assert len(err.strip().splitlines()) == 1

    (checkpoint / "state.json").write_text("{garbage")
    with pytest.raises(SystemExit):
        cli.main(argv + ["--out-dir", str(out)])
    assert "state.json is unreadable" in capsys.readouterr().err
    assert cli.main(argv + ["--out-dir", str(out), "--restart"]) == 0  # --restart discards it


def test_resuming_with_other_options_is_a_named_error(tmp_path, capsys):
    out = str(tmp_path / "run")
    model, splits = digits_vae()
    runs.fit_run(model, splits.train, out, 1, None, verbose=0)  # an interrupted run's checkpoint
    argv = ["--latent-dim", "4", "--hidden-units", "16", "--epochs", "2", "--eval-k", "20", "--verbose", "0"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(vars(cli.build_parser().parse_args(argv + ["--out-dir", out])), latent_dim=8), f)
    with pytest.raises(SystemExit):
        cli.main(argv + ["--out-dir", out])
    assert "latent_dim=8 before, 4 now" in capsys.readouterr().err


@pytest.mark.parametrize("out_dir", ["/proc/vizoo-run", "/dev/null/run"])
def test_unwritable_out_dir_is_one_line(out_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--epochs", "1", "--out-dir", out_dir])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"Received: out_dir='{out_dir}'" in err


@pytest.mark.slow  # a full run and a --plots-only run
def test_config_file_command_txt_and_tensorboard(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"latent-dim": 3, "hidden_units": [8], "epochs": 1, "eval_k": 20, "verbose": 0}))
    out = tmp_path / "run"
    assert cli.main(["--config", str(config), "--latent-dim", "2", "--tensorboard", "--out-dir", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["latent_dim"], saved["hidden_units"], saved["epochs"]) == (2, [8], 1)  # the flag overrides
    assert os.listdir(out / "tensorboard")
    # command.txt and config.json each give back the same options
    command = shlex.split((out / "command.txt").read_text())
    assert command[:2] == ["python", "train.py"]
    from vizoo import config as run_config

    again = vars(run_config.parse_args(cli.build_parser(), command[2:]))
    from_config = vars(run_config.parse_args(cli.build_parser(), ["--config", str(out / "config.json")]))
    assert {k: v for k, v in again.items() if k not in run_config.NOT_SAVED} == saved
    assert {k: v for k, v in from_config.items() if k not in run_config.NOT_SAVED} == saved
    assert "restart" not in saved and "--tensorboard" in command
    for name in ("samples.png", "training_curves.png"):
        os.remove(out / name)
    assert cli.main(["--plots-only", "--out-dir", str(out)]) == 0  # re-created from the saved run
    assert (out / "samples.png").exists() and (out / "training_curves.png").exists()


def test_yaml_config_and_bad_config_files(tmp_path, capsys):
    pytest.importorskip("yaml")
    from vizoo import config as run_config

    parser = cli.build_parser()
    path = tmp_path / "run.yaml"
    path.write_text("latent_dim: 7\nloss: elbo\nhidden-units: [4, 4]\n")
    args = run_config.parse_args(parser, ["--config", str(path), "--k", "3"])
    assert (args.latent_dim, args.loss, args.hidden_units, args.k) == (7, "elbo", [4, 4], 3)
    for text, message in [("{", "config is not valid JSON"), ('{"latent_dimension": 2}', "unknown option 'latent_dimension'"),
                          ("[1, 2]", "must hold a mapping")]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(SystemExit):
            cli.main(["--config", str(tmp_path / "bad.json")])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--config", str(tmp_path / "missing.json")])
    assert "Received: config=" in capsys.readouterr().err


@pytest.mark.slow  # a full run; the flags' loss is test_cli's test_loss_flags_build_the_loss_they_name
def test_warmup_and_free_bits_flags(tmp_path):
    argv = ["--latent-dim", "4", "--hidden-units", "8", "--epochs", "2", "--eval-k", "20", "--verbose", "0"]
    out = tmp_path / "run"
    assert cli.main(argv + ["--loss", "elbo", "--kl-warmup-epochs", "2", "--free-bits", "0.1", "--free-bits-groups", "2",
                            "--out-dir", str(out)]) == 0
    assert [float(r["kl_weight"]) for r in _history(out)] == [0.0, 0.5]
    loss = keras.models.load_model(out / "model.keras").loss
    assert (loss.kl_warmup_epochs, loss.free_bits, loss.free_bits_groups) == (2, 0.1, 2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--loss", "iwae", "--free-bits", "0.5"], "free_bits applies to the losses ['elbo']. Received: loss='iwae'"),
        (["--kl-warmup-epochs", "-1"], "Received: kl_warmup_epochs=-1"),
        (["--loss", "elbo", "--free-bits", "-1"], "Received: free_bits=-1.0"),
        (["--loss", "elbo", "--free-bits", "1", "--posterior", "iaf"], "needs the term 'kl_per_dim'"),
        (["--kl-warmup-epochs", "2", "--gradient-estimator", "dreg"], "Received: kl_warmup_epochs=2, gradient_estimator='dreg'"),
        (["--loss", "elbo", "--latent-dim", "2", "--free-bits", "0.5", "--free-bits-groups", "5"],
         "free_bits_groups must be at most the latent dimension (2). Received: free_bits_groups=5"),
    ],
)
def test_bad_warmup_and_free_bits_flags(argv, message, tmp_path, capsys):
    assert_cli_error(argv, message, tmp_path, capsys)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--binarization", "foo"], "Received: binarization='foo'"),
        (["--seed", "-1"], "Received: seed=-1"),
        (["--validation-size", "-5"], "Received: validation_size=-5"),
        (["--data-dir", "/no/such/dir"], "Received: data_dir='/no/such/dir'"),
        (["--loss", "elbo", "--free-bits", "0.5", "--free-bits-groups", "9"], "Received: free_bits_groups=9"),
    ],
)
def test_bad_data_and_loss_flags_leave_a_finished_run_as_it_was(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--dataset", "digits", "--latent-dim", "2", "--hidden-units", "8", "--epochs", "1", "--eval-k", "5",
            "--verbose", "0"]
    if not out.exists():
        assert cli.main(tiny + ["--out-dir", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in ("config.json", "command.txt", "history.csv")}
    assert_cli_error(tiny + argv, message, out, capsys)  # refused before anything of the run is rewritten
    assert {name: (out / name).read_bytes() for name in before} == before


def test_yaml_without_pyyaml_says_so(tmp_path, monkeypatch):
    from vizoo import config as run_config

    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now fails
    path = tmp_path / "run.yml"
    path.write_text("epochs: 1\n")
    with pytest.raises(ValueError, match=r"needs PyYAML \(pip install pyyaml\).*Received: config="):
        run_config.read_config_file(str(path))
