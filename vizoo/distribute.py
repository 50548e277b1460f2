"""Training on several devices or machines with `tf.distribute`, by name.

    strategy = vizoo.distribute.get_strategy("mirrored")   # every local GPU (or the CPU)
    with strategy.scope():
        model = VAE(784, 50)
        model.compile(optimizer="adam", loss=IWAELoss(k=5))
    model.fit(train_ds, epochs=10)                          # the global batch is split across replicas

The bounds reduce like any Keras loss: each replica averages its share of the global batch and
Keras scales by 1 / num_replicas, so the reported loss is the global batch mean (tested equal
to the single-device value within 1e-5). Each replica draws its own samples of z.

- `"mirrored"`: `tf.distribute.MirroredStrategy`, synchronous data parallelism over the local
  devices (all GPUs; on a machine without one, the CPU).
- `"multi_worker"`: refused with an explanation. `tf.distribute.MultiWorkerMirroredStrategy`
  is TensorFlow's way to train on several machines, but Keras 3.15's `fit` and `evaluate` fail
  under it for every model, a plain `Sequential` with an MSE loss included (upstream:
  keras-team/keras#20585, open; TensorFlow's own multi-worker Keras tutorial fails the same
  way). vizoo checked this with two worker processes on localhost; when Keras fixes it, the
  strategy will need no vizoo code (the losses already reduce per replica like Keras losses).
- `"none"`: TensorFlow's default strategy (one device).
"""

from vizoo.utils import check_choice

STRATEGIES = ("none", "mirrored", "multi_worker")


def get_strategy(name="none"):
    """The `tf.distribute.Strategy` called `name` (one of `STRATEGIES`)."""
    import tensorflow as tf

    check_choice(name, "distribute", STRATEGIES)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        raise ValueError(
            "Keras 3.15 cannot train under tf.distribute.MultiWorkerMirroredStrategy (fit and evaluate fail for "
            "every model: keras-team/keras#20585). Use distribute='mirrored' for several devices of one machine. "
            "Received: distribute='multi_worker'"
        )
    return tf.distribute.get_strategy()

