"""tf.distribute: the bounds reduce to the global batch mean across replicas; vizoo's own loop equals fit.

Several workers: tests/test_multi_worker.py.

The reference is pPCA with q equal to the exact posterior: every log-weight equals log p(x)
whatever the noise, so the loss of a batch is known exactly and cannot depend on how the
replicas draw their samples. The two devices are logical CPUs, configured before TensorFlow
starts (so in a fresh process).
"""

import json

import numpy as np
import pytest

from tests.helpers import run_in_fresh_process

SETUP = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tests import ppca
from vizoo.losses import IWAELoss

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
weights, bias = ppca.ppca_parameters()
x = ppca.sample_data(64, weights, bias)
exact = float(-np.mean(ppca.exact_log_px(x, weights, bias)))
single = ppca.ppca_vae(weights, bias)
single.compile(optimizer="sgd", loss=IWAELoss(k=5))
single_loss = single.evaluate(x, batch_size=32, verbose=0)
with strategy.scope():
    model = ppca.ppca_vae(weights, bias)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=IWAELoss(k=5, gradient_estimator="dreg"))
loss = model.evaluate(x, batch_size=32, verbose=0)
history = model.fit(x, batch_size=32, epochs=2, verbose=0).history["loss"]

# add_loss terms (an L2 penalty) count once across replicas, as on one device.
penalized = {}
for name, penalty_strategy in (("one", tf.distribute.get_strategy()), ("two", strategy)):
    with penalty_strategy.scope():
        penalized_model = ppca.ppca_vae(weights, bias)
        penalized_model.likelihood.loc_layer.kernel.regularizer = keras.regularizers.L2(0.5)
        penalized_model.compile(optimizer="sgd", loss=IWAELoss(k=5))
    penalized[name] = {"loss": penalized_model.evaluate(x, batch_size=32, verbose=0),
                       "penalty": float(sum(penalized_model.losses))}

# vizoo's fused Adam under the strategy: replica r's gradient is (r + 1) g, all-reduced to 3 g.
import vizoo.optimizers
with strategy.scope():
    variable = keras.Variable(np.linspace(-1.0, 1.0, 6).reshape(2, 3))
    optimizer = vizoo.optimizers.Adam(0.01)
    optimizer.build([variable])

@tf.function
def adam_step():
    def replica_step():
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group + 1, tf.float64)
        optimizer.apply([tf.reshape(tf.range(6, dtype=tf.float64) - 2.5, (2, 3)) * replica], [variable])
    strategy.run(replica_step)

for _ in range(3):
    adam_step()
replica_values = [v.numpy().tolist() for v in variable.value.values]
result = {"replicas": strategy.num_replicas_in_sync, "exact": exact, "single": single_loss,
          "distributed": loss, "history": history, "adam": replica_values, "penalized": penalized}

# The loop under two replicas draws the data order fit would: it reads no pass of a reshuffling pipeline ahead.
from vizoo.distribute import _iterators_per_epoch, train
looped, untouched = (tf.data.Dataset.from_tensor_slices(x).shuffle(64, seed=1).batch(32) for _ in range(2))
with strategy.scope():
    loop_model = ppca.ppca_vae(weights, bias)
    loop_model.compile(optimizer="sgd", loss=IWAELoss(k=2))
train(loop_model, looped, 1, strategy=strategy, verbose=0)
for _ in range(_iterators_per_epoch(untouched)):
    iter(untouched)  # one epoch's iterators, as fit draws them
result["loop_data_order"] = bool(np.array_equal(next(iter(looped)).numpy(), next(iter(untouched)).numpy()))

# Group optimizers: each optimizer all-reduces its own group's gradients; the frozen group stays put.
from vizoo.losses import NVILLoss
from vizoo.models import SigmoidBeliefNetwork

x = (np.random.default_rng(0).random((64, 16)) < 0.5).astype("float32")
result["groups"] = {}
for name, groups_strategy in (("one", tf.distribute.get_strategy()), ("two", strategy)):
    with groups_strategy.scope():
        sbn = SigmoidBeliefNetwork(input_dim=16, latent_dims=[3], baseline_hidden_units=[3], seed=0)
        sbn.build((None, 16))
        sbn.compile(optimizer=keras.optimizers.SGD(0.0), loss=NVILLoss(k=2),
                    group_optimizers={"control": keras.optimizers.Adam(0.01)})
    before = [v.numpy().copy() for v in sbn.trainable_variables]
    sbn_loss = sbn.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    control = {id(v) for v in sbn.gradient_groups()["control"]}
    moved = {"control": [], "others": []}
    for b, v in zip(before, sbn.trainable_variables):
        moved["control" if id(v) in control else "others"].append(bool(not np.array_equal(b, v.numpy())))
    # The main optimizer holds state for the variables no group optimizer owns, and only those.
    position = {id(v): i for i, v in enumerate(sbn.trainable_variables)}
    main_built_on = sorted(position[id(v)] for v in sbn.optimizer._trainable_variables)
    main_expected = sorted(i for i, v in enumerate(sbn.trainable_variables) if id(v) not in control)
    result["groups"][name] = {"loss": sbn_loss, "moved": moved, "replicas": groups_strategy.num_replicas_in_sync,
                              "iterations": int(keras.ops.convert_to_numpy(sbn.group_optimizers["control"].iterations)),
                              "main_built_on": main_built_on, "main_expected": main_expected}
