"""Issue #22, "Nothing lost, nothing silent": bad inputs and faults give one named error, and lose nothing."""

import json

import numpy as np

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


# ------------------------------------------------------------------------------------- non-finite training
def _tiny(steps_per_execution=10, lr=1e-3):
    import keras

    import vizoo
    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    keras.utils.set_random_seed(0)
    splits = vizoo.data.load("digits", batch_size=100, seed=0)
    model = VAE(64, 2, hidden_units=[8], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=IWAELoss(k=2), steps_per_execution=steps_per_execution)
    return model, splits


class _PoisonAt:
    """A callback that writes NaN into the first weight at the start of (0-based) epoch `epoch`, batch `batch`."""

    def __new__(cls, epoch, batch=0):
        import keras
        import numpy as np

        class Poison(keras.callbacks.Callback):
            def on_epoch_begin(self, e, logs=None):
                self.epoch = e

            def on_train_batch_begin(self, b, logs=None):
                if (self.epoch, b) == (epoch, batch):
                    w = self.model.trainable_weights[0]
                    w.assign(np.full(w.shape, np.nan, dtype="float32"))

        return Poison()


def test_non_finite_weights_stop_fit_run_and_keep_the_last_checkpoint(tmp_path):
    import os

    from vizoo import runs
    from vizoo.callbacks import TrainingCheckpoint, TrainingDiverged

    out = str(tmp_path / "run")
    model, splits = _tiny(steps_per_execution=1)
    with pytest.raises(TrainingDiverged) as info:
        runs.fit_run(model, splits.train, out, 3, splits.validation, verbose=0, callbacks=[_PoisonAt(1, batch=2)])
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "training diverged at epoch 2, batch 3: the weight" in message
    assert "the checkpoint after epoch 1 is kept in" in message and "Received: weight=" in message
    assert info.value.diverged["epoch"] == 2 and info.value.diverged["batch"] == 3
    assert info.value.diverged["what"] == "weight" and info.value.diverged["checkpoint_epoch"] == 1
    assert TrainingCheckpoint(os.path.join(out, runs.CHECKPOINT_DIR)).saved_epoch() == 1
    assert not os.path.exists(os.path.join(out, "model.keras"))  # no model of NaN weights
    with open(os.path.join(out, "history.csv")) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0"]  # the diverged epoch wrote no row

    resumed, splits = _tiny(steps_per_execution=1)  # a new process, without the fault: resumes after epoch 1
    result = runs.fit_run(resumed, splits.train, out, 2, splits.validation, verbose=0)
    assert result["resumed_epoch"] == 1
    assert all(np.isfinite(w.numpy()).all() for w in resumed.weights if "float" in str(w.dtype))


def test_non_finite_loss_stops_plain_fit_with_the_callback():
    from vizoo.callbacks import StopOnNonFinite, TrainingDiverged

    model, splits = _tiny(lr=1e30)
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1, batch \d+: the (loss|weight)"):
        model.fit(splits.train, epochs=2, verbose=0, callbacks=[StopOnNonFinite()])


@pytest.mark.parametrize(
    "name, what",
    [("loss", "loss"), ("val_loss", "val_loss"), ("kl", "metric"), ("val_kl", "metric"),
     ("adversary_loss", "diagnostic"), ("val_adversary_loss", "diagnostic")],
)
def test_an_epochs_non_finite_logged_value_is_named_by_its_kind(name, what):
    from types import SimpleNamespace

    from vizoo.callbacks import StopOnNonFinite, TrainingDiverged
    from vizoo.losses import AVBLoss

    callback = StopOnNonFinite(check_weights=False)
    callback.set_model(SimpleNamespace(loss=AVBLoss(), optimizer=None))
    callback.on_epoch_begin(2)
    with pytest.raises(TrainingDiverged, match=rf"epoch 3: the {name}\b.* is nan"):
        callback.on_epoch_end(2, {"loss": 1.0, name: float("nan")})
    assert callback.diverged == {"epoch": 3, "batch": None, "step": None, "what": what, "name": name, "value": "nan"}


