"""Keras callbacks for long training runs: a resumable checkpoint and KL warm-up.

- `TrainingCheckpoint(directory, train_data=None)`: every epoch, the model's
  weights, the optimizer's state and the sampling-noise state, written
  atomically; `fit` restarted with the same callback continues from the last
  finished epoch (noise and data order included).
- `KLWarmup(epochs)`: the linear KL warm-up schedule beta = min(1, epoch / N)
  of a loss built with `kl_warmup_epochs=N` (`fit` adds it by itself).
- `StopOnNonFinite()`: stops training at the first non-finite loss or weight
  (raising `TrainingDiverged`, which names the epoch and batch), before the
  epoch's checkpoint, history row or best model is written.
"""

import glob
import json
import math
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from vizoo.utils import check_positive_int

_STATE_FILE = "state.json"
_FORMAT = 1  # version of state.json's layout


def _seed_states(model):
    """`{path: variable}` of the model's `keras.random.SeedGenerator` states (not in weight files)."""
    return {v.path: v for v in model.variables if v.name == "seed_generator_state"}


def _iterators_per_epoch(dataset):
    """How many iterators `fit` makes of a `tf.data` training set per epoch.

    Keras 3.15's EpochIterator makes one at the start of every epoch and, when
    the number of batches is known, one more (unused) at its end; each draws
    a reshuffling pipeline's next seeds. Checked by the test that a resumed
    run ends with the weights of an uninterrupted one.
    """
    cardinality = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
    return 2 if cardinality > 0 else 1


def _write_atomically(path, write):
    """Call `write(tmp_path)` and move the result to `path` in one step (a kill leaves the old file).

    The new file's data reach the disk before it replaces the old one, and the directory's entry after
    (fsync), so that a power cut cannot leave `path` naming an empty file. On any error the temporary
    file is removed and the error raised again.
    """
    directory, name = os.path.split(path)
    tmp_path = os.path.join(directory, f"tmp-{os.getpid()}-{name}")
    try:
        write(tmp_path)
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(directory or ".")
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _write_text_atomically(path, text):
    """Write `text` to `path` through `_write_atomically` (newlines as given: csv's \r\n stay)."""

    def write(tmp_path):
        with open(tmp_path, "w", newline="") as f:
            f.write(text)

    _write_atomically(path, write)


def _fsync(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # (a directory some systems do not open for reading: nothing more to do)
    try:
        os.fsync(fd)
    except OSError:
        pass  # (filesystems that do not sync directories)
    finally:
        os.close(fd)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, write error); the previous checkpoint is kept.

    An OSError, so `train.py` exits with status 1; the message (one line) names the directory and its free space.
    """


def _free_bytes(directory):
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _variables_bytes(model):
    """Bytes of the model's and its optimizers' variables: an estimate of a weights file's size."""
    variables = list(model.weights)
    optimizers = [getattr(model, "optimizer", None)] + list((getattr(model, "group_optimizers", None) or {}).values())
    for optimizer in optimizers:
        variables += list(getattr(optimizer, "variables", []) or [])
    total = 0
    for variable in variables:
        try:
            total += int(np.prod(variable.shape)) * np.dtype(str(variable.dtype).replace("'", "")).itemsize
        except TypeError:
            total += int(np.prod(variable.shape)) * 4
    return total


def _bytes_needed(previous_bytes, model):
    """Bytes a new checkpoint needs: the previous one's size (for the first, None: an estimate from the
    model's and optimizers' variables), with a margin for metadata and state files."""
    return int((previous_bytes if previous_bytes is not None else _variables_bytes(model)) * 1.1) + 1024 * 1024


def _write_reason(error):
    """What went wrong when writing a checkpoint, in one line (ENOSPC, an I/O error, h5py's RuntimeError)."""
    return os.strerror(error.errno) if getattr(error, "errno", None) else _one_line(error)


