"""Training on several devices or machines with `tf.distribute`: the strategies, and vizoo's own loop.

    strategy = vizoo.distribute.get_strategy("multi_worker")   # the workers of TF_CONFIG
    with strategy.scope():
        model = VAE(784, 50)
        model.compile(optimizer="adam", loss=IWAELoss(k=5))
    vizoo.distribute.train(model, splits.train, epochs=10, strategy=strategy)

Strategies (`get_strategy(name)`):

- `"mirrored"`: `tf.distribute.MirroredStrategy`, synchronous data parallelism over the local
  devices (all GPUs; on a machine without one, the CPU). `model.fit` works under it.
- `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy` over the workers named by the
  `TF_CONFIG` environment variable (or a `tf.distribute.cluster_resolver`, e.g.
  `slurm_cluster_resolver()` below), with bounded waits: a worker that cannot reach the others fails
  after `timeout_seconds` with a message naming their addresses, and a worker lost during
  training (its heartbeat missing for `timeout_seconds`) stops the others. Keras 3.15's `fit`
  and `evaluate` fail under this strategy for every model (keras-team/keras#20585, open: the
  per-replica reduction of scalar metrics), so train with `train` below.
- `"none"`: TensorFlow's default strategy (one device).

`train(model, train_data, epochs, ...)` is the training loop that does not go through `fit`:
each call of a `tf.function` runs `steps_per_execution` steps, each step being the model's own
`gradient_step` (the step `fit` runs: one tape, gradient groups, per-group optimizers and
surrogates) under `strategy.run`. Every worker iterates the same `train_data` pipeline (the
seeded reshuffling and dynamic binarization of `vizoo.data.load` give every worker the same
global batches, and the same batches `fit` sees); replica r of R takes the rows
`[B r / R, B (r + 1) / R)` of each global batch of B rows, weighted by `R b_r / B` (1 when R
divides B), so that the replicas' losses and gradients sum to the global batch mean exactly,
a last partial batch included. The reported `loss` is the bound in nats per example averaged
over the epoch's examples, as `fit` reports it on one device. Callbacks are Keras callbacks;
on a worker other than the chief, pass them paths from `worker_path` (TensorFlow's
multi-worker rule: every worker writes, the chief to the real path, the others to temporary
directories). `backup_dir` makes the run fault tolerant with the semantics of Keras's
`BackupAndRestore`: the training state (weights, every optimizer's state, the sampling-noise
state and the epoch count) is written there by the chief after every epoch (the other workers
write to temporary directories and delete them) and restored by every worker when `train`
starts, so a job whose workers were killed and restarted continues after its last finished
epoch, with the data order and noise of an uninterrupted run. Under TensorFlow's rules the
directory must be one that every worker can read (a shared filesystem when the workers are
separate machines).

Each replica draws the same base noise for its rows as the others do for theirs (Keras's
`SeedGenerator` state is one mirrored variable), as under `fit` with `"mirrored"`.
"""

import glob
import json
import os
import shutil
import tempfile
import time
import weakref

from vizoo.utils import check_bool, check_choice, check_positive_int, is_finite_real

STRATEGIES = ("none", "mirrored", "multi_worker")
# Default bound, in seconds, on every wait for another worker (registration, heartbeats, collectives).
DEFAULT_TIMEOUT_SECONDS = 60


def _cluster_addresses(resolver, own=True):
    """`["worker 1 at host:port", ...]` of the cluster spec (the other tasks' unless `own`)."""
    spec = resolver.cluster_spec().as_dict()
    rows = []
    for job, tasks in spec.items():
        items = tasks.items() if isinstance(tasks, dict) else enumerate(tasks)
        for index, address in items:
            if own or (job, int(index)) != (resolver.task_type, int(resolver.task_id or 0)):
                rows.append(f"{job} {index} at {address}")
    return rows