def test_train_py_divergence_exits_2_with_metrics_json_without_nan(tmp_path, capsys):
    import os

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.main(["--lr", "1e30", "--hidden-units", "8", "--latent-dim", "2", "--epochs", "2", "--eval-k", "10",
                  "--k", "2", "--verbose", "0", "--out-dir", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "training diverged at epoch 1, batch" in err and "no epoch finished" in err
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    metrics = json.loads(text)
    assert metrics["nll"] is None and metrics["diverged"]["epoch"] == 1
    assert metrics["diverged"]["what"] in ("loss", "weight") and metrics["diverged"]["checkpoint_epoch"] is None
    assert not os.path.exists(out / "encoder")


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-1"])
def test_lr_must_be_finite_and_positive(lr, tmp_path, capsys):
    from tests.helpers import assert_cli_error

    assert_cli_error(["--lr", lr], f"lr must be finite and positive. Received: lr={float(lr)}", tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ data checks
def _idx_dir(tmp_path, train_shape=(6, 4, 4), test_shape=(3, 4, 4)):
    from vizoo.data import write_idx

    directory = tmp_path / "idx"
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(directory / "train-images-idx3-ubyte.gz", rng.integers(0, 255, train_shape).astype("uint8"))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, test_shape).astype("uint8"))
    return directory


def test_a_labels_file_under_the_images_name_is_refused_naming_it(tmp_path):
    from vizoo import data

    directory = _idx_dir(tmp_path, train_shape=(6,))
    with pytest.raises(ValueError, match=r"IDX images must be 3-D \(count, rows, cols\); train-images-idx3-ubyte.gz "
                                         r"holds shape \(6,\) \(a labels file\?\)\. Received: path=.*train-images"):
        data.load("fashion_mnist", data_dir=str(directory))


def test_train_and_test_image_sizes_must_agree(tmp_path):
    from vizoo import data

    directory = _idx_dir(tmp_path, test_shape=(3, 5, 5))
    with pytest.raises(ValueError, match=r"train and test images differ in size: .*\(4, 4\).*\(5, 5\)\. Received: data_dir="):
        data.load("fashion_mnist", data_dir=str(directory))


def test_gzip_errors_name_the_file(tmp_path):
    from vizoo.data import read_idx

    directory = _idx_dir(tmp_path)
    path = directory / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"truncated gzip file.*Received: path=.*train-images-idx3-ubyte.gz"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03 plain bytes, not gzip")
    with pytest.raises(ValueError, match=r"not gzip data.*Received: path=.*train-images-idx3-ubyte.gz"):
        read_idx(path)


def test_an_explicit_data_dir_is_never_replaced_by_another_source(tmp_path, monkeypatch):
    from vizoo import data

    installed = _idx_dir(tmp_path)  # stands for Debian's files, which must not be used instead
    monkeypatch.setattr(data.datasets, "DEBIAN_FASHION_MNIST_DIR", str(installed))
    empty = tmp_path / "mine"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"data_dir has no train-images-idx3-ubyte.*Received: data_dir=.*mine"):
        data.load("fashion_mnist", data_dir=str(empty))
    only_test = _idx_dir(tmp_path / "x")
    (only_test / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"data_dir has no train-images-idx3-ubyte"):
        data.load("fashion_mnist", data_dir=str(only_test))
    with pytest.raises(ValueError, match=r"data_dir does not apply to digits.*Received: dataset='digits', data_dir="):
        data.load("digits", data_dir=str(installed))
    assert data.load("fashion_mnist", binarization="none").source == str(installed)  # without data_dir: the default


def _model():
    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    model = VAE(4, 2, hidden_units=[8], seed=0)
    model.compile(optimizer="adam", loss=IWAELoss(k=2))
    return model


def test_a_failed_model_save_keeps_the_file_that_was_there(tmp_path, monkeypatch):
    """model.keras / best.keras are written beside and moved over the old file: a full disk mid-write (Keras
    writes in place, emptying the file first) leaves the previous model whole, and the error names the file."""
    import errno

    from keras.src.saving import saving_lib

    import vizoo

    model = _model()
    model.build((None, 4))
    path = tmp_path / "best.keras"
    model.save(path)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saving_lib, "_save_state", full_disk)
    with pytest.raises(OSError, match=r"writing the model file .*best.keras failed \(No space left on device\); the file"):
        model.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]
    monkeypatch.undo()
    assert type(vizoo.load_model(path, compile=False)).__name__ == "VAE"


