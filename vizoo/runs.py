"""Training into a run directory: resumable, with the best model kept, safe to interrupt.

`fit_run(model, train_data, out_dir, epochs=...)` is what `train.py` uses; in a
run directory it keeps

    checkpoint/     the training state after the last finished epoch (TrainingCheckpoint);
                    removed by `finish_run` once the run's outputs are written
    history.csv     one row per epoch, continued (not restarted) by a resumed run
    best.keras      the model with the best validation loss so far (with validation data)
    model.keras     the model at the end of training (or at the interruption)
    tensorboard/    TensorBoard logs, when asked for

Calling it again on the same directory after a kill (SIGKILL, a lost machine)
continues after the last finished epoch, with the optimizer, noise and data
state of an uninterrupted run. Ctrl-C (KeyboardInterrupt) saves `model.keras`
with the current weights, keeps the checkpoint and raises `RunInterrupted`,
whose message says what was saved. A non-finite loss or weight stops training
(`vizoo.callbacks.StopOnNonFinite`, on by default) with `TrainingDiverged`
naming the epoch and batch: nothing of the diverged epoch is written (no
`model.keras` of NaN weights, no history row) and the checkpoint of the last
finished epoch stays, so the run can resume from it.
"""

import contextlib
import csv
import io
import math
import os
import time

import keras

from vizoo.callbacks import (
    KLWarmup, StopOnNonFinite, TrainingCheckpoint, TrainingDiverged, _write_text_atomically, remove_written,
)
from vizoo.utils import check_positive_int

CHECKPOINT_DIR = "checkpoint"


class RunInterrupted(Exception):
    """Training or evaluation was interrupted (Ctrl-C); the message says what was saved."""


def prepare_out_dir(out_dir):
    """Create `out_dir` if needed and check that files can be written there.

    Raises:
        ValueError: naming `out_dir` and the operating system's reason.
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"out_dir must be a directory path. Received: out_dir={out_dir!r}")
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"out_dir must be a writable directory ({reason}). Received: out_dir={str(out_dir)!r}") from None
    return out_dir


def _read_history(path):
    if not os.path.exists(path):
        return None, []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _continue_history(path, epoch):
    """Keep the rows of epochs before `epoch` (a row may precede a checkpoint that a kill prevented)."""
    fieldnames, rows = _read_history(path)
    if fieldnames is None:
        return []
    kept = [row for row in rows if row.get("epoch", "").isdigit() and int(row["epoch"]) < epoch]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(kept)
    _write_text_atomically(path, text.getvalue())  # (in place, a full disk or a kill mid-write would lose every row)
    return kept


def _best_so_far(rows, monitor="val_loss"):
    values = []
    for row in rows:
        try:
            values.append(float(row[monitor]))
        except (KeyError, TypeError, ValueError):
            pass
    values = [v for v in values if math.isfinite(v)]
    return min(values) if values else None


def _output_callbacks(history_path, best_path, tensorboard_dir, resumed_epoch, validation_data, stop_on_non_finite,
                      callbacks, writer=True):
    """The callbacks that write a run's outputs (fit_run's and train_run's), then the caller's.

    A fresh run (`resumed_epoch` None) removes `history.csv` and `best.keras` left by an earlier,
    finished run in the same directory when training begins (after the arguments and data are checked:
    a refused call leaves them); a resumed one continues the history, and `best.keras` keeps its
    threshold. `writer` False (a worker other than the chief) writes temporary copies and reads no
    history. A `KLWarmup` among `callbacks` goes first, so that the epoch's `kl_weight` reaches the history.
    """
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"callbacks must be a list of Keras callbacks. Received: callbacks={callbacks!r}")
    callbacks = list(callbacks or [])
    warmups = [callback for callback in callbacks if isinstance(callback, KLWarmup)]
    callbacks = warmups + [callback for callback in callbacks if not isinstance(callback, KLWarmup)]
    run_callbacks = []
    if resumed_epoch is None:
        rows = []
        if writer:
            run_callbacks.append(_RemoveStale([history_path, best_path]))
    else:
        rows = _continue_history(history_path, resumed_epoch) if writer else []
    if stop_on_non_finite:
        run_callbacks.append(StopOnNonFinite())  # before the writers: nothing of a diverged epoch is written
    run_callbacks.append(_HistoryLogger(history_path, append=resumed_epoch is not None))
    if validation_data is not None:
        run_callbacks.append(
            keras.callbacks.ModelCheckpoint(
                best_path, monitor="val_loss", mode="min", save_best_only=True, initial_value_threshold=_best_so_far(rows)
            )
        )
    if tensorboard_dir:
        run_callbacks.append(keras.callbacks.TensorBoard(log_dir=tensorboard_dir))
    return warmups + run_callbacks + callbacks[len(warmups):]


class _HistoryLogger(keras.callbacks.CSVLogger):
    """Keras's CSVLogger, with each epoch's row on disk (fsync) before the epoch's checkpoint commits.

    (Flushed only, a row could be lost to a power cut while the checkpoint that follows it survived: the
    resumed run would go on after that epoch with its row missing from history.csv.)
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        os.fsync(self.csv_file.fileno())