def get_strategy(name="none", cluster_resolver=None, timeout_seconds=DEFAULT_TIMEOUT_SECONDS):
    """The `tf.distribute.Strategy` called `name` (one of `STRATEGIES`).

    Args:
        name: `"none"`, `"mirrored"` or `"multi_worker"`.
        cluster_resolver: for `"multi_worker"`, a `tf.distribute.cluster_resolver.ClusterResolver`
            (e.g. `SlurmClusterResolver()`); default the `TF_CONFIG` environment variable's cluster.
        timeout_seconds: for `"multi_worker"`, the bound on waiting for the other workers: to
            register at start, between two heartbeats, and for each collective operation.

    Raises:
        ValueError: an unknown name, or a bad `timeout_seconds`.
        ConnectionError: `"multi_worker"` whose workers did not all register within
            `timeout_seconds`; the message names the cluster's addresses.
    """
    import tensorflow as tf

    check_choice(name, "distribute", STRATEGIES)
    if cluster_resolver is not None and name != "multi_worker":
        raise ValueError(
            f"cluster_resolver applies to the 'multi_worker' strategy only. Received: name={name!r}, "
            f"cluster_resolver={cluster_resolver!r}"
        )
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not (is_finite_real(timeout_seconds) and timeout_seconds > 0):
            raise ValueError(
                f"timeout_seconds must be a positive number. Received: timeout_seconds={timeout_seconds!r}"
            )
        return _multi_worker_strategy(cluster_resolver, timeout_seconds)
    return tf.distribute.get_strategy()


def _multi_worker_strategy(resolver, timeout_seconds):
    import tensorflow as tf
    from tensorflow.python.eager import context  # the one place TensorFlow takes the coordination timeouts

    resolver = resolver or tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec().as_dict()
    if spec and resolver.task_type is None:
        raise ValueError(
            "TF_CONFIG (or the cluster resolver) names a cluster but not this worker's task: set "
            '"task": {"type": "worker", "index": i}. '
            f"Received: TF_CONFIG={os.environ.get('TF_CONFIG', '')!r}"
        )
    milliseconds = max(1, int(timeout_seconds * 1000))  # (0 would read as TensorFlow's default)
    if spec and context.context()._context_handle is not None:  # noqa: SLF001 (TensorFlow has no public "started")
        raise RuntimeError(_STARTED)
    if spec and context.context().coordination_service is None:
        # What MultiWorkerMirroredStrategy configures by itself, with bounded waits instead of its defaults
        # (an hour to register; a lost worker's peers would otherwise wait in a collective for ever).
        from tensorflow.python.distribute import collective_all_reduce_strategy as strategy_module
        from tensorflow.python.distribute import multi_worker_util

        coordination_config_pb2 = strategy_module.coordination_config_pb2  # where this TensorFlow has it

        cluster = resolver.cluster_spec()
        context.context().configure_coordination_service(
            service_type="standalone",
            service_leader=multi_worker_util.coordination_leader(cluster),
            cluster_register_timeout_in_ms=milliseconds,
            heartbeat_timeout_in_ms=milliseconds,
            shutdown_barrier_timeout_in_ms=milliseconds,
            coordinated_jobs=[
                coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
                for job in ("chief", "worker")
                if job in cluster.jobs
            ],
        )
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    except RuntimeError as error:
        if "program startup" in str(error):
            raise RuntimeError(_STARTED) from None
        raise
    except tf.errors.OpError as error:
        others = ", ".join(_cluster_addresses(resolver, own=False)) or "none"
        reason = _reason(error)
        raise ConnectionError(
            f"this worker ({resolver.task_type} {resolver.task_id}) could not reach the other workers within "
            f"{timeout_seconds:g} s; the others: {others} ({reason}). Start every worker of the cluster "
            f"(TF_CONFIG), or check that these addresses are reachable. Received: timeout_seconds={timeout_seconds}"
        ) from None


_SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")