def test_a_failed_history_rewrite_keeps_every_row(tmp_path, monkeypatch):
    import csv

    from vizoo import runs

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.0\n")

    def full_disk(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full_disk)
    with pytest.raises(OSError):
        runs._continue_history(str(path), 2)
    assert path.read_text() == "epoch,loss\n0,3.0\n1,2.0\n2,1.0\n" and len(list(tmp_path.iterdir())) == 1
    monkeypatch.undo()
    assert [row["epoch"] for row in runs._continue_history(str(path), 2)] == ["0", "1"]


def test_each_history_row_is_on_disk_before_its_epochs_checkpoint(tmp_path, monkeypatch):
    import os

    from vizoo import runs
    from vizoo.callbacks import TrainingCheckpoint

    synced_rows, rows_at_commit = [0], []
    real_fsync, real_commit = os.fsync, TrainingCheckpoint.on_epoch_end

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if path.endswith("history.csv"):
            with open(path) as f:
                synced_rows[0] = len(f.read().splitlines()) - 1
        return real_fsync(fd)

    def commit(self, epoch, logs=None):
        rows_at_commit.append((epoch, synced_rows[0]))
        return real_commit(self, epoch, logs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", commit)
    model, splits = _tiny(steps_per_execution=1)
    runs.fit_run(model, splits.train.take(2), str(tmp_path / "run"), 3, verbose=0)
    assert rows_at_commit == [(0, 1), (1, 2), (2, 3)]  # epoch e's row was synced before its checkpoint


def test_fit_run_checks_its_arguments(tmp_path):
    from vizoo import runs

    model, splits = _tiny(steps_per_execution=1)
    for epochs in (0, 2.5, "3"):
        with pytest.raises(ValueError, match=f"Received: epochs={epochs!r}"):
            runs.fit_run(model, splits.train, str(tmp_path / "a"), epochs, verbose=0)
    with pytest.raises(ValueError, match="out_dir must be a directory path. Received: out_dir=None"):
        runs.fit_run(model, splits.train, None, 1, verbose=0)
    for run in (runs.fit_run, runs.train_run):  # arrays would never be shuffled (fit_run passes shuffle=False)
        with pytest.raises(ValueError, match="train_data must be a batched tf.data.Dataset.*Received: train_data of type ndarray"):
            run(model, np.zeros((4, 16), "float32"), str(tmp_path / "c"), 1, verbose=0)
    assert not (tmp_path / "c").exists()
    runs.fit_run(model, splits.train, str(tmp_path / "b"), 2, verbose=0)  # checkpoint of epoch 2 kept (no finish_run)
    model, splits = _tiny(steps_per_execution=1)
    with pytest.raises(ValueError, match=r"after epoch 2, beyond epochs=1.*Received: epochs=1"):
        runs.fit_run(model, splits.train, str(tmp_path / "b"), 1, verbose=0)


def test_fit_run_refuses_to_resume_a_checkpoint_of_another_loss(tmp_path):
    """Weights of the same shapes load whatever the objective: the checkpoint records the loss it trained."""
    from vizoo import runs
    from vizoo.losses import ELBOLoss

    model, splits = _tiny(steps_per_execution=1)
    runs.fit_run(model, splits.train, str(tmp_path), 1, verbose=0)  # its checkpoint stays (no finish_run)
    other, splits = _tiny(steps_per_execution=1)
    other.compile(optimizer="adam", loss=ELBOLoss())
    with pytest.raises(ValueError, match=r"training with the loss IWAELoss\(.*\"k\": 2.*compiled with ELBOLoss"):
        runs.fit_run(other, splits.train, str(tmp_path), 2, verbose=0)
    same, splits = _tiny(steps_per_execution=1)  # the same loss resumes
    assert runs.fit_run(same, splits.train, str(tmp_path), 2, verbose=0)["resumed_epoch"] == 1


def test_an_unreadable_config_of_an_interrupted_run_is_named(tmp_path):
    import argparse

    from vizoo import config

    (tmp_path / config.CONFIG_FILE).write_text('{"lr": 0.00')  # cut short
    with pytest.raises(ValueError, match=r"config.json cannot be read .*Received: out_dir="):
        config.check_resumable(argparse.Namespace(lr=0.001), str(tmp_path))


def test_empty_training_data_is_a_named_error():
    import tensorflow as tf

    model = _model()
    x = np.random.default_rng(0).random((10, 4)).astype("float32")
    with pytest.raises(ValueError, match=r"x holds no examples.*Received: x.shape=\(0, 4\)"):
        model.fit(np.zeros((0, 4), "float32"), verbose=0)
    with pytest.raises(ValueError, match=r"x holds no batches.*cardinality 0"):
        model.fit(tf.data.Dataset.from_tensor_slices(x).take(0).batch(2), verbose=0)
    unknown_size = tf.data.Dataset.from_tensor_slices(x).batch(2).filter(lambda batch: False)
    with pytest.warns(UserWarning, match="ran out of data"), pytest.raises(ValueError, match=r"x yielded no batches"):
        model.fit(unknown_size, verbose=0)


def test_changing_width_and_wrong_sample_weight_are_vizoos_errors():
    import tensorflow as tf

    model = _model()
    x = np.random.default_rng(0).random((10, 4)).astype("float32")
    with pytest.raises(ValueError, match=r"sample_weight must hold one weight per example of x \(10\).*"
                                         r"Received: sample_weight.shape=\(7,\)"):
        model.fit(x, sample_weight=np.ones(7), verbose=0)
    ragged = tf.data.Dataset.from_generator(
        lambda: iter([x[:2], x[:2, :3]]), output_signature=tf.TensorSpec((None, None), tf.float32)
    )
    with pytest.raises(ValueError, match=r"x must yield batches of shape \(batch, 4\)\. "
                                         r"Received: a batch of x with shape \(2, 3\)"):
        model.fit(ragged, verbose=0)
    weighted = tf.data.Dataset.from_tensor_slices((x, x, np.ones(10))).batch(5).map(lambda a, b, w: (a, b, w[:2]))
    with pytest.raises(ValueError, match=r"sample_weight of x must hold one weight per example of its batch\. "
                                         r"Received: a batch of 5 examples with sample_weight of shape \(2\)"):
        model.fit(weighted, verbose=0)
    scalar = tf.data.Dataset.from_tensor_slices((x, x, np.ones(10))).batch(5).map(lambda a, b, w: (a, b, w[0]))
    with pytest.raises(ValueError, match="sample_weight of x must hold one weight per example of its batch. "
                                         "Received: a scalar sample_weight"):
        model.fit(scalar, verbose=0)


# ------------------------------------------------------------------------------------- non-vizoo models, noise
@pytest.mark.parametrize("function", ["log_likelihood", "export_encoder", "export_prior"])
def test_non_vizoo_models_are_named(function, tmp_path):
    import keras

    import vizoo

    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2)])
    call = {
        "log_likelihood": lambda: vizoo.evaluate.log_likelihood(model, np.zeros((2, 4), "float32"), k=2),
        "export_encoder": lambda: vizoo.export.export_encoder(model, tmp_path / "e"),
        "export_prior": lambda: vizoo.export.export_prior(model, tmp_path / "p"),
    }[function]
    with pytest.raises(ValueError, match=rf"^{function} expects a vizoo LatentVariableModel \(e.g. vizoo.models.VAE\); "
                                         r"received Sequential\. Received: model=Sequential$"):
        call()


