"""Time per training epoch of IWAE with and without DReG, the two models alternating.

Both are the IWAE paper's 784-200-200-50 model at the same k; each round trains one epoch of
each on the same binary data, and the table gives medians, so that other work on a shared
machine moves both alike.

    python benchmarks/dreg_step_time.py --k 50 --rounds 8
"""

import argparse
import os
import statistics
import sys
import time



def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--examples", type=int, default=1000, help="random binary examples in an epoch")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    import numpy as np

    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    x = (np.random.default_rng(0).random((args.examples, 784)) < 0.3).astype("float32")
    models = {}
    for estimator in (None, "dreg"):
        model = VAE(784, 50, [200, 200], seed=0)
        model.compile(optimizer="adam", loss=IWAELoss(k=args.k, gradient_estimator=estimator), steps_per_execution=10)
        model.fit(x, batch_size=100, epochs=1, verbose=0)  # traces the step
        models[estimator] = model
    seconds = {estimator: [] for estimator in models}
    for _ in range(args.rounds):
        for estimator, model in models.items():
            start = time.perf_counter()
            model.fit(x, batch_size=100, epochs=1, verbose=0)
            seconds[estimator].append(time.perf_counter() - start)
    medians = {estimator: statistics.median(values) for estimator, values in seconds.items()}
    print(f"IWAE k={args.k}, {args.examples} examples per epoch, {args.rounds} alternating rounds (medians)")
    for estimator, median in medians.items():
        print(f"  {estimator or 'plain'}: {args.examples / median:.0f} ex/s")
    print(f"DReG / plain epoch time: {medians['dreg'] / medians[None]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