def slurm_cluster_resolver(port_base=12345):
    """A cluster resolver of this Slurm job step: one worker per Slurm task (`srun`), task 0 the chief.

    Task i runs at its node's hostname and port `port_base` plus its index on the node, the nodes in
    the job step's node-list order: Slurm's default (block) distribution, which gives ranks 0..n-1 to
    the first node, the next ranks to the next. (TensorFlow's `SlurmClusterResolver` sorts the nodes
    by name, so that node10 comes before node9 and rank 0 is given another node's address.) A
    process whose rank lands on another node than its own (`SLURMD_NODENAME`), as under
    `--distribution=cyclic`, is refused.
    The cluster is written to this process's `TF_CONFIG` and a `TFConfigClusterResolver` of it is
    returned: unlike TensorFlow's Slurm resolver (which counts GPUs with `nvidia-smi`, fails
    without them and sets `CUDA_VISIBLE_DEVICES` itself), it works on CPU-only nodes and leaves
    the devices as Slurm assigned them.

    Raises:
        ValueError: not inside a Slurm job step (a `SLURM_*` variable missing), or a bad `port_base`.
    """
    import tensorflow as tf
    from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as slurm  # hostlist syntax

    if isinstance(port_base, bool) or not isinstance(port_base, int) or not 0 < port_base < 65536:
        raise ValueError(f"port_base must be a port number. Received: port_base={port_base!r}")
    missing = [name for name in _SLURM_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"the Slurm cluster cannot be read from the environment (no {', '.join(missing)}): run under srun, "
            "one task per worker. Received: cluster='slurm'"
        )
    hosts = slurm.expand_hostlist(os.environ["SLURM_STEP_NODELIST"])
    tasks = slurm.expand_tasks_per_node(os.environ["SLURM_STEP_TASKS_PER_NODE"])
    if port_base + max(tasks) - 1 > 65535:
        raise ValueError(
            f"port_base plus the tasks on one node ({max(tasks)}) goes beyond port 65535. Received: port_base={port_base}"
        )
    addresses = [f"{host}:{port_base + i}" for host, count in zip(hosts, tasks) for i in range(count)]
    rank = int(os.environ["SLURM_PROCID"])
    if len(addresses) != int(os.environ["SLURM_STEP_NUM_TASKS"]) or not 0 <= rank < len(addresses):
        raise ValueError(
            f"the Slurm variables disagree: {len(addresses)} tasks on the nodes, SLURM_STEP_NUM_TASKS="
            f"{os.environ['SLURM_STEP_NUM_TASKS']}, SLURM_PROCID={rank}. Received: cluster='slurm'"
        )
    own = os.environ.get("SLURMD_NODENAME")
    if own is not None and addresses[rank].rsplit(":", 1)[0] != own:
        raise ValueError(
            f"task {rank} runs on {own}, but the block distribution of the node list puts it on "
            f"{addresses[rank].rsplit(':', 1)[0]}: run with srun's default --distribution=block. "
            f"Received: SLURM_PROCID={rank}, SLURMD_NODENAME={own!r}, SLURM_STEP_NODELIST="
            f"{os.environ['SLURM_STEP_NODELIST']!r}"
        )
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}})
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


_STARTED = (
    "get_strategy('multi_worker') must be called before TensorFlow runs any operation (build no model, create "
    "no tensor before it): MultiWorkerMirroredStrategy configures the collective operations at program start."
)


def is_chief(strategy=None):
    """True on the worker that writes the run's files: the chief, else worker 0, else (one process) always.

    Args:
        strategy: a `tf.distribute.Strategy`, or a cluster resolver (e.g.
            `TFConfigClusterResolver()`, to know before the strategy exists); default the current strategy.
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    resolver = strategy if hasattr(strategy, "cluster_spec") else getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    jobs = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    return "chief" not in jobs and resolver.task_type == "worker" and int(resolver.task_id) == 0


def worker_path(path, strategy=None):
    """`path` on the chief; on another worker, the same name in a temporary directory of its own.

    TensorFlow's multi-worker rule for saving: every worker runs the same saving code (it may
    take part in collectives), but only the chief writes where the run's outputs go. Remove the
    temporary directories with `remove_worker_paths` when done.
    """
    if is_chief(strategy):
        return path
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    resolver = strategy.cluster_resolver
    parent = tempfile.mkdtemp(prefix=f"vizoo-{resolver.task_type}-{resolver.task_id}-")
    _TEMPORARY_DIRS.append(parent)
    return os.path.join(parent, os.path.basename(os.path.normpath(str(path))))


_TEMPORARY_DIRS = []


def remove_worker_paths():
    """Delete the temporary directories `worker_path` made in this process."""
    while _TEMPORARY_DIRS:
        shutil.rmtree(_TEMPORARY_DIRS.pop(), ignore_errors=True)


# ------------------------------------------------------------------------------------------ the loop
def _replica_share(x):
    """This replica's rows of the global batch x `[B, ...]`, and their weights `[b_r]` (None with one replica).

    Replica r of R takes rows [floor(B r / R), floor(B (r + 1) / R)); each row weighs R b_r / B, so
    that a loss that averages its b_r rows and divides by R (the Keras convention) gives the replica's
    share of the global mean, sum_{rows of r} l_i / B, whatever the split.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    if replicas == 1:
        return x, None
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    size = tf.shape(x)[0]
    check = tf.debugging.assert_greater_equal(
        size,
        replicas,
        message=f"every global batch {_ROWS_CHECK} ({replicas} replicas): batch the "
        "training data with drop_remainder=True, or use fewer workers",
    )
    with tf.control_dependencies([check]):
        start, stop = size * replica // replicas, size * (replica + 1) // replicas
    rows = x[start:stop]
    weight = tf.cast(replicas * (stop - start), tf.float32) / tf.cast(size, tf.float32)
    return rows, tf.fill([stop - start], weight)