class _RemoveStale(keras.callbacks.Callback):
    """Removes an earlier, finished run's files that this run writes anew, once training begins."""

    def __init__(self, paths):
        super().__init__()
        self.paths = paths

    def on_train_begin(self, logs=None):
        for path in self.paths:
            if os.path.exists(path):
                os.remove(path)


def _close_history(run_callbacks):
    for callback in run_callbacks:
        if isinstance(callback, _HistoryLogger) and getattr(callback, "csv_file", None):
            callback.csv_file.close()


def _announce(model, verbose, resumed_epoch, epochs, kind, directory):
    """The lines a run prints before training: a loss whose value is an estimate, and where it resumes."""
    loss = getattr(model, "loss", None)
    if verbose and getattr(loss, "is_bound", True) is False:  # a vizoo loss whose value is an estimate
        print(
            f"note: the reported loss of {type(loss).__name__} is the negated {loss.value_name}, not a bound on "
            "log p(x): it may lie below -log p(x)."
        )
    if resumed_epoch is not None and verbose:
        print(f"Resuming from the {kind} in {directory}: {resumed_epoch} of {epochs} epochs done.")


@contextlib.contextmanager
def _run_stops(model, run_callbacks, saved_epoch, kind, directory, model_path):
    """What a stopped run says (fit_run's and train_run's): a divergence or Ctrl-C, with what is kept.

    `saved_epoch()` reads the finished epochs that the `kind` ("checkpoint", "backup") in `directory` holds. A
    divergence re-raises `TrainingDiverged` naming the kept epoch (the history file stays as it was
    after it; no model.keras of non-finite weights); Ctrl-C saves the current weights to
    `model_path` and raises `RunInterrupted`.
    """
    try:
        yield
    except TrainingDiverged as error:
        _close_history(run_callbacks)
        saved = saved_epoch()
        kept = f"the {kind} after epoch {saved} is kept in {directory}" if saved else "no epoch finished"
        detail, _, received = str(error).partition(". Received: ")
        raise TrainingDiverged(
            f"{detail}; {kept}. Received: {received}", {**error.diverged, "checkpoint_epoch": saved}
        ) from None
    except KeyboardInterrupt:
        _close_history(run_callbacks)
        saved = saved_epoch()
        model.save(model_path)
        done = f"the {kind} after epoch {saved} is in {directory}" if saved else "no epoch finished"
        again = "Run the same command again to resume." if saved else "Running the same command again starts it over."
        raise RunInterrupted(f"interrupted during training; {done}; the current weights are in {model_path}. {again}") from None
    finally:
        model._initial_epoch = None  # (set by a checkpoint's resume: a later plain fit starts at 0, as Keras's)


def _check_dataset(data, name):
    """A run trains on a `tf.data.Dataset`, which shuffles (and re-binarizes) itself in a seeded, resumable order."""
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            f"{name} must be a batched tf.data.Dataset (e.g. vizoo.data.load(...).train): a run resumes a dataset's "
            f"seeded order, and arrays would never be shuffled. Received: {name} of type {type(data).__name__}"
        )


def checkpoint_epoch(out_dir):
    """Finished epochs in the run directory's checkpoint, or None (ValueError if it is unreadable)."""
    return TrainingCheckpoint(os.path.join(out_dir, CHECKPOINT_DIR)).saved_epoch()