def test_sample_terms_names_a_wrong_noise_shape():
    import tensorflow as tf

    model = _model()
    x = tf.zeros((3, 4))
    model.sample_terms(x, noise=tf.zeros((3, 5, 2)), terms=("z",))  # the right shape
    for shape in [(3, 5, 7), (2, 5, 2), (3, 2), (3, 5, 2, 1)]:
        with pytest.raises(ValueError, match=r"sample_terms expects noise of shape \[batch, k, 2\]( with batch = x's 3)? "
                                             rf".*Received: noise.shape=\({', '.join(map(str, shape))}\)"):
            model.sample_terms(x, noise=tf.zeros(shape), terms=("z",))


# -------------------------------------------------------------------------------------------------- exports
def test_exports_never_overwrite_unless_asked(tmp_path):
    import os

    from vizoo.export import export_encoder, export_prior

    model = _model()
    path = export_encoder(model, tmp_path / "encoder")
    stamp = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    with pytest.raises(ValueError, match=r"version directory .*encoder/1 exists: pass overwrite=True.*"
                                         r"Received: path=.*, version=1"):
        export_encoder(model, tmp_path / "encoder")
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == stamp
    assert export_encoder(model, tmp_path / "encoder", version=2).endswith("2")
    assert export_encoder(model, tmp_path / "encoder", overwrite=True) == path
    assert sorted(os.listdir(tmp_path / "encoder")) == ["1", "2"]  # no temporary directory left
    export_prior(model, tmp_path / "prior")
    with pytest.raises(ValueError, match=r"exists: pass overwrite=True"):
        export_prior(model, tmp_path / "prior")
    export_prior(model, tmp_path / "prior", overwrite=True)