def _check_batches(dataset, name):
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"{name} must be a batched tf.data.Dataset of x (e.g. vizoo.data.load's). Received: {name}={dataset!r}"
        )
    spec = dataset.element_spec
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 2:
        raise ValueError(
            f"{name} must yield batches of x alone, shaped [batch, features] (no labels, no weights). "
            f"Received: element_spec={spec}"
        )
    batches = int(dataset.cardinality())
    if batches <= 0:
        raise ValueError(
            f"{name} must have a known, finite number of batches per epoch (vizoo.data.load's pipelines do). "
            f"Received: cardinality={batches}"
        )
    return batches


def _check_rows_per_replica(dataset, name, replicas):
    """Every batch of `dataset` has at least one row per replica (read before evaluating: found in the step, it
    would stop with TensorFlow's own error). Not for training data: reading it moves its random pipeline on."""
    import tensorflow as tf

    sizes = dataset.map(lambda x: tf.shape(x)[0])
    smallest = min(int(size) for size in sizes)
    if smallest < replicas:
        raise _too_few_rows(name, replicas, smallest)


def _static_rows(dataset):
    """The batch size of every batch of `dataset` where its spec fixes it (drop_remainder=True), else None."""
    spec = dataset.element_spec
    shape = getattr(spec, "shape", None)
    return None if shape is None or shape.rank is None or shape.rank == 0 or shape[0] is None else int(shape[0])


# The in-step check's message (`_replica_share`), recognised in TensorFlow's error to raise `_too_few_rows`.
_ROWS_CHECK = "needs at least one example per replica"


def _too_few_rows(name, replicas, found=None, where=""):
    """The ValueError for a batch of `found` rows (None: fewer than `replicas`, found in a training step at `where`)."""
    remedy = (
        "batch it with drop_remainder=True, or use fewer workers" if name == "train_data"
        else "choose a batch size whose last batch holds as many examples (a validation set should drop none)"
    )
    rows = f"{found}" if found is not None else f"fewer than {replicas}"
    return ValueError(
        f"every batch of {name} needs at least one example per replica ({replicas} replicas), but one has "
        f"{rows}{where}: {remedy}. Received: {name} with a batch of {rows} rows"
    )