def _checkpoint_write_error(what, directory, reason, kept, argument, free_in=None):
    """The `CheckpointWriteError` of a checkpoint that could not be written: `what` ("the checkpoint of
    epoch 3") in `directory`, why, the free space (of `free_in`, default `directory`) and what is `kept`."""
    free = _free_bytes(free_in or directory)
    free_text = "unknown" if free is None else f"{free / 2**20:.1f} MiB"
    return CheckpointWriteError(
        f"cannot write {what} in {directory} ({reason}; {free_text} free); {kept}: free some space and run "
        f"again to resume. Received: {argument}={directory!r}"
    )


def _one_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class TrainingCheckpoint(keras.callbacks.Callback):
    """Back up the training state every epoch; restore it when `fit` starts again.

    Like `keras.callbacks.BackupAndRestore`, plus what a variational model
    needs to continue exactly where it stopped:
    - the model's weights with the optimizers' state (slots and iteration
      count; those of `compile(group_optimizers=...)` too), written atomically: a process killed while writing (SIGKILL,
      power loss) leaves the previous epoch's checkpoint intact;
    - the state of every `keras.random.SeedGenerator` of the model (the
      sampling noise), which weight files leave out: a resumed run draws
      fresh noise instead of repeating the first epochs';
    - the epoch count: `fit` continues at the next epoch (`initial_epoch`),
      and a seeded `tf.data` pipeline that reshuffles or re-binarizes every
      epoch, given as `train_data`, is advanced by the finished epochs, so the
      resumed run sees the data the uninterrupted run would have seen.

    A run killed after epoch e and restarted with the same data, model and
    seeds gives the weights of an uninterrupted run (tested). An epoch that a
    callback cut short (`model.stop_training` set mid-epoch, e.g. a time limit)
    is not checkpointed as finished: the checkpoint of the epoch before stays,
    and a resumed run trains the cut epoch again, whole.

    Before writing, the free space of the directory (`shutil.disk_usage`) is
    compared with the size of the last checkpoint's weights file (or, for the
    first, an estimate from the model's and optimizers' variables) plus a
    margin; too little space, or any error while writing (a full disk, an I/O
    error), stops training with `CheckpointWriteError` (an OSError) naming
    the directory and its free space. The temporary files are removed and the
    last committed checkpoint stays, so the run resumes once there is room.
    (Writing HDF5 on a full filesystem can crash h5py outright: hence the
    check before writing.) The checkpoint
    is kept when training ends: delete the directory (or call `delete()`)
    once the run's outputs are written, as `train.py` does.

    Args:
        directory: str, where the checkpoint lives (created when needed).
        train_data: optional `tf.data.Dataset` given to `fit`, to advance by
            the restored number of epochs (each new iterator of a pipeline with
            `reshuffle_each_iteration` / `rerandomize_each_iteration` draws anew).

    Example:
        >>> checkpoint = vizoo.callbacks.TrainingCheckpoint("runs/a/checkpoint", train_data=splits.train)
        >>> model.fit(splits.train, epochs=100, callbacks=[checkpoint])  # killed, then run again: resumes
        >>> checkpoint.saved_epoch()
        100
    """

    def __init__(self, directory, train_data=None):
        super().__init__()
        if not isinstance(directory, (str, os.PathLike)) or not str(directory):
            raise ValueError(f"directory must be a path. Received: directory={directory!r}")
        self.directory = str(directory)
        self.train_data = train_data
        self.restored_epoch = None  # the epoch `fit` resumed at (None: started afresh)

    # ---------------------------------------------------------------- reading
    def _error(self, reason):
        return ValueError(
            f"The checkpoint in {self.directory} cannot be restored: {reason}. Delete that directory to start "
            f"the run over, or use another output directory. Received: directory={self.directory!r}"
        )

    def _read_state(self):
        path = os.path.join(self.directory, _STATE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                state = json.load(f)
            epoch, weights = int(state["epoch"]), state["weights"]
            seeds = {str(key): [int(v) for v in value] for key, value in state.get("seed_states", {}).items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise self._error(f"{_STATE_FILE} is unreadable ({type(error).__name__}: {error})") from None
        if epoch < 0 or not isinstance(weights, str) or os.path.basename(weights) != weights:
            raise self._error(f"{_STATE_FILE} is malformed")
        if not os.path.exists(os.path.join(self.directory, weights)):
            raise self._error(f"its weights file {weights} is missing")
        return {"epoch": epoch, "weights": weights, "seed_states": seeds, "loss": state.get("loss")}

    def saved_epoch(self):
        """Number of finished epochs in the checkpoint, or None when there is none.

        Raises:
            ValueError: the checkpoint exists but cannot be read.
        """
        state = self._read_state()
        return None if state is None else state["epoch"]

    # --------------------------------------------------------------- restoring
    def on_train_begin(self, logs=None):
        self._check_whole_passes()
        state = self._read_state()
        if state is None:
            return
        model = self.model
        if not model.built:
            raise ValueError(
                "TrainingCheckpoint restores into a built model: build it first, e.g. "
                "model.build((None, input_dim)) or one call on a batch."
            )
        loss = _loss_description(model)
        if state["loss"] is not None and loss is not None and state["loss"] != loss:
            # Weights of the same shapes load whatever the objective: resuming would silently mix two trainings.
            raise self._error(
                f"it was written while training with the loss {state['loss']}, and this model is compiled with "
                f"{loss} (resuming would continue another training)"
            )
        from vizoo.models.latent_variable_model import LatentVariableModel  # (a plain Keras model works too)

        if isinstance(model, LatentVariableModel):
            model.build_optimizers()  # every optimizer's slots must exist to be loaded into (group optimizers too)
        elif model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(os.path.join(self.directory, state["weights"]))
        except Exception as error:  # h5py, Keras and shape errors alike: one clear message
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise self._error(f"its weights do not load into this model ({message})") from None
        current = _seed_states(model)
        for path, value in state["seed_states"].items():
            if path in current:
                current[path].assign(value)
        model._initial_epoch = state["epoch"]  # what keras.callbacks.BackupAndRestore sets: fit starts there
        if self.train_data is not None:
            for _ in range(state["epoch"] * _iterators_per_epoch(self.train_data)):
                iter(self.train_data)  # each new iterator reshuffles / redraws, as fit's did
        self.restored_epoch = state["epoch"]

    # ------------------------------------------------------------------ saving
    def _needed_bytes(self):
        """Bytes a new checkpoint needs: the last weights file's size (or an estimate), with a margin."""
        sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(self.directory, "*.weights.h5"))]
        return _bytes_needed(max(sizes) if sizes else None, self.model)

    def _write_error(self, epoch, reason):
        saved = self.saved_epoch_or_none()
        kept = f"the checkpoint after epoch {saved} is kept" if saved else "no checkpoint was written before"
        return _checkpoint_write_error(f"the checkpoint of epoch {epoch + 1}", self.directory, reason, kept, "directory")

    def saved_epoch_or_none(self):
        """`saved_epoch()`, or None when the checkpoint cannot be read."""
        try:
            return self.saved_epoch()
        except ValueError:
            return None

    def on_epoch_begin(self, epoch, logs=None):
        self._batches_done = 0
        # fit has read where to start by now: a later fit of the same model starts where it is asked to, even
        # after this one stopped with an error (on_train_end does not run then).
        self.model._initial_epoch = None

    def _check_whole_passes(self):
        """A resume advances `train_data` by whole passes: fit must run one pass of it per epoch."""
        steps = (self.params or {}).get("steps")
        if self.train_data is None or steps is None or not hasattr(self.train_data, "cardinality"):
            return
        cardinality = int(self.train_data.cardinality())
        if steps != cardinality:
            batches = {-1: "infinite (repeat())", -2: "of unknown size"}.get(cardinality, f"of {cardinality} batches")
            raise ValueError(
                "TrainingCheckpoint resumes train_data's position by whole passes: fit must run one pass of it per "
                "epoch (no steps_per_epoch other than its number of batches; no repeat()), or a resumed run would "
                f"train on other batches than an uninterrupted one. Received: steps_per_epoch={steps}, train_data "
                f"{batches}"
            )

    def on_train_batch_end(self, batch, logs=None):
        self._batches_done = batch + 1  # (the last batch of the training call: steps_per_execution too)

    def on_epoch_end(self, epoch, logs=None):
        steps = (self.params or {}).get("steps")
        done = getattr(self, "_batches_done", None)
        if steps and done is not None and done < steps:
            saved = self.saved_epoch_or_none()
            print(
                f"epoch {epoch + 1} stopped after {done} of {steps} batches: not checkpointed as finished "
                + (f"(the checkpoint after epoch {saved} stays)" if saved else "(no checkpoint yet)"),
                flush=True,
            )
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as error:
            raise self._write_error(epoch, error.strerror or str(error)) from None
        needed, free = self._needed_bytes(), _free_bytes(self.directory)
        if free is not None and free < needed:
            raise self._write_error(epoch, f"about {needed / 2**20:.1f} MiB needed")
        try:
            self._write(epoch)
        except (OSError, RuntimeError) as error:  # ENOSPC, I/O errors; h5py may raise RuntimeError
            uncommitted = os.path.join(self.directory, f"epoch-{epoch + 1}.weights.h5")
            for leftover in glob.glob(os.path.join(self.directory, "tmp-*")) + [uncommitted]:
                if os.path.exists(leftover) and self.saved_epoch_or_none() != epoch + 1:
                    os.remove(leftover)
            raise self._write_error(epoch, _write_reason(error)) from None

    def _write(self, epoch):
        weights = f"epoch-{epoch + 1}.weights.h5"
        _write_atomically(os.path.join(self.directory, weights), lambda path: self.model.save_weights(path))
        state = {
            "format": _FORMAT,
            "epoch": epoch + 1,
            "weights": weights,
            "seed_states": {path: [int(v) for v in variable.numpy()] for path, variable in _seed_states(self.model).items()},
            "loss": _loss_description(self.model),
        }
        # The commit point:
        _write_text_atomically(os.path.join(self.directory, _STATE_FILE), json.dumps(state, indent=2))
        for old in glob.glob(os.path.join(self.directory, "epoch-*.weights.h5")):
            if os.path.basename(old) != weights:
                os.remove(old)

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None  # a later fit of the same model starts where it is asked to

    def delete(self):
        """Remove the checkpoint (after the run's outputs are written): the files it wrote, then the directory
        if nothing else is in it (a file of the user's there stays, and so does the directory)."""
        # The state file first: cut short, the removal leaves no state naming a weights file that is gone.
        remove_written(
            self.directory, [_STATE_FILE, "epoch-*.weights.h5", "tmp-*-epoch-*.weights.h5", "tmp-*-" + _STATE_FILE]
        )


