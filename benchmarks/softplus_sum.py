"""The Bernoulli log-probability with a softplus per pixel against vizoo's grouped sum.

`BernoulliLikelihood.log_prob` sums softplus(l) over the pixels as max(l, 0) plus the logs of
products of 16 factors 1 + exp(-|l|) (`vizoo.layers.bernoulli_likelihood.sum_softplus`): one log
per 16 pixels instead of a log1p per pixel. This script times both in one process, alternating
(`--rounds`, medians), on the IWAE paper's 784-200-200-50 model at batch 100: a compiled loop of
10 IWAE k=5 training steps, and `vizoo.evaluate`'s sampling loop at k=1000 (40 chunks of 25
samples); and it prints the largest error of each against a float64 reference on N(0, 5^2)
logits of shape [100, 25, 784].

    python benchmarks/softplus_sum.py --precision float32
    python benchmarks/softplus_sum.py --precision mixed_bfloat16
"""

import argparse
import statistics
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be an integer >= 1. Received: {args.rounds}")

    import vizoo  # first: it filters TensorFlow's start-up notices

    import keras
    import numpy as np
    import tensorflow as tf
    from keras import ops

    from vizoo.evaluate import _batch_statistics_fn
    from vizoo.layers import BernoulliLikelihood

    grouped = BernoulliLikelihood.log_prob

    def per_pixel(self, x, params):  # what log_prob computed before
        logits = params["logits"]
        x = ops.expand_dims(ops.cast(x, logits.dtype), axis=-2)
        return ops.sum(x * logits - ops.softplus(logits), axis=-1)

    variants = {"softplus per pixel": per_pixel, "grouped (vizoo)": grouped}
    rng = np.random.default_rng(0)
    x = tf.constant((rng.random((100, 784)) < 0.3).astype("float32"))

    logits = tf.constant(rng.normal(size=(100, 25, 784)) * 5, tf.float32)
    x64, l64 = tf.cast(x[:, None], tf.float64), tf.cast(logits, tf.float64)
    reference = tf.reduce_sum(x64 * l64 - tf.nn.softplus(l64), -1)
    errors = {}
    for name, log_prob in variants.items():
        value = tf.function(lambda l, log_prob=log_prob: log_prob(None, x, {"logits": l}))(logits)
        errors[name] = float(tf.reduce_max(tf.abs(tf.cast(value, tf.float64) - reference)))

    functions = {}
    for name, log_prob in variants.items():
        BernoulliLikelihood.log_prob = log_prob  # each function is traced with its own variant
        keras.utils.set_random_seed(0)
        model = vizoo.models.VAE(784, 50, [200, 200], seed=0, dtype=args.precision)
        model.compile(optimizer="adam", loss=vizoo.losses.IWAELoss(k=5))
        model.build((None, 784))
        model.optimizer.build(model.trainable_variables)

        @tf.function
        def train_steps(model=model):
            for _ in tf.range(10):
                model.train_step(x)

        evaluate, _ = _batch_statistics_fn(model, 25, 40, 1, keras.random.SeedGenerator(0))
        train_steps()
        evaluate(x)
        functions[name] = (train_steps, evaluate)
    BernoulliLikelihood.log_prob = grouped

    times = {(name, w): [] for name in variants for w in ("train", "eval")}
    for _ in range(args.rounds):
        for name, (train_steps, evaluate) in functions.items():
            start = time.perf_counter()
            for _ in range(10):
                train_steps()
            times[(name, "train")].append((time.perf_counter() - start) / 100)
            start = time.perf_counter()
            evaluate(x)["log_sum_w"].numpy()
            times[(name, "eval")].append(time.perf_counter() - start)

    print(f"{args.precision}, {args.rounds} alternating rounds (medians)")
    print("| log p(x|z) | max error vs float64 (nats) | training step ms | evaluation ex/s at k=1000 |")
    print("|---|---|---|---|")
    for name in variants:
        print(f"| {name} | {errors[name]:.2e} | {1000 * statistics.median(times[(name, 'train')]):.2f} "
              f"| {100 / statistics.median(times[(name, 'eval')]):.0f} |")
    old, new = "softplus per pixel", "grouped (vizoo)"
    print(f"grouped / per pixel: training step {statistics.median(times[(old, 'train')]) / statistics.median(times[(new, 'train')]):.2f}x "
          f"as fast, evaluation {statistics.median(times[(old, 'eval')]) / statistics.median(times[(new, 'eval')]):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