class _Steps:
    """The compiled training and evaluation calls of one model under one strategy."""

    def __init__(self, model, strategy, steps_per_execution, jit_compile):
        # A weak reference: these functions live in _COMPILED under the model, and must not keep it alive.
        self._model_ref = weakref.ref(model)
        self.strategy = strategy
        self.steps_per_execution = steps_per_execution
        self.jit_compile = jit_compile
        self._train = {}
        self._test = {}

    @property
    def model(self):
        return self._model_ref()

    def _replica_train(self, batches):
        # In a replica: the model's own step on this replica's rows of each global batch.
        import tensorflow as tf

        total = 0.0
        for x in batches:
            rows, weight = _replica_share(x)
            _, loss = self.model.gradient_step(rows, sample_weight=weight)
            total += tf.cast(loss, tf.float32) * _rows(x)  # this replica's part of the batch's summed bound
        return total

    def train_function(self, steps):
        """A `tf.function` that pulls `steps` global batches from an iterator and trains on them."""
        import tensorflow as tf

        if steps not in self._train:
            replica_fn = tf.function(self._replica_train, jit_compile=True) if self.jit_compile else self._replica_train
            strategy = self.strategy

            @tf.function
            def train(iterator):
                batches = [next(iterator) for _ in range(steps)]  # unrolled: one program for the N steps
                totals = strategy.run(replica_fn, args=(batches,))
                examples = tf.add_n([_rows(x) for x in batches])
                return strategy.reduce(tf.distribute.ReduceOp.SUM, totals, axis=None), examples

            self._train[steps] = train
        return self._train[steps]

    def test_function(self, spec):
        """A `tf.function` of the summed loss of one global batch of `spec` (any batch size: traced once)."""
        import tensorflow as tf

        spec = tf.TensorSpec([None] + spec.shape.as_list()[1:], spec.dtype)
        if self._test.get(spec) is None:
            strategy = self.strategy

            def replica_test(x):
                rows, weight = _replica_share(x)
                model = self.model
                terms = model(rows, training=False)
                loss = model.compute_loss(x=rows, y_pred=terms, sample_weight=weight, training=False)
                return tf.cast(loss, tf.float32) * _rows(x)

            @tf.function(input_signature=[spec])
            def test(x):
                total = strategy.run(replica_test, args=(x,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None), _rows(x)

            self._test[spec] = test
        return self._test[spec]


def _rows(x):
    import tensorflow as tf

    return tf.cast(tf.shape(x)[0], tf.float32)


def evaluate(model, data, strategy=None):
    """The compiled bound's loss per example over `data`, computed under `strategy` (what `val_loss` is).

    The per-example bound is averaged over every example of `data` (a batched `tf.data.Dataset`
    of x): the global-batch reduction of `train`, so one number whatever the number of replicas.
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    _check_batches(data, "data")
    if strategy.num_replicas_in_sync > 1:
        _check_rows_per_replica(data, "data", strategy.num_replicas_in_sync)
    return _evaluate(_compiled_steps(model, strategy, 1, False), data)


_COMPILED = weakref.WeakKeyDictionary()  # {model: {(strategy id, steps, jit): _Steps}}: traced once per model


def _compiled_steps(model, strategy, steps_per_execution, jit_compile):
    """The model's `_Steps` (a later `train` or `evaluate` call reuses its traced functions)."""
    cache = _COMPILED.setdefault(model, {})
    # A new compile (loss, optimizers) needs new functions, as Keras retraces its own after compile.
    compiled = (model.loss, model.optimizer, *model.group_optimizers.values())
    key = (id(strategy), steps_per_execution, bool(jit_compile), *map(id, compiled))
    if key not in cache:
        cache[key] = _Steps(model, strategy, steps_per_execution, jit_compile)
        cache[key].compiled = compiled  # kept alive with the functions: their ids stay theirs
    return cache[key]


def _evaluate(steps, data):
    test = steps.test_function(data.element_spec)
    total, count = 0.0, 0.0
    for x in data:
        value, rows = test(x)
        total += float(value)
        count += float(rows)
    return total / count


def _iterators_per_epoch(dataset):
    from vizoo.callbacks import _iterators_per_epoch as per_epoch

    return per_epoch(dataset)


class _Backup:
    """BackupAndRestore for the loop: a `tf.train.CheckpointManager` of the whole training state."""

    def __init__(self, model, directory, strategy):
        import tensorflow as tf

        self.directory = str(directory)
        self.model = model
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="finished_epochs")
        optimizers = [model.optimizer] + list(model.group_optimizers.values())
        # By position: the same model and optimizers built the same way list their variables in one order.
        state = {f"model_{i}": v.value for i, v in enumerate(model.variables)}  # seed states and kl_weight too
        for j, optimizer in enumerate(optimizers):
            state.update({f"optimizer{j}_{i}": v.value for i, v in enumerate(optimizer.variables)})
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, **state)
        self.write_dir = worker_path(self.directory, strategy)
        self.chief = self.write_dir == self.directory
        # Named vizoo's own (not TensorFlow's default "ckpt"): finishing a run removes these files and no others.
        self.read_manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=1, checkpoint_name=BACKUP_NAME
        )
        if self.chief:
            self.write_manager = self.read_manager
        else:
            self.write_manager = tf.train.CheckpointManager(
                self.checkpoint, self.write_dir, max_to_keep=1, checkpoint_name=BACKUP_NAME
            )

    def restore(self):
        """Restore the latest backup, if any; return the finished epochs (0 without one)."""
        import tensorflow as tf

        latest = self.read_manager.latest_checkpoint
        if latest is None:
            backup_epoch_in(self.directory)  # a damaged state file is an error, not a fresh start
            return 0
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, IndexError, tf.errors.OpError) as error:  # another model's, or damaged
            raise ValueError(
                f"The backup in {self.directory} cannot be restored into this model ({str(error).splitlines()[0]}). "
                f"Delete that directory to start the run over. Received: backup_dir={self.directory!r}"
            ) from None
        return int(self.epoch.numpy())

    def save(self, epochs_done):
        """Write the backup after `epochs_done` epochs; too little free space or a write error is a
        `vizoo.callbacks.CheckpointWriteError` naming the directory, and the last backup stays."""
        import tensorflow as tf

        from vizoo.callbacks import _bytes_needed, _free_bytes, _write_reason

        try:
            os.makedirs(self.write_dir, exist_ok=True)
        except OSError as error:
            raise self._write_error(epochs_done, error.strerror or str(error)) from None
        latest = self.write_manager.latest_checkpoint
        needed = _bytes_needed(sum(os.path.getsize(path) for path in glob.glob(f"{latest}.*")) if latest else None, self.model)
        free = _free_bytes(self.write_dir)
        if free is not None and free < needed:
            raise self._write_error(epochs_done, f"about {needed / 2**20:.1f} MiB needed")
        self.epoch.assign(epochs_done)
        try:
            self.write_manager.save(checkpoint_number=epochs_done)
        except (OSError, tf.errors.OpError) as error:  # (the manager's state file still names the last backup)
            raise self._write_error(epochs_done, _write_reason(error)) from None
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)

    def delete(self):
        """Remove the backup (the chief's; the other workers' copies are removed as they are written)."""
        if self.chief:
            delete_backup_files(self.directory)

    def _write_error(self, epochs_done, reason):
        from vizoo.callbacks import _checkpoint_write_error

        saved = backup_epoch_in(self.directory)
        kept = f"the backup after epoch {saved} is kept" if saved else "no backup was written before"
        return _checkpoint_write_error(f"the backup of epoch {epochs_done}", self.directory, reason, kept, "backup_dir",
                                      free_in=self.write_dir)