def test_served_encoder_checks_its_inputs(tmp_path):
    import tensorflow as tf

    from vizoo.export import export_encoder

    loaded = tf.saved_model.load(export_encoder(_model(), tmp_path / "encoder"))
    serve, sample = loaded.signatures["serving_default"], loaded.signatures["sample"]
    x = tf.random.uniform((3, 4))
    assert sample(x=x, eps=tf.zeros((3, 5, 2)))["z"].shape == (3, 5, 2)
    cases = [
        (lambda: serve(x=tf.constant([[0.5, np.nan, 0.5, 0.5]])), r"x must be finite \(shape \[batch, 4\]\)"),
        (lambda: sample(x=x, eps=tf.zeros((2, 5, 2))), r"eps must have shape \[batch, k, 2\] with the batch of x"),
        (lambda: sample(x=x, eps=tf.fill((3, 5, 2), np.inf)), r"eps must be finite"),
        (lambda: serve(x=tf.zeros((3, 5))), r"x must have shape \[batch, 4\]; received another shape"),
    ]
    for call, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call()
    # Another noise size: refused by the export's check, or before it by TensorFlow's own (a TypeError naming
    # eps's spec), depending on what the loaded signature has seen.
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError), match=r"eps"):
        sample(x=x, eps=tf.zeros((3, 5, 3)))


# --------------------------------------------------------------------------------------- corrupt .keras files
def test_load_model_names_a_corrupt_or_truncated_file(tmp_path):
    import zipfile

    import vizoo

    model = _model()
    model.build((None, 4))
    good = tmp_path / "model.keras"
    model.save(good)
    assert type(vizoo.load_model(good, compile=False)).__name__ == "VAE"
    raw = good.read_bytes()
    cases = {
        "truncated.keras": (raw[: len(raw) // 2], r"model file is truncated"),
        "empty.keras": (b"", r"not a valid .keras archive \(empty\)"),
        "text.keras": (b"hello, not a model", r"not a valid .keras archive \(not a zip file\)"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"{message}.*Received: path='.*{name}'$"):
            vizoo.load_model(tmp_path / name)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match=r"not a valid .keras archive \(it has no config.json, model.weights.h5\)"):
        vizoo.load_model(tmp_path / "other.keras")
    with zipfile.ZipFile(good) as full, zipfile.ZipFile(tmp_path / "weightless.keras", "w") as cut:
        for member in ("metadata.json", "config.json"):  # what a write stopped by a full disk left
            cut.writestr(member, full.read(member))
    with pytest.raises(ValueError, match=r"\(it has no model.weights.h5\).*weightless.keras"):
        vizoo.load_model(tmp_path / "weightless.keras")
    with pytest.raises(ValueError, match=r"model file does not exist. Received: path='.*missing.keras'"):
        vizoo.load_model(tmp_path / "missing.keras")
    vizoo.export.export_encoder(model, tmp_path / "encoder")  # a SavedModel: Keras took it for an Orbax checkpoint
    with pytest.raises(ValueError, match=r"must be a .keras file, not a directory .*tf.saved_model.load.*"
                                         r"Received: path='.*encoder'"):
        vizoo.load_model(tmp_path / "encoder")


def test_plots_only_names_a_truncated_model_keras(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "digits"}))
    (run / "model.keras").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(SystemExit) as info:
        cli.main(["--plots-only", "--out-dir", str(run)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model file is truncated" in err and "model.keras" in err
    with pytest.raises(SystemExit) as info:
        cli.main(["--plots-only", "--out-dir", str(tmp_path / "missing")])
    assert info.value.code == 2 and "it has no model.keras" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()  # reading a run creates no directory


# ---------------------------------------------------------------------------------------------- a full disk
def _checkpoint_files(out):
    import os

    from vizoo import runs

    return sorted(os.listdir(os.path.join(out, runs.CHECKPOINT_DIR)))


def test_too_little_free_space_stops_before_writing_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import collections
    import shutil

    from vizoo import runs
    from vizoo.callbacks import CheckpointWriteError

    out = str(tmp_path / "run")
    model, splits = _tiny()
    runs.fit_run(model, splits.train, out, 1, None, verbose=0)
    before = _checkpoint_files(out)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2048, 2048))
    model, splits = _tiny()
    with pytest.raises(CheckpointWriteError) as info:
        runs.fit_run(model, splits.train, out, 2, None, verbose=0)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and isinstance(info.value, OSError)
    assert "cannot write the checkpoint of epoch 2 in" in message and "0.0 MiB free" in message
    assert "the checkpoint after epoch 1 is kept" in message and "Received: directory=" in message
    assert _checkpoint_files(out) == before == ["epoch-1.weights.h5", "state.json"]
    monkeypatch.undo()  # room again: the run resumes from epoch 1
    model, splits = _tiny()
    assert runs.fit_run(model, splits.train, out, 2, None, verbose=0)["resumed_epoch"] == 1


