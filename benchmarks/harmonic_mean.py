"""The variational harmonic-mean estimator against AIS on pPCA (exact log p(x)): spread across seeds.

    nice -n 19 python benchmarks/harmonic_mean.py --seeds 5 --examples 20

Both at the same budget: 2L = 40 HMC chains of ~25 transitions (10 leapfrog steps) per example; the
harmonic mean fits its Gaussian r to L = 20 final states and evaluates at the other 20. q is the exact
posterior shifted by 0.3 and 35% too wide. Prints, per estimator, the error of each seed's mean over
the examples against the closed form, and their standard deviation across seeds.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--examples", type=int, default=20)
    args = parser.parse_args(argv)
    import numpy as np

    from tests import ppca
    from vizoo import ais

    weights, bias = ppca.ppca_parameters()
    x = ppca.sample_data(args.examples, weights, bias)
    exact = ppca.exact_log_px(x, weights, bias).mean()
    model = ppca.ppca_vae(weights, bias, loc_offset=0.3, log_scale_offset=0.3)
    errors = {"harmonic mean": [], "AIS": []}
    for seed in range(args.seeds):
        harmonic = ais.harmonic_mean_log_likelihood(model, x, num_samples=20, burn_in=20, mixing_steps=5, seed=seed)
        annealed = ais.ais_log_likelihood(model, x, num_steps=25, num_chains=40, seed=seed)
        errors["harmonic mean"].append(harmonic["log_likelihood"] - exact)
        errors["AIS"].append(annealed["log_likelihood"] - exact)
    for name, values in errors.items():
        print(f"{name}: errors {np.round(values, 4).tolist()} nats, sd across seeds {np.std(values):.4f}")
    return errors


if __name__ == "__main__":
    main()