def remove_written(directory, patterns, keep_directory=False):
    """Remove the files of `directory` matching `patterns` (globs, in order), then the directory if it is empty
    (unless `keep_directory`).

    How vizoo deletes what it wrote (a checkpoint, a backup, an interrupted write's temporary file): never a
    file it did not write.
    """
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(glob.escape(os.fspath(directory)), pattern))):
            if os.path.isfile(path):
                os.remove(path)
    if keep_directory:
        return
    try:
        os.rmdir(directory)
    except OSError:  # absent, or holding something vizoo did not write
        pass


def _loss_description(model):
    """The compiled loss as a short, comparable string (its class and config), or None."""
    loss = getattr(model, "loss", None)
    if loss is None or not hasattr(loss, "get_config"):
        return None
    config = {key: value for key, value in loss.get_config().items() if key != "name"}
    return f"{type(loss).__name__}({json.dumps(config, sort_keys=True, default=str)})"


class TrainingDiverged(ValueError):
    """Training met a non-finite loss or weight; `diverged` says what, where (epoch, batch) and its value."""

    def __init__(self, message, diverged):
        super().__init__(message)
        self.diverged = diverged


def _describe(value):
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training at the first non-finite loss or weight, before anything of that epoch is saved.

    After every training call (each `steps_per_execution` batches) it checks
    every floating-point weight of the model (the first non-finite one is named),
    then the logged loss; at epoch end also
    every logged value (`val_loss` included). On the first non-finite one it raises
    `TrainingDiverged` (a ValueError) with a one-line message naming the epoch
    (1-based, as Keras prints it), the batch (1-based; the last batch of the
    training call that produced it) and the value, and `diverged`, a dict:
    `{"epoch", "batch", "step" (the main optimizer's iteration count), "what"
    ("loss", "val_loss", "weight", "diagnostic", or "metric" for any other logged value), "name" (the metric or the
    weight's path), "value" ("nan", "inf" or "-inf")}`. The compiled loss's
    declared diagnostics (`diagnostic_meanings`, e.g. AVB's `adversary_loss`
    and `adversary_max_logit`) are checked first, each batch, and named with
    their meaning: a non-finite adversary logit is the cause of the non-finite
    weights that follow it.
    Raising (rather than `stop_training`) keeps Keras from ending the epoch: a
    `TrainingCheckpoint`, `CSVLogger` or `ModelCheckpoint` listed after it writes
    nothing of the diverged epoch, so the last good checkpoint stays and resumes.
    `vizoo.runs.fit_run` (so `train.py`) adds it first by default.

    Args:
        check_weights: bool, also check the weights (one pass over them per
            training call; default True).

    Example:
        >>> model.fit(train_ds, epochs=10, callbacks=[vizoo.callbacks.StopOnNonFinite()])
        TrainingDiverged: training diverged at epoch 3, batch 7: the loss is nan after training step 27. Received: loss=nan
    """

    def __init__(self, check_weights=True):
        super().__init__()
        self.check_weights = bool(check_weights)
        self.diverged = None
        self._epoch = 0
        self._all_finite = None

    def on_train_begin(self, logs=None):
        self.diverged = None
        weights = [w for w in self.model.weights if "float" in str(w.dtype)]

        @tf.function
        def first_non_finite():
            flags = tf.stack([tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(w))) for w in weights])
            return tf.argmin(tf.cast(flags, tf.int32)), tf.reduce_all(flags)

        self._weights = weights
        self._all_finite = first_non_finite if weights else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _stop(self, batch, what, name, value, meaning=None):
        step = self._step()
        self.diverged = {
            "epoch": self._epoch + 1, "batch": batch, "step": step, "what": what, "name": name, "value": value
        }
        where = f"epoch {self._epoch + 1}" + (f", batch {batch}" if batch is not None else "")
        subject = f"the weight {name}" if what == "weight" else f"the {name}"
        if meaning:
            subject += f" ({meaning})"
        received = f"weight={name!r}" if what == "weight" else f"{name}={value}"
        after = f" after training step {step}" if step is not None else ""
        raise TrainingDiverged(
            f"training diverged at {where}: {subject} is {value}{after}. Received: {received}", self.diverged
        )

    def _step(self):
        # The main optimizer's iteration count: training steps applied so far (None before compile).
        optimizer = getattr(self.model, "optimizer", None)
        return int(optimizer.iterations) if optimizer is not None else None

    def _diagnostic_meanings(self):
        # The compiled loss's declared diagnostics (e.g. AVB's adversary loss), checked before the weights:
        # a non-finite adversary logit is the cause, non-finite weights its consequence.
        from vizoo.losses import BoundLoss

        loss = getattr(self.model, "loss", None)
        return dict(loss.diagnostic_meanings) if isinstance(loss, BoundLoss) else {}

    def _check_logs(self, logs, batch, names=None):
        diagnostics = self._diagnostic_meanings()
        for name, value in (logs or {}).items():
            if names is not None and name not in names:
                continue
            try:
                value = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                kind, meaning = _logged_kind(name, diagnostics)
                self._stop(batch, kind, name, _describe(value), meaning)

    def on_train_batch_end(self, batch, logs=None):
        for name, meaning in self._diagnostic_meanings().items():
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(float(np.asarray(value))):
                self._stop(batch + 1, "diagnostic", name, _describe(float(np.asarray(value))), meaning)
        if self.check_weights and self._all_finite is not None:
            index, finite = self._all_finite()
            if not bool(finite):
                weight = self._weights[int(index)]
                values = np.asarray(weight.numpy(), dtype=np.float64)
                bad = values[~np.isfinite(values)]
                self._stop(batch + 1, "weight", weight.path, _describe(float(bad.flat[0])))
        self._check_logs(logs, batch + 1, names=("loss",))

    def on_epoch_end(self, epoch, logs=None):
        self._check_logs(logs, None)


def _logged_kind(name, diagnostics):
    """`(diverged["what"], meaning)` of a logged value: "loss", "val_loss", "diagnostic" (the loss's declared
    ones, validation or not, with their meaning) or "metric" (any other logged value: a metric, a callback's
    entry); the meaning is None but for a diagnostic."""
    if name in ("loss", "val_loss"):
        return name, None
    base = name[len("val_"):] if name.startswith("val_") else name
    return ("diagnostic", diagnostics[base]) if base in diagnostics else ("metric", None)


class KLWarmup(keras.callbacks.Callback):
    """Linear KL warm-up: beta = min(1, epoch / epochs) at the start of each epoch.

    Sets the model's `kl_weight` (a non-trainable variable, saved with the
    model), which a loss built with `kl_warmup_epochs` reads as its `kl_weight`
    term: the training objective weights log p(z) - log q(z|x) by beta, while
    the reported loss stays the exact bound. Epoch 0 trains with beta = 0, epoch
    `epochs` and later with beta = 1. `fit` adds this callback by itself when
    the compiled loss has `kl_warmup_epochs > 0`; pass one explicitly to use
    another schedule length. The value is logged as `kl_weight` (history.csv).
    Resuming at epoch e (`TrainingCheckpoint`, `initial_epoch=e`) sets beta
    for epoch e, so the schedule continues.

    Args:
        epochs: int N >= 1, epochs over which beta rises from 0 to 1.

    Example:
        >>> model.compile(optimizer="adam", loss=vizoo.losses.ELBOLoss(kl_warmup_epochs=10))
        >>> model.fit(train_ds, epochs=100)  # beta = 0, 0.1, ..., 1, 1, ...

    Reference:
        Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016;
        Sønderby et al., "Ladder Variational Autoencoders", NeurIPS 2016.
    """

    def __init__(self, epochs):
        super().__init__()
        self.epochs = check_positive_int(epochs, "epochs")

    def kl_weight_at(self, epoch):
        """beta of epoch `epoch` (0-based)."""
        return min(1.0, epoch / self.epochs)

    def on_train_begin(self, logs=None):
        from vizoo.losses.bound_loss import BoundLoss

        loss = self.model.loss  # fit runs compiled
        if not isinstance(loss, BoundLoss) or "kl_weight" not in loss.required_terms:
            raise ValueError(
                "KLWarmup sets the model's kl_weight, which the compiled loss does not read: compile with "
                "ELBOLoss(kl_warmup_epochs=N) or IWAELoss(kl_warmup_epochs=N). "
                f"Received: loss={type(loss).__name__}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.kl_weight_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = float(self.model.kl_weight.numpy())

    def get_config(self):
        return {"epochs": self.epochs}