def test_a_write_error_removes_temporary_files_and_train_py_exits_1(tmp_path, monkeypatch, capsys):
    import errno

    import keras

    out = tmp_path / "run"
    original = keras.Model.save_weights
    calls = []

    def save_weights(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second epoch's checkpoint: the disk fills up while writing
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    with pytest.raises(SystemExit) as info:
        cli.main(["--hidden-units", "8", "--latent-dim", "2", "--epochs", "3", "--eval-k", "10", "--k", "2",
                  "--verbose", "0", "--out-dir", str(out)])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot write the checkpoint of epoch 2" in err and "No space left on device" in err and "MiB free" in err
    assert _checkpoint_files(out) == ["epoch-1.weights.h5", "state.json"]  # no tmp-* file, epoch 1 kept


@pytest.mark.slow  # a train.py process, on a real 1 MiB tmpfs
def test_train_py_on_a_real_full_tmpfs_exits_1_without_crashing(tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        result = subprocess.run(
            [sys.executable, "train.py", "--hidden-units", "64", "--latent-dim", "8", "--epochs", "2", "--eval-k", "10",
             "--k", "2", "--verbose", "0", "--out-dir", str(mount_point / "run")],
            cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 1, (result.returncode, result.stderr[-3000:])  # not a segfault (-11)
        last = result.stderr.strip().splitlines()[-1]
        assert "cannot write the checkpoint of epoch 1" in last and "MiB free" in last and str(mount_point) in last
        leftovers = [name for name in os.listdir(mount_point / "run" / "checkpoint")] if os.path.isdir(
            mount_point / "run" / "checkpoint") else []
        assert not [name for name in leftovers if name.startswith("tmp-")]
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_non_finite_weights_stop_train_run_and_keep_the_last_backup(tmp_path):
    """vizoo's own loop (train.py --training-loop vizoo) stops and says what it kept as fit_run does."""
    import os

    from vizoo import runs
    from vizoo.callbacks import TrainingDiverged

    import keras

    class PoisonAfter(keras.callbacks.Callback):  # (the loop calls on_train_batch_end only, after each call)
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 15:  # epoch 2, batch 2 (13 batches an epoch)
                w = self.model.trainable_weights[0]
                w.assign(np.full(w.shape, np.nan, dtype="float32"))

    out = str(tmp_path / "run")
    model, splits = _tiny(steps_per_execution=1)
    with pytest.raises(TrainingDiverged) as info:
        runs.train_run(model, splits.train, out, 3, validation_data=splits.validation, verbose=0,
                       callbacks=[PoisonAfter()])
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "training diverged at epoch 2, batch 3: the " in message
    assert f"the backup after epoch 1 is kept in {os.path.join(out, runs.BACKUP_DIR)}" in message
    assert info.value.diverged["checkpoint_epoch"] == 1 and runs.backup_epoch(out) == 1
    assert not os.path.exists(os.path.join(out, "model.keras"))  # no model of NaN weights
    with open(os.path.join(out, "history.csv")) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0"]


def test_ctrl_c_in_train_run_saves_the_weights_and_says_how_to_resume(tmp_path):
    import os

    import keras

    from vizoo import runs

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 16:  # in epoch 2 (13 batches an epoch)
                raise KeyboardInterrupt

    out = str(tmp_path / "run")
    model, splits = _tiny(steps_per_execution=1)
    with pytest.raises(runs.RunInterrupted) as info:
        runs.train_run(model, splits.train, out, 3, validation_data=splits.validation, verbose=0, callbacks=[CtrlC()])
    assert str(info.value) == (
        f"interrupted during training; the backup after epoch 1 is in {os.path.join(out, runs.BACKUP_DIR)}; the current "
        f"weights are in {os.path.join(out, 'model.keras')}. Run the same command again to resume."
    )
    assert os.path.exists(os.path.join(out, "model.keras"))
    resumed, splits = _tiny(steps_per_execution=1)
    result = runs.train_run(resumed, splits.train, out, 3, validation_data=splits.validation, verbose=0)
    assert result["resumed_epoch"] == 1
    with open(os.path.join(out, "history.csv")) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0", "1", "2"]
    # Stopped in the first epoch: nothing to resume, and the message says the run starts over.
    class EarlyCtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    model, splits = _tiny(steps_per_execution=1)
    with pytest.raises(runs.RunInterrupted, match=r"no epoch finished; .*Running the same command again starts it over\.$"):
        runs.fit_run(model, splits.train, str(tmp_path / "early"), 2, verbose=0, callbacks=[EarlyCtrlC()])


def test_too_little_free_space_for_train_runs_backup_stops_and_keeps_the_last_backup(tmp_path, monkeypatch):
    import collections
    import os
    import shutil

    from vizoo import runs
    from vizoo.callbacks import CheckpointWriteError

    out = str(tmp_path / "run")
    model, splits = _tiny()
    runs.train_run(model, splits.train, out, 1, verbose=0)
    backup = os.path.join(out, runs.BACKUP_DIR)
    before = sorted(os.listdir(backup))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2048, 2048))
    model, splits = _tiny()
    with pytest.raises(CheckpointWriteError) as info:
        runs.train_run(model, splits.train, out, 2, verbose=0)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and isinstance(info.value, OSError)
    assert f"cannot write the backup of epoch 2 in {backup} (about " in message and "0.0 MiB free" in message
    assert "the backup after epoch 1 is kept" in message and "Received: backup_dir=" in message
    assert sorted(os.listdir(backup)) == before and runs.backup_epoch(out) == 1
    monkeypatch.undo()  # room again: the run resumes from epoch 1
    model, splits = _tiny()
    assert runs.train_run(model, splits.train, out, 2, verbose=0)["resumed_epoch"] == 1


def test_finishing_a_run_removes_only_what_vizoo_wrote(tmp_path):
    from vizoo import runs

    checkpoint, backup = tmp_path / runs.CHECKPOINT_DIR, tmp_path / runs.BACKUP_DIR
    (backup / "sub").mkdir(parents=True)
    checkpoint.mkdir()
    written = [checkpoint / "state.json", checkpoint / "epoch-2.weights.h5", backup / "checkpoint",
               backup / "vizoo-backup-3.index", backup / "vizoo-backup-3.data-00000-of-00001"]
    written += [tmp_path / "tmp-4242-best.keras", tmp_path / "tmp-17-history.csv"]  # a kill during an atomic write
    mine = [checkpoint / "notes.txt", backup / "sub" / "thesis.tex", tmp_path / "tmp-notes-history.csv"]
    for path in written + mine:
        path.write_text('model_checkpoint_path: "vizoo-backup-3"' if path.name == "checkpoint" else "x")
    runs.finish_run(str(tmp_path))
    assert not any(path.exists() for path in written)
    assert all(path.read_text() == "x" for path in mine)  # the user's files, and so their directories, stay
    # A TensorFlow checkpoint of the user's own in backup/ (TensorFlow's default names) is not vizoo's backup:
    # it is neither read as one nor removed.
    import tensorflow as tf

    own = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(backup), max_to_keep=1)
    own.save(checkpoint_number=7)
    files = sorted(p.name for p in backup.iterdir())
    assert runs.backup_epoch(str(tmp_path)) is None
    runs.finish_run(str(tmp_path))
    assert sorted(p.name for p in backup.iterdir()) == files
    (checkpoint / "notes.txt").unlink()
    (checkpoint / "state.json").write_text("x")
    runs.finish_run(str(tmp_path))
    assert not checkpoint.exists()  # nothing else in it: removed
    # The run directory itself stays, even when an interrupted write's temporary file was all it held.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "tmp-99-config.json").write_text("x")
    runs.finish_run(str(fresh))
    assert fresh.is_dir() and not any(fresh.iterdir())
