"""float32 against mixed bfloat16: test NLL of the same trained model and the speed of both.

Evaluates one trained model (a `.keras` file that `benchmarks/benchmark.py` left in its
results directory) in float32 and as a bfloat16 copy with the same weights
(`vizoo.precision.with_precision`), from the same seed, so that the two estimates use the same
noise and differ only by rounding; then times one training epoch of a fresh model of the same
architecture under each policy. The two programs alternate (`--repeats` rounds) and the table
gives medians, because other work on a shared machine moves single timings.

    python benchmarks/benchmark.py --epochs 5 --num-test 2000 --models dreg --results-dir benchmarks/results/dreg
    python benchmarks/precision.py --model benchmarks/results/dreg/iwae50.keras --num-test 500
"""

import argparse
import os
import statistics
import sys
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = ("float32", "mixed_bfloat16")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(REPO, "benchmarks", "results", "dreg", "iwae50.keras"))
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--num-test", type=int, default=500, help="first N test examples for the NLL")
    parser.add_argument("--eval-k", type=int, default=5000)
    parser.add_argument("--train-examples", type=int, default=10000, help="examples in each timed training epoch")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of each timing")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    import vizoo  # noqa: F401  (first: it filters TensorFlow's start-up notices)
    import keras
    import numpy as np

    import vizoo
    from vizoo.precision import with_precision

    splits = vizoo.data.load(args.dataset, batch_size=100, binarization="dynamic", seed=args.seed,
                             data_dir=args.data_dir, validation_size=0)
    test = splits.test.unbatch().take(args.num_test).batch(100)
    trained = keras.models.load_model(args.model)
    copies = {policy: with_precision(trained, policy) for policy in POLICIES}

    results = {policy: {"eval_seconds": [], "train_seconds": []} for policy in POLICIES}
    for _ in range(args.repeats):
        for policy, model in copies.items():
            start = time.perf_counter()
            metrics = vizoo.evaluate.log_likelihood(model, test, k=args.eval_k, seed=args.seed)
            results[policy]["eval_seconds"].append(time.perf_counter() - start)
            results[policy]["nll"] = metrics["nll"]

    # In memory, so that Keras knows the number of batches (and the pipeline is not what is timed).
    train = np.concatenate([np.asarray(x) for x in splits.train.unbatch().take(args.train_examples).batch(1000)])
    keras.utils.set_random_seed(args.seed)
    untrained = type(trained).from_config(trained.get_config())  # the same architecture, new weights
    untrained.build((None, trained.input_dim))
    fresh = {}
    for policy in POLICIES:
        fresh[policy] = with_precision(untrained, policy)
        fresh[policy].compile(optimizer="adam", loss=trained.loss, steps_per_execution=10)
        fresh[policy].fit(train, batch_size=100, epochs=1, verbose=0)  # traces the step
    for _ in range(args.repeats):
        for policy, model in fresh.items():
            start = time.perf_counter()
            model.fit(train, batch_size=100, epochs=1, verbose=0)
            results[policy]["train_seconds"].append(time.perf_counter() - start)

    print(f"model {args.model} ({trained.loss.__class__.__name__} k={trained.loss.k}), "
          f"{args.num_test} test examples, k={args.eval_k}, {args.repeats} alternating rounds (medians)")
    print("| precision | test NLL | eval ex/s | train ex/s |")
    print("|---|---|---|---|")
    for policy in POLICIES:
        r = results[policy]
        print(f"| {policy} | {r['nll']:.4f} | {args.num_test / statistics.median(r['eval_seconds']):.1f} "
              f"| {len(train) / statistics.median(r['train_seconds']):.0f} |")
    base, fast = results["float32"], results["mixed_bfloat16"]
    print(f"NLL difference (bfloat16 - float32): {fast['nll'] - base['nll']:+.4f} nats; speed-up: evaluation "
          f"{statistics.median(base['eval_seconds']) / statistics.median(fast['eval_seconds']):.2f}x, training "
          f"{statistics.median(base['train_seconds']) / statistics.median(fast['train_seconds']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
