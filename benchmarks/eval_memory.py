"""Peak memory and speed of `vizoo.evaluate.log_likelihood` at k=5000.

The IWAE-paper architecture (784-200-200-50 tanh MLPs, Bernoulli decoder) on a
10,000 x 784 binary test set (random pixels: memory and speed do not depend on
the values). Prints a table; peak memory is the process's maximum resident set,
measured before and after the evaluation (TensorFlow's own import and the
model are in the baseline).

    python benchmarks/eval_memory.py                      # the full 10,000 x 5000
    python benchmarks/eval_memory.py --num-examples 500   # a quick look
"""

import argparse
import os
import platform
import resource
import time


from benchmark import layer_flops  # noqa: E402  (this script's folder)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-examples", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    import numpy as np

    import vizoo
    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    x = (np.random.default_rng(0).random((args.num_examples, 784)) < 0.13).astype("float32")
    model = VAE(input_dim=784, latent_dim=50, hidden_units=[200, 200])
    model.compile(optimizer="adam", loss=IWAELoss(k=5))
    vizoo.evaluate.log_likelihood(model, x[:args.batch_size], k=args.k, batch_size=args.batch_size)  # trace
    baseline = peak_rss_mib()
    start = time.perf_counter()
    result = vizoo.evaluate.log_likelihood(model, x, k=args.k, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    # Decoder FLOPs per sample (2 per multiply-add) dominate; the encoder runs once per example.
    flops = args.num_examples * args.k * layer_flops(784)[1]

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print("| examples | k | batch | seconds | examples/s | decoder GFLOP/s | peak RSS MiB | baseline RSS MiB | NLL |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.num_examples} | {args.k} | {args.batch_size} | {seconds:.1f} | {args.num_examples / seconds:.1f} "
        f"| {flops / seconds / 1e9:.1f} | {peak:.0f} | {baseline:.0f} | {result['nll']:.2f} |"
    )


if __name__ == "__main__":
    main()
