"""Importance sampling against AIS, and the BDMC gap, on trained Fashion-MNIST models (in the manner of Wu et al. 2017).

For each run directory (written by train.py), on the first --examples test examples:
- IS: `vizoo.evaluate.log_likelihood` with k = --is-k (5000) importance samples from q;
- AIS: `vizoo.evaluate.ais_log_likelihood` at each budget of --ais-steps (intermediate distributions),
  --ais-chains chains per example, 10 leapfrog steps, sigmoid schedule, from q (or the Gaussian fitted to
  q's samples for posteriors with no density at arbitrary z);
- BDMC: `vizoo.evaluate.bdmc` on --bdmc-examples examples simulated from the model, at the largest budget:
  forward (lower) and reverse (upper) AIS and their gap;
with the seconds each took. Writes a markdown table (--output) and the results as JSON (--json).

    nice -n 19 python benchmarks/ais.py --runs vae=/tmp/ais-runs/vae iwae50=/tmp/ais-runs/iwae50 \\
        --examples 50 --ais-steps 100 500 --ais-chains 4 --bdmc-examples 20 --output docs/benchmarks_ais.md
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=[], help="NAME=RUN_DIR pairs (train.py output directories)")
    parser.add_argument("--examples", type=int, default=100, help="first N test examples")
    parser.add_argument("--is-k", type=int, default=5000, help="importance samples")
    parser.add_argument("--ais-steps", type=int, nargs="+", default=[100, 500, 2000], help="AIS budgets T")
    parser.add_argument("--ais-chains", type=int, default=4, help="AIS chains per example")
    parser.add_argument("--bdmc-examples", type=int, default=20, help="simulated examples for BDMC (0: none)")
    parser.add_argument("--eval-reverse-samples", type=int, default=50, help="K for a hierarchical posterior's IS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="markdown file to write")
    parser.add_argument("--json", default=None, help="JSON file of every number")
    parser.add_argument(
        "--from-json", default=None, help="write the table from this JSON file of an earlier run (no evaluation)"
    )
    parser.add_argument("--command", default=None, help="with --from-json: the command of that run, for the page")
    return parser.parse_args(argv)


def evaluate_run(name, run_dir, args):
    import vizoo
    from vizoo import ais

    model = vizoo.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    test, config = ais.run_test_split(argparse.Namespace(run_dir=run_dir))
    x = ais._as_array(model, test, "test data")[: args.examples]
    row = {"name": name, "run_dir": run_dir, "posterior": config.get("posterior"), "loss": config.get("loss"),
           "k": config.get("k"), "epochs": config.get("epochs")}
    options = {}
    if "num_reverse_samples" in model.posterior.sampler_options:
        options["num_reverse_samples"] = args.eval_reverse_samples
    start = time.perf_counter()
    result = vizoo.evaluate.log_likelihood(model, x, k=args.is_k, seed=args.seed, diagnostics=False, **options)
    row["is"] = {"nll": result["nll"], "seconds": time.perf_counter() - start,
                 "lower_bound_only": bool(result.get("log_likelihood_is_lower_bound", False))}
    print(f"{name}: IS k={args.is_k} NLL {row['is']['nll']:.2f} ({row['is']['seconds']:.0f} s)", flush=True)
    row["ais"] = []
    for steps in args.ais_steps:
        result = ais.ais_log_likelihood(model, x, num_steps=steps, num_chains=args.ais_chains, seed=args.seed)
        row["ais"].append({key: result[key] for key in (
            "nll", "standard_error", "ess_mean", "acceptance", "seconds", "num_steps", "num_chains", "proposal")})
        print(f"{name}: AIS T={steps} NLL {result['nll']:.2f} +- {result['standard_error']:.2f} "
              f"(acceptance {result['acceptance']:.2f}, {result['seconds']:.0f} s)", flush=True)
    if args.bdmc_examples:
        steps = max(args.ais_steps)
        result = ais.bdmc(model, num_examples=args.bdmc_examples, num_steps=steps, num_chains=args.ais_chains,
                          seed=args.seed)
        row["bdmc"] = {key: result[key] for key in (
            "lower", "upper", "gap", "gap_standard_error", "forward_seconds", "reverse_seconds", "num_steps", "num_examples")}
        print(f"{name}: BDMC T={steps} gap {result['gap']:.3f} ({result['lower']:.2f}, {result['upper']:.2f})", flush=True)
    return row


def markdown(rows, args, command):
    lines = [
        "# AIS against importance sampling, and the BDMC gap",
        "",
        "Written by `benchmarks/ais.py`. Command:",
        "",
        f"    {command}",
        "",
        f"Test NLL (nats, lower is better) of the first {args.examples} Fashion-MNIST test examples; AIS with "
        f"{args.ais_chains} chains per example, 10 leapfrog steps, sigmoid schedule, from q (or the Gaussian fitted to "
        "q's samples: IAF, hierarchical). Both are stochastic upper bounds on the NLL. ± is AIS's standard error "
        "(delta method over chains). BDMC: forward and reverse AIS at the largest budget on "
        f"{args.bdmc_examples} examples simulated from the model; its NLLs are of those examples, not of the test set.",
        "",
    ]
    header = "| model | trained | IS k=%d NLL (s) | " % args.is_k + " | ".join(
        f"AIS T={steps} NLL (s)" for steps in args.ais_steps) + " | BDMC gap [reverse NLL, forward NLL] (s) |"
    lines += [header, "|" + "---|" * (4 + len(args.ais_steps))]
    for row in rows:
        mark = "*" if row["is"]["lower_bound_only"] else ""
        trained = f"{row['loss']} k={row['k']}, {row['posterior']} q, {row['epochs']} epochs"
        cells = [f"{row['name']}", trained, f"{row['is']['nll']:.2f}{mark} ({row['is']['seconds']:.1f})"]
        cells += [f"{a['nll']:.2f} ± {a['standard_error']:.2f} ({a['seconds']:.1f})" for a in row["ais"]]
        if "bdmc" in row:
            b = row["bdmc"]
            error = f" ± {b['gap_standard_error']:.2f}" if "gap_standard_error" in b else ""
            cells.append(f"{b['gap']:.2f}{error} [{-b['upper']:.2f}, {-b['lower']:.2f}] "
                         f"({b['forward_seconds'] + b['reverse_seconds']:.1f})")
        else:
            cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The models (each run's `command.txt`):", ""]
    for row in rows:
        path = os.path.join(row["run_dir"], "command.txt")
        if os.path.exists(path):
            with open(path) as f:
                lines.append(f"    {row['name']}: {f.read().strip()}")
    lines += [
        "",
        "\\* a hierarchical posterior's IS uses the IWHVI upper bound on log q (K = "
        f"{args.eval_reverse_samples}): a lower bound on log p(x) even as k grows.",
        "",
        f"Measured on a shared, heavily loaded 2-core machine (Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}): the seconds compare the methods with each other, not with other machines.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    command = "python benchmarks/ais.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.from_json:
        with open(args.from_json) as f:
            rows = json.load(f)
        text = markdown(rows, args, args.command or command)
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        print(text)
        return rows
    rows = []
    for spec in args.runs:
        name, _, run_dir = spec.partition("=")
        rows.append(evaluate_run(name, run_dir, args))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
    text = markdown(rows, args, command)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    print(text)
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
