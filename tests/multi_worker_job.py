"""One process of the multi-worker tests (tests/test_multi_worker.py): a worker, or the reference.

    python -m tests.multi_worker_job worker OUT_DIR [--stall-at EPOCH:BATCH]   # TF_CONFIG names the cluster
    python -m tests.multi_worker_job worker OUT_DIR --slurm-port P             # SLURM_* variables name it
    python -m tests.multi_worker_job reference OUT_DIR                         # one process, 2 logical CPUs
    python -m tests.multi_worker_job unreachable OUT_DIR                       # get_strategy only

Each trains the same tiny Bernoulli VAE (64-8-2) on vizoo.data.load("digits") (dynamic
binarization, reshuffled every epoch; 1,297 examples in batches of 100, so the last global batch
of 97 splits 48/49) for EPOCHS epochs with vizoo.runs.train_run, and first evaluates the bound
of a pPCA model whose q is the exact posterior (every log-weight is log p(x), so the bound is
exact whatever the noise) on 63 examples in batches of 32. It writes OUT_DIR/result-<task>.json:
the weights, the history, the pPCA bound, the number of replicas.

The reference runs the same loop under MirroredStrategy on two logical CPUs of one process:
two replicas that split each global batch as two workers do and draw the same noise, so a
2-worker job must end with its weights (float tolerance: the all-reduce order may differ).
`--stall-at E:B` makes this worker stop responding (sleep) after batch B of epoch E: the test
kills it there with SIGKILL, mid-epoch, as a lost machine would be.
"""

import argparse
import json
import os
import sys
import time

EPOCHS = 3
BATCH_SIZE = 100
STEPS_PER_EXECUTION = 1  # one traced step (tracing is most of the cost); several: tests/test_distribute.py
TIMEOUT_SECONDS = 4  # bound on waiting for a peer (registration, heartbeat, collectives)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("worker", "reference", "unreachable"))
    parser.add_argument("out_dir")
    parser.add_argument("--stall-at", default=None)
    parser.add_argument("--slurm-port", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import tensorflow as tf

    if args.role == "reference":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    import vizoo
    from tests import ppca

    if args.role == "unreachable":
        start = time.perf_counter()
        try:
            vizoo.distribute.get_strategy("multi_worker", timeout_seconds=TIMEOUT_SECONDS)
        except ConnectionError as error:
            print(json.dumps({"error": str(error), "seconds": time.perf_counter() - start}))
            return 0
        return 1
    if args.role == "reference":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        task = "reference"
    else:
        resolver = None if args.slurm_port is None else vizoo.distribute.slurm_cluster_resolver(args.slurm_port)
        strategy = vizoo.distribute.get_strategy(
            "multi_worker", cluster_resolver=resolver, timeout_seconds=TIMEOUT_SECONDS
        )
        task = str(strategy.cluster_resolver.task_id)

    # The pPCA bound under the strategy: exact, so equal to the closed form and to one device's.
    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(63, weights, bias)
    with strategy.scope():
        exact_model = ppca.ppca_vae(weights, bias)
        exact_model.compile(optimizer="sgd", loss=vizoo.losses.IWAELoss(k=5))
    ppca_bound = vizoo.distribute.evaluate(exact_model, tf.data.Dataset.from_tensor_slices(x).batch(32), strategy)
    refusals = {}
    if args.role == "reference":  # what two replicas refuse (the workers would refuse the same)
        for name, data, options in (
            ("jit", tf.data.Dataset.from_tensor_slices(x).batch(32), {"jit_compile": True}),
            ("tiny_batch", tf.data.Dataset.from_tensor_slices(x[:3]).batch(2), {}),  # batches of 2, then 1
            ("tiny_static", tf.data.Dataset.from_tensor_slices(x[:3]).batch(1, drop_remainder=True), {}),
            ("tiny_validation", tf.data.Dataset.from_tensor_slices(x).batch(32),
             {"validation_data": tf.data.Dataset.from_tensor_slices(x[:3]).batch(2)}),
        ):
            try:  # refused with a ValueError, not TensorFlow's error (tiny_batch's in its step: not read ahead)
                vizoo.distribute.train(exact_model, data, 1, strategy=strategy, verbose=0, **options)
            except ValueError as error:
                refusals[name] = str(error)

    keras.utils.set_random_seed(0)
    splits = vizoo.data.load("digits", batch_size=BATCH_SIZE, seed=0)
    with strategy.scope():
        model = vizoo.models.VAE(64, 2, [8], seed=0)
        model.initialize_output_bias(splits.train_mean)
        model.compile(optimizer=vizoo.optimizers.Adam(3e-3), loss=vizoo.losses.IWAELoss(k=3, kl_warmup_epochs=2))

    callbacks = []
    if args.stall_at:
        stall_epoch, stall_batch = map(int, args.stall_at.split(":"))

        class Stall(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if (self.epoch, batch + 1) == (stall_epoch, stall_batch):
                    open(os.path.join(args.out_dir, f"stalled-{task}"), "w").close()
                    time.sleep(600)  # until the test kills this process

        callbacks.append(Stall())
    vizoo.runs.train_run(
        model,
        splits.train,
        os.path.join(args.out_dir, "run"),
        EPOCHS,
        strategy=strategy,
        validation_data=splits.validation,
        verbose=0,
        tensorboard=True,
        callbacks=callbacks,
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "ppca_bound": ppca_bound,
        "refusals": refusals,
        "ppca_exact": float(-np.mean(ppca.exact_log_px(x, weights, bias))),
        "weights": [np.asarray(w).tolist() for w in model.get_weights()],
        "seed_states": [np.asarray(v).tolist() for v in model.variables if v.name == "seed_generator_state"],
    }
    with open(os.path.join(args.out_dir, f"result-{task}.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