# The file prefix of the loop's backups (`<BACKUP_NAME>-<epochs>.index` and `.data-*`).
BACKUP_NAME = "vizoo-backup"


def _is_vizoo_backup(path):
    return os.path.basename(path).startswith(BACKUP_NAME + "-")


def delete_backup_files(directory):
    """Remove the files of vizoo's backup in `directory` (its `vizoo-backup-*` files, and the manager's state
    file `checkpoint` when it names vizoo's backup), then the directory if nothing else is in it. A
    TensorFlow checkpoint of the user's own there (its default `ckpt-*` names) stays."""
    from vizoo.callbacks import remove_written

    try:
        with open(os.path.join(directory, "checkpoint"), errors="replace") as f:
            ours = f'"{BACKUP_NAME}-' in f.read()  # (a text proto: model_checkpoint_path: "vizoo-backup-3")
    except OSError:
        ours = False
    remove_written(directory, (["checkpoint"] if ours else []) + [BACKUP_NAME + "-*"])


def backup_epoch_in(directory):
    """Finished epochs of vizoo's latest backup in `directory` (a `tf.train.CheckpointManager`'s), or None
    (also when the directory holds another program's TensorFlow checkpoint)."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(directory)
    if latest is None and os.path.exists(os.path.join(str(directory), "checkpoint")):
        # A state file that names no backup: damaged. Starting over would discard the run's files.
        raise ValueError(
            f"The backup in {directory} is damaged: its state file 'checkpoint' names no backup. Delete that "
            f"directory to start the run over. Received: backup_dir={str(directory)!r}"
        )
    return None if latest is None or not _is_vizoo_backup(latest) else int(latest.rsplit("-", 1)[-1])


def train(
    model,
    train_data,
    epochs,
    strategy=None,
    validation_data=None,
    steps_per_execution=1,
    jit_compile=False,
    callbacks=None,
    backup_dir=None,
    delete_backup=True,
    verbose=1,
):
    """Train `model` with vizoo's own loop under `strategy` (default: the current one); return the History.

    Args:
        model: a vizoo model compiled (and built, with its optimizers) under `strategy.scope()`.
        train_data: a batched `tf.data.Dataset` of x with a known number of batches (e.g.
            `vizoo.data.load(...).train`), the same pipeline on every worker: its batches are the
            global batches, each split across the replicas.
        epochs: int, total epochs (a run restored from `backup_dir` trains the rest).
        strategy: a `tf.distribute.Strategy`; default `tf.distribute.get_strategy()`.
        validation_data: optional batched dataset of x; its bound is logged as `val_loss`.
        steps_per_execution: int, training steps per compiled call (the last call of an epoch
            takes the rest).
        jit_compile: bool, compile the `steps_per_execution` steps as one XLA program (one replica only:
            refused with several).
        callbacks: optional Keras callbacks (given `on_epoch_*`, `on_train_batch_end` after each
            call, `on_train_*`); `vizoo.callbacks.KLWarmup` is added when the compiled loss warms up.
        backup_dir: optional directory of the fault-tolerance backup (see the module docstring).
        delete_backup: bool, remove the backup when training ends without an error (as Keras's
            `BackupAndRestore(delete_checkpoint=True)`), so that the next call starts afresh; False keeps it
            (`vizoo.runs.train_run` removes it once the run's outputs are written).
        verbose: 0 (silent) or 1 (one line per epoch, from the chief).

    Returns:
        `keras.callbacks.History` of this call's epochs (`loss`, `val_loss`, ...).

    Raises:
        vizoo.callbacks.TrainingDiverged: from a `StopOnNonFinite` callback.
        ConnectionError: a worker was lost or unreachable during training (restart the workers:
            with `backup_dir` they resume after the last finished epoch).
    """
    import keras
    import tensorflow as tf

    from vizoo.callbacks import KLWarmup
    from vizoo.losses.bound_loss import BoundLoss

    strategy = strategy or tf.distribute.get_strategy()
    epochs = check_positive_int(epochs, "epochs")
    steps_per_execution = check_positive_int(steps_per_execution, "steps_per_execution")
    batches = _check_batches(train_data, "train_data")
    if validation_data is not None:
        _check_batches(validation_data, "validation_data")
    loss = getattr(model, "loss", None)
    if not isinstance(loss, BoundLoss):
        raise ValueError(
            f"train needs a model compiled with a vizoo bound, e.g. model.compile(optimizer='adam', "
            f"loss=IWAELoss(k=5)), under strategy.scope(). Received: loss={loss!r}"
        )
    if loss.reduction not in ("sum_over_batch_size", "mean"):
        raise ValueError(
            "The loop reports the bound per example and, across replicas, weights each replica's rows so that "
            "per-example means add up to the global batch mean: the loss must reduce by the mean over the batch. "
            f"Received: reduction={loss.reduction!r}"
        )
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"callbacks must be a list of Keras callbacks. Received: callbacks={callbacks!r}")
    if strategy.num_replicas_in_sync > 1:
        # train_data is not read ahead: a pipeline that reshuffles or re-binarizes on every pass would give each
        # epoch the next one's order (not fit's). Its batches' size is checked where static, else in the step.
        rows = _static_rows(train_data)
        if rows is not None and rows < strategy.num_replicas_in_sync:
            raise _too_few_rows("train_data", strategy.num_replicas_in_sync, rows)
        if validation_data is not None:
            _check_rows_per_replica(validation_data, "validation_data", strategy.num_replicas_in_sync)
        if jit_compile:
            raise ValueError(
                "jit_compile compiles the steps of one replica: with several replicas TensorFlow's XLA cannot "
                "reach the other replicas' variables (checked with two CPU replicas; several GPUs are not "
                f"tested). Train without it. Received: jit_compile=True, replicas={strategy.num_replicas_in_sync}"
            )
    if not model.built:
        with strategy.scope():
            model.build((None, model.input_dim))
    model.build_optimizers()  # slots exist before the step is traced (and before a backup restores into them)

    callbacks = list(callbacks or [])
    if loss.kl_warmup_epochs and not any(isinstance(c, KLWarmup) for c in callbacks):
        callbacks.insert(0, KLWarmup(loss.kl_warmup_epochs))
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(callbacks + [history], model=model)
    callback_list.set_params({"epochs": epochs, "steps": batches, "verbose": 0})

    delete_backup = check_bool(delete_backup, "delete_backup")
    backup = _Backup(model, backup_dir, strategy) if backup_dir is not None else None
    initial_epoch = backup.restore() if backup is not None else 0
    if initial_epoch > epochs:
        raise ValueError(
            f"The backup in {backup_dir} is of a run after epoch {initial_epoch}, beyond this call's epochs={epochs}: "
            f"ask for at least {initial_epoch} epochs to continue it, or delete that directory to start over. "
            f"Received: epochs={epochs}, backup_dir={backup_dir!r}"
        )
    for _ in range(initial_epoch * _iterators_per_epoch(train_data)):
        iter(train_data)  # the data order of the finished epochs, as fit's iterators drew it
    steps = _compiled_steps(model, strategy, steps_per_execution, jit_compile)
    chief = is_chief(strategy)
    model.stop_training = False
    callback_list.on_train_begin()
    try:
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            start = time.perf_counter()
            iterator = iter(train_data)
            total, count, done = 0.0, 0.0, 0
            while done < batches:
                n = min(steps_per_execution, batches - done)
                try:
                    value, rows = steps.train_function(n)(iterator)
                except tf.errors.InvalidArgumentError as error:
                    if _ROWS_CHECK not in str(error):
                        raise
                    raise _too_few_rows(
                        "train_data", strategy.num_replicas_in_sync,
                        where=f" (epoch {epoch + 1}, batches {done + 1}-{done + n}; the last finished epoch's backup stays)",
                    ) from None
                total, count, done = total + float(value), count + float(rows), done + n
                callback_list.on_train_batch_end(done - 1, {"loss": total / count})
            for _ in range(_iterators_per_epoch(train_data) - 1):
                iter(train_data)  # fit's unused end-of-epoch iterator: the next epoch draws what fit's would
            logs = {"loss": total / count}
            if validation_data is not None:
                logs["val_loss"] = _evaluate(steps, validation_data)
            callback_list.on_epoch_end(epoch, logs)
            if backup is not None:
                backup.save(epoch + 1)
            if verbose and chief:
                print(
                    f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.1f}s - "
                    + " - ".join(f"{key}: {value:.4f}" for key, value in logs.items()),
                    flush=True,
                )
            if model.stop_training:
                break
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError, tf.errors.InternalError) as error:
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is None or resolver.task_type is None:
            raise  # one process: not a lost worker
        raise _lost_worker(error, strategy, backup) from None
    callback_list.on_train_end()
    if backup is not None and delete_backup:
        backup.delete()
    return history


_REASON_WORDS = ("heartbeat", "abort", "unavailable", "timed out", "timeout", "deadline", "connect", "socket", "peer")


def _reason(error):
    """The informative line of a TensorFlow error (its first lines are often "Graph execution error:")."""
    lines = [line.strip() for line in (getattr(error, "message", None) or str(error)).splitlines()]
    skipped = ("Graph execution error", "Detected at node", "File ")
    lines = [line for line in lines if line and not line.startswith(skipped)]
    informative = [line for line in lines if any(word in line.lower() for word in _REASON_WORDS)]
    chosen = informative[0] if informative else (lines[-1] if lines else "")
    return chosen if len(chosen) <= 300 else chosen[:297] + "..."


def _lost_worker(error, strategy, backup):
    resolver = getattr(strategy, "cluster_resolver", None)
    others = ", ".join(_cluster_addresses(resolver, own=False)) if resolver is not None and resolver.task_type else ""
    reason = _reason(error)
    resume = (
        f"restart every worker to resume from the backup in {backup.directory}"
        if backup is not None
        else "restart every worker (with a backup_dir the run would resume)"
    )
    return ConnectionError(
        f"training stopped: a worker was lost or unreachable (the others: {others or 'none'}); {resume}. "
        f"Received: {type(error).__name__}: {reason}"
    )
