"""AIS beside importance sampling for trained long-run rows, where importance sampling's diagnostics flag it.

Loads `<results-dir>/e<epochs>/<row>/seed<seed>/model.keras` (benchmarks/long_run.py's runs) and
estimates log p(x) on the first `--examples` test examples (the long runs' test binarization, seed
`--seed`) twice: annealed importance sampling (`vizoo.evaluate.ais_log_likelihood`, from q or, for a
posterior without a density, from the Gaussian fitted to q's samples) and importance sampling with
k=`--k` (`vizoo.evaluate.log_likelihood`, with its ESS and Pareto k-hat, and for AVB its training estimate
and that estimate's gap to log p(x)). One line of JSON per row, also saved beside the row's model as
`ais-n<examples>-steps<steps>-chains<chains>.json` (`is-n<examples>-k<k>.json` with `--skip-ais`) with
the per-example log p(x) estimates, where `benchmarks/long_run.py --report` reads it:

    nice -n 19 python benchmarks/long_ais.py --models avb,vae --examples 100 --steps 500 --chains 8
    python benchmarks/long_ais.py --models avb --examples 1000 --k 1000 --skip-ais   # importance sampling only
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))


def result_name(args):
    """The file a run of these settings saves beside the row's model."""
    if args.skip_ais:
        return f"is-n{args.examples}-k{args.k}.json"
    return f"ais-n{args.examples}-steps{args.steps}-chains{args.chains}.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="avb,vae")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--results-dir", default=os.path.join(HERE, "results", "long"))
    parser.add_argument("--skip-ais", action="store_true", help="importance sampling and its diagnostics only")
    args = parser.parse_args(argv)
    for flag in ("epochs", "examples", "steps", "chains", "k"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag} must be a positive integer. Received: {getattr(args, flag)}")

    import vizoo
    from vizoo import evaluate

    splits = vizoo.data.load(args.dataset, batch_size=100, binarization="dynamic", seed=args.seed)
    test = splits.test.unbatch().take(args.examples).batch(100)
    for name in [m for m in args.models.split(",") if m]:
        directory = os.path.join(args.results_dir, f"e{args.epochs}", name, f"seed{args.seed}")
        model = vizoo.saving.load_model(os.path.join(directory, "model.keras"))
        start = time.perf_counter()
        line, per_example = {"model": name, "examples": args.examples}, {}
        if not args.skip_ais:
            ais = evaluate.ais_log_likelihood(model, test, num_steps=args.steps, num_chains=args.chains, seed=args.seed)
            line.update(ais_steps=args.steps, ais_chains=args.chains, ais_nll=ais["nll"],
                        ais_standard_error=ais["standard_error"], ais_proposal=ais["proposal"], acceptance=ais["acceptance"])
            per_example["ais_log_likelihood"] = [round(float(v), 5) for v in ais["per_example_log_likelihood"]]
        importance = evaluate.log_likelihood(model, test, k=args.k, seed=args.seed, return_per_example=True)
        per_example["is_log_likelihood"] = [round(float(v), 5) for v in importance["per_example_log_likelihood"]]
        line.update(is_k=args.k, is_nll=importance["nll"], is_ess_mean=importance["ess_mean"],
                    **{f"is_{key}": importance[key] for key in ("pareto_k_max", "pareto_k_threshold",
                                                                "pareto_k_exceeded_fraction", "training_estimate",
                                                                "training_estimate_gap", "training_estimate_gap_se")
                       if key in importance},
                    seconds=round(time.perf_counter() - start, 1))
        print(json.dumps(line), flush=True)
        saved = {**line, "epochs": args.epochs, "seed": args.seed, "dataset": args.dataset, "per_example": per_example}
        with open(os.path.join(directory, result_name(args)), "w") as f:
            json.dump(saved, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