print(json.dumps(result))
"""

def check(result, replicas):
    assert result["replicas"] == replicas
    assert result["loop_data_order"]
    assert abs(result["single"] - result["exact"]) < 1e-5
    assert abs(result["distributed"] - result["single"]) < 1e-5
    assert all(abs(value - result["exact"]) < 1e-3 for value in result["history"])  # trains, still at the optimum
    from tests.test_optimizers import adam_reference

    gradient = 3 * (np.arange(6.0) - 2.5).reshape(2, 3)
    expected = adam_reference(np.linspace(-1.0, 1.0, 6).reshape(2, 3), [gradient] * 3, lr=0.01)
    for replica in result["adam"]:  # the same update on every replica
        np.testing.assert_allclose(np.array(replica), expected, rtol=0, atol=1e-12)
    for penalized in result["penalized"].values():  # the bound plus the penalty once, whatever the replicas
        assert penalized["penalty"] > 1.0
        assert abs(penalized["loss"] - (result["exact"] + penalized["penalty"])) < 1e-4 * penalized["penalty"] + 1e-4


@pytest.fixture(scope="module")
def two_replicas():
    """What SETUP measures in a fresh interpreter with two logical CPUs (one for the tests below)."""
    return json.loads(run_in_fresh_process(SETUP).strip().splitlines()[-1])


@pytest.mark.slow  # a fresh interpreter with two logical CPUs
def test_mirrored_on_two_logical_cpus_reports_the_single_device_loss(two_replicas):
    check(two_replicas, replicas=2)


@pytest.mark.slow  # the same interpreter
def test_group_optimizers_under_mirrored_strategy(two_replicas):
    """Two replicas: each optimizer all-reduces its own group's gradients; the frozen group stays put; the
    main optimizer holds no state for the group's variables (Keras's own build under a strategy gave it all)."""
    results = two_replicas["groups"]
    assert results["two"]["replicas"] == 2
    for result in results.values():
        assert np.isfinite(result["loss"]) and result["iterations"] == 2
        assert all(result["moved"]["control"]) and not any(result["moved"]["others"])
        assert result["main_built_on"] == result["main_expected"]


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), True, "60"])
def test_multi_worker_timeout_is_checked(timeout):
    from vizoo.distribute import get_strategy

    with pytest.raises(ValueError, match=f"Received: timeout_seconds={timeout!r}"):
        get_strategy("multi_worker", timeout_seconds=timeout)


def test_slurm_ranks_follow_the_node_list_in_block_order(monkeypatch):
    """node[9-10] with 2 + 1 tasks: ranks 0-1 on node9 and 2 on node10, as srun's block distribution places them
    (sorted by name, node10 came first and rank 0 was given node10's address)."""
    import json
    import os

    from vizoo.distribute import slurm_cluster_resolver

    for key, value in {"SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NODELIST": "node[9-10]",
                       "SLURM_STEP_TASKS_PER_NODE": "2,1", "TF_CONFIG": ""}.items():
        monkeypatch.setenv(key, value)  # (TF_CONFIG: restored after the test)
    for rank, node in [(0, "node9"), (1, "node9"), (2, "node10")]:
        monkeypatch.setenv("SLURM_PROCID", str(rank))
        monkeypatch.setenv("SLURMD_NODENAME", node)
        slurm_cluster_resolver(20000)
        config = json.loads(os.environ["TF_CONFIG"])
        assert config == {"cluster": {"worker": ["node9:20000", "node9:20001", "node10:20000"]},
                          "task": {"type": "worker", "index": rank}}
    monkeypatch.setenv("SLURMD_NODENAME", "node9")  # rank 2 on node9: a cyclic distribution
    with pytest.raises(ValueError, match="--distribution=block.*SLURM_PROCID=2"):
        slurm_cluster_resolver(20000)
    with pytest.raises(ValueError, match="beyond port 65535.*Received: port_base=65535"):
        slurm_cluster_resolver(65535)


def test_unknown_strategy_is_named():
    from vizoo.distribute import get_strategy

    with pytest.raises(ValueError, match="Received: distribute='horovod'"):
        get_strategy("horovod")
    with pytest.raises(ValueError, match="cluster_resolver applies to the 'multi_worker' strategy only"):
        get_strategy("mirrored", cluster_resolver=object())


def grouped_digits_vae():
    # Gradient groups with their own surrogates (DReG) and optimizer (KL warm-up: tests/test_multi_worker.py).
    import keras

    from tests.helpers import digits_vae
    from vizoo.losses import IWAELoss

    return digits_vae(
        steps_per_execution=2,  # 13 batches: six calls of 2 steps and one of 1
        loss=IWAELoss(k=2, gradient_estimator="dreg"),
        group_optimizers={"inference": keras.optimizers.Adam(2e-3)},
    )


@pytest.mark.slow  # two models trained two epochs (26 steps each)
def test_the_loop_on_one_device_equals_fit():
    import vizoo

    fitted, splits = grouped_digits_vae()
    history = fitted.fit(splits.train, validation_data=splits.validation, epochs=2, verbose=0).history
    looped, splits = grouped_digits_vae()
    logs = vizoo.distribute.train(
        looped, splits.train, 2, validation_data=splits.validation, steps_per_execution=2, verbose=0
    ).history
    for a, b in zip(fitted.get_weights(), looped.get_weights()):  # the same data, noise and steps
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(looped.optimizer.iterations) == int(fitted.optimizer.iterations) == 26
    for key in ("loss", "val_loss"):  # fit's float32 running mean against the loop's float64 sum
        np.testing.assert_allclose(logs[key], history[key], rtol=2e-6)


def test_the_loops_backup_resumes_bit_for_bit_and_is_removed_when_training_ends(tmp_path):
    """Stopped after epoch 1 with its backup kept, a new model resumes there and ends where an uninterrupted run
    ends; then the backup is gone (Keras's BackupAndRestore), so the next call starts afresh."""
    import vizoo
    from tests.helpers import digits_vae

    straight, splits = digits_vae()
    vizoo.distribute.train(straight, splits.train, 2, verbose=0)
    backup = tmp_path / "backup"
    first, splits = digits_vae()
    vizoo.distribute.train(first, splits.train, 1, backup_dir=str(backup), delete_backup=False, verbose=0)
    assert vizoo.distribute.backup_epoch_in(str(backup)) == 1
    resumed, splits = digits_vae()
    history = vizoo.distribute.train(resumed, splits.train, 2, backup_dir=str(backup), verbose=0).history
    assert len(history["loss"]) == 1  # epoch 2 only
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not backup.exists()


def test_the_loops_compiled_functions_do_not_keep_a_model_alive():
    import gc
    import weakref

    import vizoo
    from tests.helpers import digits_vae

    model, splits = digits_vae()
    vizoo.distribute.train(model, splits.train, 1, verbose=0)
    vizoo.distribute.evaluate(model, splits.validation)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_a_backup_beyond_the_epochs_asked_for_is_refused(tmp_path):
    import vizoo
    from tests.helpers import digits_vae

    model, splits = digits_vae()
    vizoo.distribute.train(model, splits.train, 2, backup_dir=str(tmp_path), delete_backup=False, verbose=0)
    with pytest.raises(ValueError, match="after epoch 2, beyond this call's epochs=1.*Received: epochs=1"):
        vizoo.distribute.train(model, splits.train, 1, backup_dir=str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match="Received: delete_backup='no'"):
        vizoo.distribute.train(model, splits.train, 1, delete_backup="no", verbose=0)
    # A damaged backup is a named error, never a silent fresh start (which would discard the run's files).
    data = next(tmp_path.glob("*.data-*"))
    content = data.read_bytes()
    data.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="cannot be restored into this model.*Delete that directory"):
        vizoo.distribute.train(model, splits.train, 3, backup_dir=str(tmp_path), verbose=0)
    (tmp_path / "checkpoint").write_text("garbage")
    with pytest.raises(ValueError, match="damaged: its state file 'checkpoint' names no backup"):
        vizoo.distribute.train(model, splits.train, 3, backup_dir=str(tmp_path), verbose=0)


