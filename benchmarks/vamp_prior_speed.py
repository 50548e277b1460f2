"""The VampPrior's cost against the N(0, I) prior: a training epoch and a k=5000 evaluation, alternating.

The IWAE paper's 784-200-200-50 VAE with random weights and random binary data (only time is measured):
the median of `--repeats` training passes of `--steps` steps of batch 100 (steps_per_execution 10), and of
`--repeats` evaluations of `--examples` examples with k=`--k`, each prior in turn:

    python benchmarks/vamp_prior_speed.py --components 500

(Run it at two commits to compare implementations, e.g. before and after the VampPrior's matmul form.)
"""

import argparse
import statistics
import sys
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for flag in ("components", "steps", "examples", "k", "repeats"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag} must be a positive integer. Received: {getattr(args, flag)}")

    import keras

    from vizoo import evaluate
    from vizoo.layers import VampPrior
    from vizoo.losses import ELBOLoss
    from vizoo.models import VAE

    rng = np.random.default_rng(0)
    x = (rng.random((args.steps * 100, 784)) < 0.3).astype("float32")
    models = {}
    for name in ("standard_normal", "vamp"):
        keras.utils.set_random_seed(0)
        prior = VampPrior(num_components=args.components) if name == "vamp" else name
        model = VAE(784, 50, [200, 200], prior=prior, seed=0)
        model.compile(optimizer="adam", loss=ELBOLoss(), steps_per_execution=10)
        model.fit(x, batch_size=100, epochs=1, verbose=0)  # traced here, not timed
        evaluate.log_likelihood(model, x[: args.examples], k=args.k, seed=0)
        models[name] = model
    times = {(name, what): [] for name in models for what in ("train", "eval")}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, batch_size=100, epochs=1, verbose=0)
            times[(name, "train")].append(time.perf_counter() - start)
            start = time.perf_counter()
            evaluate.log_likelihood(model, x[: args.examples], k=args.k, seed=0)
            times[(name, "eval")].append(time.perf_counter() - start)
    print(f"| prior | train: {args.steps} steps of 100 (s) | eval: {args.examples} examples, k={args.k} (s) |")
    print("|---|---|---|")
    for name in models:
        print(f"| {name} | {statistics.median(times[(name, 'train')]):.2f} | {statistics.median(times[(name, 'eval')]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