def fit_run(
    model,
    train_data,
    out_dir,
    epochs,
    validation_data=None,
    verbose=2,
    tensorboard=False,
    callbacks=None,
    stop_on_non_finite=True,
):
    """`model.fit` into a run directory: checkpointed every epoch, resumed when restarted.

    Args:
        model: a compiled vizoo model (built here if it is not).
        train_data: a `tf.data.Dataset` of training batches (a seeded pipeline
            that reshuffles or re-binarizes every epoch continues its sequence
            on resume).
        out_dir: str, the run directory (see the module docstring for its files).
        epochs: int, total epochs of the run (a resumed run trains the rest).
        validation_data: optional dataset; with it `best.keras` keeps the model
            of the lowest `val_loss` (the validation bound).
        verbose: Keras `fit` verbosity.
        tensorboard: bool, write TensorBoard logs to `out_dir/tensorboard`.
        callbacks: optional further Keras callbacks.
        stop_on_non_finite: bool, stop at the first non-finite loss or weight
            (`vizoo.callbacks.StopOnNonFinite`, run before every other callback).

    Returns:
        dict: `resumed_epoch` (None for a fresh run), `train_seconds` (this
        process's training time) and `history` (the `keras.callbacks.History`).

    Raises:
        RunInterrupted: on Ctrl-C, after saving `model.keras`; the checkpoint
            of the last finished epoch stays, so running again resumes.
        ValueError: the checkpoint cannot be restored (corrupt, or from
            another model).
        vizoo.callbacks.TrainingDiverged: (a ValueError) a non-finite loss or
            weight; its message names the epoch, batch and the checkpoint kept,
            its `diverged` dict says what diverged (with `checkpoint_epoch`).

    Example:
        >>> result = vizoo.runs.fit_run(model, splits.train, "runs/a", epochs=100, validation_data=splits.validation)
        >>> vizoo.runs.finish_run("runs/a")  # outputs written: the checkpoint is no longer needed
    """
    epochs = check_positive_int(epochs, "epochs")
    _check_dataset(train_data, "train_data")
    prepare_out_dir(out_dir)
    if not model.built and model.input_dim:
        model.build((None, model.input_dim))  # a checkpoint restores into built variables
    checkpoint = TrainingCheckpoint(os.path.join(out_dir, CHECKPOINT_DIR), train_data=train_data)
    resumed_epoch = checkpoint.saved_epoch()  # a corrupt checkpoint fails here, before any training
    if resumed_epoch is not None and resumed_epoch > epochs:
        raise ValueError(
            f"The checkpoint in {checkpoint.directory} is of a run after epoch {resumed_epoch}, beyond epochs={epochs}: "
            f"ask for at least {resumed_epoch} epochs to continue it, or call finish_run({str(out_dir)!r}) to start "
            f"over. Received: epochs={epochs}, out_dir={str(out_dir)!r}"
        )
    history_path = os.path.join(out_dir, "history.csv")
    best_path = os.path.join(out_dir, "best.keras")
    # Order: the epoch's row and best model are written before its checkpoint commits, so a kill in between
    # redoes that epoch (its row is dropped on resume) rather than losing it.
    run_callbacks = _output_callbacks(
        history_path, best_path, os.path.join(out_dir, "tensorboard") if tensorboard else None, resumed_epoch,
        validation_data, stop_on_non_finite, callbacks,
    )
    run_callbacks.append(checkpoint)

    _announce(model, verbose, resumed_epoch, epochs, "checkpoint", checkpoint.directory)
    start = time.perf_counter()
    model_path = os.path.join(out_dir, "model.keras")
    with _run_stops(model, run_callbacks, checkpoint.saved_epoch, "checkpoint", checkpoint.directory, model_path):
        history = model.fit(
            train_data,
            validation_data=validation_data,
            epochs=epochs,
            shuffle=False,  # a tf.data pipeline shuffles (and re-binarizes) every epoch itself
            verbose=verbose,
            callbacks=run_callbacks,
        )
    train_seconds = time.perf_counter() - start
    model.save(model_path)
    return {"resumed_epoch": resumed_epoch, "train_seconds": train_seconds, "history": history}


