"""tf.distribute: the bounds reduce to the global batch mean across replicas.

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
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "exact": exact, "single": single_loss,
                  "distributed": loss, "history": history, "adam": replica_values}))
"""

def check(result, replicas):
    assert result["replicas"] == replicas
    assert abs(result["single"] - result["exact"]) < 1e-5
    assert abs(result["distributed"] - result["single"]) < 1e-5
    assert all(abs(value - result["exact"]) < 1e-3 for value in result["history"])  # trains, still at the optimum
    from tests.test_optimizers import adam_reference

    gradient = 3 * (np.arange(6.0) - 2.5).reshape(2, 3)
    expected = adam_reference(np.linspace(-1.0, 1.0, 6).reshape(2, 3), [gradient] * 3, lr=0.01)
    for replica in result["adam"]:  # the same update on every replica
        np.testing.assert_allclose(np.array(replica), expected, rtol=0, atol=1e-12)


@pytest.mark.slow  # a fresh interpreter with two logical CPUs
def test_mirrored_on_two_logical_cpus_reports_the_single_device_loss():
    output = run_in_fresh_process(SETUP)
    check(json.loads(output.strip().splitlines()[-1]), replicas=2)


def test_multi_worker_is_refused_with_the_reason():
    from vizoo.distribute import get_strategy

    with pytest.raises(ValueError, match="keras-team/keras#20585.*Received: distribute='multi_worker'"):
        get_strategy("multi_worker")


def test_unknown_strategy_is_named():
    from vizoo.distribute import get_strategy

    with pytest.raises(ValueError, match="Received: distribute='horovod'"):
        get_strategy("horovod")