def test_the_loop_refuses_data_it_cannot_split():
    import tensorflow as tf

    import vizoo
    from tests.helpers import digits_vae

    model, splits = digits_vae()
    x = np.zeros((8, 64), "float32")
    cases = [
        (tf.data.Dataset.from_tensor_slices((x, x)).batch(4), "batches of x alone"),
        (tf.data.Dataset.from_tensor_slices(x).batch(4).repeat(), "Received: cardinality=-1"),
        (x, "train_data must be a batched tf.data.Dataset"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            vizoo.distribute.train(model, data, 1, verbose=0)
    uncompiled = vizoo.models.VAE(64, 2, [8])
    with pytest.raises(ValueError, match="compiled with a vizoo bound.*Received: loss=None"):
        vizoo.distribute.train(uncompiled, splits.train, 1, verbose=0)
    with pytest.raises(ValueError, match="Received: callbacks=<"):
        vizoo.distribute.train(model, splits.train, 1, callbacks=vizoo.callbacks.KLWarmup(1), verbose=0)
    summed = vizoo.models.VAE(64, 2, [8])
    summed.compile(optimizer="adam", loss=vizoo.losses.IWAELoss(k=2, reduction="sum"))
    with pytest.raises(ValueError, match="reduce by the mean over the batch. Received: reduction='sum'"):
        vizoo.distribute.train(summed, splits.train, 1, verbose=0)