# The run directory's files that vizoo writes atomically, through a `tmp-<pid>-<name>` file beside them.
_ATOMIC_OUTPUTS = ("history.csv", "best.keras", "model.keras", "metrics.json", "config.json", "command.txt")


def finish_run(out_dir):
    """Remove the run directory's checkpoint (and `train_run`'s backup): the run is complete, a new one starts afresh.

    Also removes the temporary files of an atomic write that a kill interrupted (`tmp-<pid>-history.csv`, ...).
    """
    TrainingCheckpoint(os.path.join(out_dir, CHECKPOINT_DIR)).delete()
    from vizoo.distribute import delete_backup_files

    delete_backup_files(os.path.join(out_dir, BACKUP_DIR))
    # (The run directory itself stays, even if nothing else is in it: a restarted run writes there next.)
    remove_written(out_dir, [f"tmp-[0-9]*-{name}" for name in _ATOMIC_OUTPUTS], keep_directory=True)


BACKUP_DIR = "backup"


def train_run(
    model,
    train_data,
    out_dir,
    epochs,
    strategy=None,
    validation_data=None,
    verbose=2,
    tensorboard=False,
    callbacks=None,
    stop_on_non_finite=True,
    steps_per_execution=1,
    jit_compile=False,
):
    """`fit_run` with vizoo's own loop (`vizoo.distribute.train`): what `train.py --distribute multi_worker` uses.

    The run directory holds the same files as `fit_run`'s, written by the chief only (every other
    worker writes its copies to a temporary directory, removed at the end), and `backup/`: the
    training state after the last finished epoch (`tf.train.CheckpointManager`, read by every worker
    when it starts: on a shared filesystem when the workers are separate machines). A job whose
    workers were killed and restarted with the same command continues after the last finished
    epoch, `history.csv` continued. Arguments, result and stops (`TrainingDiverged` naming the backup
    kept, `RunInterrupted` on Ctrl-C after saving `model.keras`) as `fit_run`'s, plus `strategy`
    (default the current one), `steps_per_execution` and `jit_compile` (see `vizoo.distribute.train`).
    """
    from vizoo import distribute

    _check_dataset(train_data, "train_data")
    chief = distribute.is_chief(strategy)
    if chief:
        prepare_out_dir(out_dir)
    if not model.built and model.input_dim:
        model.build((None, model.input_dim))
    backup_dir = os.path.join(out_dir, BACKUP_DIR)
    history_path = distribute.worker_path(os.path.join(out_dir, "history.csv"), strategy)
    best_path = distribute.worker_path(os.path.join(out_dir, "best.keras"), strategy)
    model_path = distribute.worker_path(os.path.join(out_dir, "model.keras"), strategy)
    resumed_epoch = backup_epoch(out_dir)
    run_callbacks = _output_callbacks(
        history_path, best_path,
        distribute.worker_path(os.path.join(out_dir, "tensorboard"), strategy) if tensorboard else None,
        resumed_epoch, validation_data, stop_on_non_finite, callbacks, writer=chief,
    )
    _announce(model, verbose and chief, resumed_epoch, epochs, "backup", backup_dir)
    start = time.perf_counter()
    try:
        with _run_stops(model, run_callbacks, lambda: backup_epoch(out_dir), "backup", backup_dir, model_path):
            history = distribute.train(
                model,
                train_data,
                epochs,
                strategy=strategy,
                validation_data=validation_data,
                steps_per_execution=steps_per_execution,
                jit_compile=jit_compile,
                callbacks=run_callbacks,
                backup_dir=backup_dir,
                delete_backup=False,  # kept until the outputs are written (finish_run)
                verbose=1 if verbose else 0,
            )
        train_seconds = time.perf_counter() - start
        model.save(model_path)
    finally:
        _close_history(run_callbacks)  # a run stopped by an error leaves history.csv as it was
        distribute.remove_worker_paths()
    return {"resumed_epoch": resumed_epoch, "train_seconds": train_seconds, "history": history}


def backup_epoch(out_dir):
    """Finished epochs in the run directory's `backup/` (written by `train_run`), or None."""
    from vizoo.distribute import backup_epoch_in

    return backup_epoch_in(os.path.join(out_dir, BACKUP_DIR))
