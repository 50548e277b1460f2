"""Results at a real training budget: every family for 100 epochs, seeds, learning curves, the published orderings.

The rows and their models are benchmarks/benchmark.py's (the IWAE paper's 784-200-200-50
architecture, batch 100, Adam 1e-3, dynamically binarized Fashion-MNIST). Two presets:

    python benchmarks/long_run.py --preset long      # every family, 100 epochs, seed 0, test NLL k=5000 on 10,000
    python benchmarks/long_run.py --preset seeds     # vae, iwae5, vae_iaf: 20 epochs, seeds 0, 1, 2
    python benchmarks/long_run.py --report           # docs/benchmarks_long.md + curves (CSV, PNGs) from what exists

Each (row, seed) trains in its own process into `<results-dir>/e<epochs>/<row>/seed<seed>/` with
`vizoo.runs.fit_run`: checkpointed after every epoch and resumed when the command runs again, so
the runs can be stopped at any time (Ctrl-C, kill, reboot) and continued. In each run directory:

- `history.csv`: the training loss and the validation loss (the negative validation bound) per epoch;
- `progress.csv`: the wall seconds of each epoch and, every `--curve-every` epochs, the test NLL
  with k=`--curve-k` importance samples on the first `--curve-examples` test examples;
- `result.json`: once the run has all its epochs, the final evaluation (k=`--eval-k` on the test
  set; hierarchical rows with `--eval-reverse-samples` reverse samples) and the wall time.

`--report` reads every run under `--results-dir` and writes `--output` (the long table, the seed
spread, the orderings of the papers checked against that spread, the budget each unfinished row
has reached) and the learning curves: a CSV and one PNG per family
group beside `--output`. Speed is not reported here (the runs share the machine with other work);
docs/benchmarks.md and docs/speed.md have speeds from quiet runs.
"""

import argparse
import csv
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import benchmark  # noqa: E402  (the rows, their models and the data settings)

PRESETS = {
    # Cheap and informative rows first: the runs are resumable, and a partial result is still a result.
    "long": {
        "models": [
            "vae", "iwae5", "vae_iaf", "hvm", "iwhvi50", "sivi50", "sbn_vimco5", "sbn_nvil", "vae_planar",
            "vae_full_covariance", "vae_vamp", "vae_maf", "renyi", "avb", "iwae50", "iwae50_dreg", "sbn_vimco50",
        ],
        "epochs": 100,
        "seeds": [0],
    },
    "seeds": {"models": ["vae", "iwae5", "vae_iaf"], "epochs": 20, "seeds": [0, 1, 2]},
}
# The published orderings (lower NLL first), each with its source.
ORDERINGS = [
    ("iwae5", "vae", "IWAE k=5 over the VAE (Burda et al. 2016, table 1)"),
    ("iwae50", "iwae5", "IWAE k=50 over IWAE k=5 (Burda et al. 2016, table 1)"),
    ("iwae50_dreg", "iwae50", "DReG over the plain IWAE-50 gradient (Tucker et al. 2019)"),
    ("vae_iaf", "vae", "IAF over the diagonal posterior (Kingma et al. 2016)"),
    ("vae_vamp", "vae", "VampPrior over the N(0, I) prior (Tomczak & Welling 2018)"),
    ("avb", "vae", "AVB with adaptive contrast over the Gaussian VAE (Mescheder et al. 2017)"),
    ("iwhvi50", "hvm", "IWHVI over HVM (Sobolev & Vetrov 2019)"),
    ("iwhvi50", "sivi50", "IWHVI over SIVI (Sobolev & Vetrov 2019)"),
    ("sbn_vimco5", "sbn_nvil", "VIMCO over NVIL (Mnih & Rezende 2016)"),
    ("sbn_vimco50", "sbn_vimco5", "VIMCO k=50 over k=5 (Mnih & Rezende 2016)"),
]
CURVE_GROUPS = {
    "bounds": ["vae", "iwae5", "iwae50", "iwae50_dreg", "renyi"],
    "posteriors": ["vae", "vae_iaf", "vae_planar", "vae_full_covariance", "avb"],
    "priors": ["vae", "vae_vamp", "vae_maf"],
    "hierarchical": ["vae", "hvm", "iwhvi50", "sivi50"],
    "sbn": ["sbn_vimco5", "sbn_vimco50", "sbn_nvil"],
}
PROGRESS_FIELDS = ["epoch", "epoch_seconds", "test_nll", "test_elbo", "test_kl", "active_units", "eval_seconds"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="models, epochs and seeds at once")
    parser.add_argument("--models", default=None, help="comma-separated rows of benchmarks/benchmark.py (or its groups)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--eval-k", type=int, default=5000)
    parser.add_argument("--eval-reverse-samples", type=int, default=50, help="K of hierarchical rows' evaluation")
    parser.add_argument("--num-test", type=int, default=None, help="evaluate on the first N test examples (default all)")
    parser.add_argument("--curve-every", type=int, default=10, help="epochs between test-NLL points of the curves")
    parser.add_argument("--curve-k", type=int, default=1000)
    parser.add_argument("--curve-examples", type=int, default=1000)
    parser.add_argument("--results-dir", default=os.path.join(benchmark.REPO, "benchmarks", "results", "long"))
    parser.add_argument("--output", default=os.path.join(benchmark.REPO, "docs", "benchmarks_long.md"))
    parser.add_argument("--pythae-results", default=os.path.join(benchmark.REPO, "benchmarks", "results", "vs_pythae_quality"),
                        help="benchmarks/vs_pythae_quality.py's results, reported beside the long runs")
    parser.add_argument("--report", action="store_true", help="only write the report from the runs that exist")
    parser.add_argument("--train-only", action="store_true",
                        help="train (or resume) the rows, leave their k=--eval-k evaluations to a later run (a "
                             "hierarchical row's takes about half an hour on 2 quiet cores)")
    parser.add_argument("--in-process", action="store_true", help="train in this process (tests)")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    return parser


def resolve(args):
    """The (models, epochs, seeds) of the command line, a preset's where the command line is silent."""
    preset = PRESETS.get(args.preset, {})
    names = args.models.split(",") if args.models else preset.get("models", ["vae", "iwae5"])
    models = [m for n in names if n for m in benchmark.GROUPS.get(n, [n])]
    if args.preset and not args.models:
        models = [m for m in models if m in benchmark.MODELS]  # rows of families that have not landed are left out
    unknown = [m for m in models if m not in benchmark.MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown row(s) {unknown}; expected names from {list(benchmark.MODELS)}. "
                         f"Received: {args.models!r}")
    ramps = [m for m in models if m in benchmark.REVERSE_SAMPLE_RAMPS]
    if ramps:
        raise SystemExit(f"--models: rows with a K schedule {ramps} run in benchmarks/benchmark.py only. Received: {args.models!r}")
    epochs = args.epochs if args.epochs is not None else preset.get("epochs", 10)
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else preset.get("seeds", [0])
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers. Received: {args.seeds!r}") from None
    for flag, value in (("epochs", epochs), ("curve-every", args.curve_every), ("curve-k", args.curve_k),
                        ("curve-examples", args.curve_examples), ("eval-k", args.eval_k),
                        ("num-test", 1 if args.num_test is None else args.num_test)):
        if value < 1:
            raise SystemExit(f"--{flag} must be a positive integer. Received: {value}")
    return models, epochs, seeds


def run_dir(results_dir, epochs, name, seed):
    return os.path.join(results_dir, f"e{epochs}", name, f"seed{seed}")


def _read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path, rows, fields):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def train_one(name, seed, epochs, args):
    """Train (or resume) one row and seed; evaluate it once it has all its epochs."""
    import keras

    import vizoo
    from vizoo import evaluate, runs

    out = run_dir(args.results_dir, epochs, name, seed)
    splits = vizoo.data.load(
        args.dataset, batch_size=benchmark.BATCH_SIZE, binarization="dynamic", seed=seed, data_dir=args.data_dir
    )
    model = benchmark.build_model(name, splits, seed)
    curve_data = splits.test.unbatch().take(args.curve_examples).batch(benchmark.BATCH_SIZE)
    progress_path = os.path.join(out, "progress.csv")
    os.makedirs(out, exist_ok=True)
    done = runs.checkpoint_epoch(out) or 0
    rows = [row for row in _read_csv(progress_path) if int(row["epoch"]) <= done]  # epochs after the checkpoint redo
    _write_csv(progress_path, rows, PROGRESS_FIELDS)

    class Progress(keras.callbacks.Callback):
        """Epoch seconds, and the test NLL every `--curve-every` epochs (and at the last), into progress.csv."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "epoch_seconds": round(time.perf_counter() - self.start, 3)}
            if (epoch + 1) % args.curve_every == 0 or epoch + 1 == epochs:
                start = time.perf_counter()
                options = benchmark.evaluation_options(self.model, args.eval_reverse_samples)
                metrics = evaluate.log_likelihood(self.model, curve_data, k=args.curve_k, seed=seed, **options)
                row.update(test_nll=metrics["nll"], test_elbo=metrics["elbo"], test_kl=metrics["kl"],
                           active_units=metrics["active_units"], eval_seconds=round(time.perf_counter() - start, 3))
            rows.append(row)
            _write_csv(progress_path, rows, PROGRESS_FIELDS)

    if done < epochs:
        print(f"{name} seed {seed}: epochs {done + 1}-{epochs} into {out}", flush=True)
        runs.fit_run(model, splits.train, out, epochs=epochs, validation_data=splits.validation, verbose=2,
                     callbacks=[Progress()])
    else:
        model = vizoo.saving.load_model(os.path.join(out, "model.keras"))
    if args.train_only:
        print(f"{name} seed {seed}: trained; evaluation left to a run without --train-only", flush=True)
        return None

    test = splits.test
    num_test = splits.num_test
    if args.num_test:
        num_test = min(args.num_test, splits.num_test)
        test = test.unbatch().take(num_test).batch(benchmark.BATCH_SIZE)
    start = time.perf_counter()
    options = benchmark.evaluation_options(model, args.eval_reverse_samples)
    metrics = evaluate.log_likelihood(model, test, k=args.eval_k, seed=seed, verbose=2, **options)
    family, loss_name, k, posterior_name, loss_options = benchmark.MODELS[name]
    result = {
        "model": name,
        "seed": seed,
        "epochs": epochs,
        "posterior": (posterior_name or family) + (" (SIVI)" if name in benchmark.ROW_POSTERIOR_OPTIONS else ""),
        "prior": benchmark.ROW_PRIORS.get(name, "standard_normal" if family == "vae" else family),
        "loss": f"{loss_name.upper()} k={k}" + "".join(f", {key}={value}" for key, value in loss_options.items()),
        "is_bound": bool(model.loss.is_bound),
        "dataset": f"{args.dataset} (dynamic binarization, source {splits.source})",
        "num_test": num_test,
        "eval_k": args.eval_k,
        **({"eval_reverse_samples": args.eval_reverse_samples} if options else {}),
        "test_nll": metrics["nll"],
        "test_nll_is_upper_bound": bool(metrics.get("log_likelihood_is_lower_bound", False)),
        "test_elbo": metrics["elbo"],
        "test_kl": metrics["kl"],
        "active_units": metrics["active_units"],
        "latent_units": metrics["latent_units"],
        # Whether importance sampling worked (vizoo.diagnostics), and a density-free row's own estimate (AVB's).
        **{key: metrics[key] for key in ("ess_mean", "pareto_k_max", "pareto_k_exceeded_fraction", "pareto_k_threshold",
                                         "proposal", "training_estimate", "training_estimate_gap",
                                         "training_estimate_gap_se", "adversary_kl") if key in metrics},
        "train_hours": sum(float(r["epoch_seconds"]) for r in rows) / 3600,
        "eval_seconds": time.perf_counter() - start,
        "machine": benchmark.machine_description(),
        "date": datetime.date.today().isoformat(),
    }
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    runs.finish_run(out)  # the result is written: the training checkpoint is no longer needed
    return result


# ------------------------------------------------------------------------------------------------ the report
def collect(results_dir):
    """Every run under results_dir: {(epochs, row, seed): {"history", "progress", "result"}}."""
    runs = {}
    if not os.path.isdir(results_dir):
        return runs
    for budget in sorted(os.listdir(results_dir)):
        if not (budget.startswith("e") and budget[1:].isdigit()):
            continue
        for name in sorted(os.listdir(os.path.join(results_dir, budget))):
            for seed_dir in sorted(os.listdir(os.path.join(results_dir, budget, name))):
                path = os.path.join(results_dir, budget, name, seed_dir)
                if not seed_dir.startswith("seed"):
                    continue
                result = None
                if os.path.exists(os.path.join(path, "result.json")):
                    with open(os.path.join(path, "result.json")) as f:
                        result = json.load(f)
                history, progress = _read_csv(os.path.join(path, "history.csv")), _read_csv(os.path.join(path, "progress.csv"))
                if result is None:  # running or stopped: what its checkpoint holds (a later epoch's rows are redone)
                    from vizoo.runs import checkpoint_epoch

                    done = checkpoint_epoch(path)
                    if done is None:  # no checkpoint: not started, or trained to the end (model.keras) and finished
                        done = len(history) if os.path.exists(os.path.join(path, "model.keras")) else 0
                    history, progress = history[:done], [p for p in progress if int(p["epoch"]) <= done]
                checks = []  # benchmarks/long_ais.py's results (AIS and importance sampling on the first test images)
                for check in sorted(os.listdir(path)):
                    if check.startswith(("ais-n", "is-n")) and check.endswith(".json"):
                        with open(os.path.join(path, check)) as f:
                            checks.append({**json.load(f), "file": check})
                runs[(int(budget[1:]), name, int(seed_dir[4:]))] = {
                    "history": history, "progress": progress, "result": result, "checks": checks,
                }
    return runs


# A row whose importance-sampled NLL lies more than this many nats above AIS's on the same test images
# (benchmarks/long_ais.py) cannot be read: the report marks it and checks its orderings by AIS. (Pareto k-hat
# alone does not decide it here: it exceeds its threshold for most of the VAE's examples too, whose importance
# sampling AIS confirms to a few tenths of a nat.)
LOOSE_NATS = 1.0


def importance_sampling_fails(run):
    """Whether AIS on the same test images shows a run's importance-sampled NLL loose by more than LOOSE_NATS."""
    return any("ais_nll" in c and c["is_nll"] - c["ais_nll"] > LOOSE_NATS for c in run.get("checks", []))


def _ais_of(runs, epochs, name):
    """{(seed, examples, steps, chains): long_ais.py's AIS result} of a row at a budget."""
    return {(seed, c["examples"], c["ais_steps"], c["ais_chains"]): c for (e, n, seed), run in runs.items()
            if (e, n) == (epochs, name) for c in run.get("checks", []) if "ais_nll" in c}


def ais_ordering(runs, epochs, better, worse, noise):
    """(better side, worse side, difference, standard error, verdict) by AIS on the same test images, for an
    ordering that has no readable k=--eval-k NLL on one side (not evaluated, or importance sampling fails for it),
    where both rows have AIS of the same settings (the largest such); None otherwise.

    The standard error combines the borrowed seed spread (of a difference of one seed each) with the spread
    of the paired per-image differences over the images measured. AIS NLLs are upper bounds in expectation,
    looser from a poor start: a difference against the published order bounds how far behind the row is."""
    a, b = _ais_of(runs, epochs, better), _ais_of(runs, epochs, worse)
    common = sorted(set(a) & set(b), key=lambda key: (key[1], key[2] * key[3]))
    if not common:
        return None
    key = common[-1]
    _, examples, steps, chains = key
    ais_a, ais_b = a[key]["ais_nll"], b[key]["ais_nll"]
    differences = [x - y for x, y in zip(a[key]["per_example"]["ais_log_likelihood"], b[key]["per_example"]["ais_log_likelihood"])]
    gain = ais_b - ais_a
    over_examples = statistics.stdev(differences) / math.sqrt(examples) if examples > 1 else float("nan")
    how = f"AIS on the first {examples:,} test images, {steps} steps x {chains} chains"
    if noise is None:
        error, ratio = None, None
    else:
        error = math.sqrt(2 * noise**2 + over_examples**2)
        ratio = gain / error
    if ratio is None:
        state = "holds" if gain > 0 else "not shown"
    else:
        state = "holds" if ratio >= 2 else "within noise" if ratio > -2 else "not shown"
    detail = "seed spread not measured" if ratio is None else f"{ratio:+.1f} standard errors, one seed"
    verdict = f"{state} by {how} ({detail})"
    if state == "not shown":
        verdict += f": {better} behind by at most about {-gain:.1f} nats (AIS overestimates an NLL, more from a poor start)"
    return (f"{better} {ais_a:.2f} (AIS)", f"{worse} {ais_b:.2f} (AIS)", gain, error, verdict)


def finished_nlls(runs):
    """{(epochs, row): [test NLL of each finished seed]}."""
    by_row = {}
    for (epochs, name, _), run in runs.items():
        if run["result"]:
            by_row.setdefault((epochs, name), []).append(run["result"]["test_nll"])
    return by_row


def seed_spread(runs):
    """{(epochs, row): (mean NLL, sample standard deviation, n)} over finished seeds (n >= 2)."""
    return {key: (statistics.mean(v), statistics.stdev(v), len(v)) for key, v in finished_nlls(runs).items() if len(v) >= 2}


def _finished_by_seed(runs):
    """{(epochs, row): {seed: test NLL}} of the finished runs whose importance sampling can be read."""
    by_row = {}
    for (epochs, name, seed), run in runs.items():
        if run["result"] and not importance_sampling_fails(run):
            by_row.setdefault((epochs, name), {})[seed] = run["result"]["test_nll"]
    return by_row


def _progress_of(runs, epochs, name):
    """How far a row is at a budget, for an ordering it cannot be checked at yet."""
    states = [run for (e, n, _), run in runs.items() if (e, n) == (epochs, name)]
    if not states:
        return f"{name} not started"
    if any(run["result"] for run in states):
        return f"{name}'s importance sampling fails" if all(importance_sampling_fails(r) for r in states) else f"{name} finished"
    done = max(len(run["history"]) for run in states)
    return f"{name} trained, not yet evaluated" if done >= epochs else f"{name} at {done} of {epochs} epochs"


def orderings(runs, noise):
    """Each published ordering at each budget where both rows have finished seeds, and at the largest budget
    every other one as not measured yet: (source, epochs, better, worse, difference, standard error, verdict).

    Rows with the same two or more seeds are compared seed by seed (a seed fixes the data order and the test
    draws of both): the mean of the paired differences against Student's t at n - 1 degrees of freedom, 95%
    two-sided. Rows with one seed each are read against the largest seed standard deviation measured (`noise`),
    sqrt(2) times it for a difference: a borrowed spread, so the verdict says "one seed".
    """
    from scipy import stats

    finished = _finished_by_seed(runs)
    budgets = sorted({e for e, _, _ in runs})
    out = []
    for better, worse, source in ORDERINGS:
        for epochs in budgets:
            a, b = finished.get((epochs, better), {}), finished.get((epochs, worse), {})
            if not (a and b):
                if epochs == budgets[-1]:
                    by_ais = ais_ordering(runs, epochs, better, worse, noise)
                    if by_ais:
                        out.append((source, epochs, *by_ais))
                        continue
                    state = f"not measured yet ({_progress_of(runs, epochs, better)}; {_progress_of(runs, epochs, worse)})"
                    out.append((source, epochs, better, worse, None, None, state))
                continue
            gain = statistics.mean(b.values()) - statistics.mean(a.values())
            paired = sorted(set(a) & set(b))
            if len(paired) >= 2 and len(paired) == len(a) == len(b):
                differences = [b[seed] - a[seed] for seed in paired]
                error = statistics.stdev(differences) / math.sqrt(len(paired))
                critical = float(stats.t.ppf(0.975, len(paired) - 1))
                t = gain / error if error > 0 else (math.copysign(math.inf, gain) if gain else 0.0)
                verdict = ("holds" if t > critical else "reversed" if t < -critical else "within seed noise") + (
                    f" (paired over {len(paired)} seeds: t = {t:.1f}, 95% needs {critical:.1f})"
                )
            elif noise is None:
                error = None
                verdict = "holds (seed spread not measured)" if gain > 0 else "does not hold (seed spread not measured)"
            else:
                error = math.sqrt(noise**2 / len(a) + noise**2 / len(b))
                seeds = "one seed" if len(a) == len(b) == 1 else "unpaired seeds"
                ratio = gain / error
                if ratio >= 2:
                    verdict = f"holds on {seeds}: {ratio:.1f} borrowed standard errors"
                elif ratio > -2:
                    verdict = f"within seed noise ({seeds}: {ratio:+.1f} borrowed standard errors)"
                else:
                    verdict = f"reversed on {seeds}: {ratio:.1f} borrowed standard errors"

            def side(name, values):
                return f"{name} {statistics.mean(values.values()):.2f} ({len(values)} seed{'s' if len(values) > 1 else ''})"

            out.append((source, epochs, side(better, a), side(worse, b), gain, error, verdict))
    return out


def _order(name):
    names = list(benchmark.MODELS)
    return names.index(name) if name in names else len(names)


def write_report(args):
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    runs = collect(args.results_dir)
    spread = seed_spread(runs)
    # The seed noise a difference is read against: the largest seed standard deviation measured.
    noise = max((sd for _, sd, _ in spread.values()), default=None)
    results = [run["result"] for run in runs.values() if run["result"]]
    eval_ks = sorted({r["eval_k"] for r in results})
    num_tests = sorted({r["num_test"] for r in results})
    lines = [
        "# Long runs: every family at a real training budget",
        "",
        "Written by `python benchmarks/long_run.py --report` from the runs of:",
        "",
        "    python benchmarks/long_run.py --preset long",
        "    python benchmarks/long_run.py --preset seeds",
        "",
        "Rows and models as in [benchmarks.md](benchmarks.md) (784-200-200-50 tanh MLPs, batch 100, Adam 1e-3,",
        "dynamically binarized training data: 50,000 training images, 10,000 held out for the validation bound);",
        "each row is one seed unless the seeds table says otherwise. Test NLL by importance sampling with",
        f"k={'/'.join(str(k) for k in eval_ks) or args.eval_k} on the {'/'.join(f'{n:,}' for n in num_tests) or 'full'} "
        "test images, one fixed binarization per seed (hierarchical rows, marked *: log q estimated with the stated",
        "K reverse samples; the weights stay unbiased, but noisier, so the NLL is looser at a given k); nats per",
        "example. Times, on a machine shared with other work (they say how long a row took there, not how fast",
        "vizoo is): train hours, the epochs' own seconds; curve hours, the test-NLL curve points'; eval minutes, the",
        "final evaluation's (its last attempt, where one was interrupted).",
        "",
    ]
    budgets = sorted({epochs for epochs, _, _ in runs})
    for epochs in budgets:
        rows = sorted(((name, seed, run) for (e, name, seed), run in runs.items() if e == epochs),
                      key=lambda item: (_order(item[0]), item[1]))
        lines += [
            f"## {epochs} epochs",
            "",
            "| model | seed | posterior | prior | loss | epochs done | test NLL | test ELBO | KL | active units "
            "| train hours | curve hours | eval minutes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, seed, run in rows:
            r = run["result"]
            curve_hours = sum(float(p["eval_seconds"] or 0) for p in run["progress"]) / 3600
            if r:
                lines.append(
                    f"| {name} | {seed} | {r['posterior']} | {r['prior']} | {r['loss']}{'' if r['is_bound'] else ' (estimate)'} "
                    f"| {r['epochs']} | {r['test_nll']:.2f}{'*' if r['test_nll_is_upper_bound'] else ''}"
                    f"{' (importance sampling fails: see AIS below)' if importance_sampling_fails(run) else ''} "
                    f"| {r['test_elbo']:.2f} | {r['test_kl']:.2f} | {r['active_units']}/{r['latent_units']} "
                    f"| {r['train_hours']:.2f} | {curve_hours:.2f} | {r['eval_seconds'] / 60:.1f} |"
                )
            else:
                done = len(run["history"])
                curve = [p for p in run["progress"] if p.get("test_nll")]
                hierarchical = benchmark.MODELS.get(name, (None,) * 4)[3] == "hierarchical"
                sample = f"k={args.curve_k}" + (f", K={args.eval_reverse_samples}" if hierarchical else "")
                last = (f"test NLL {float(curve[-1]['test_nll']):.2f}{'*' if hierarchical else ''} ({sample}, "
                        f"{args.curve_examples} examples) at epoch {curve[-1]['epoch']}" if curve else "no test point yet")
                if curve and importance_sampling_fails(run):
                    last += " (importance sampling fails: not readable)"
                hours = sum(float(p["epoch_seconds"]) for p in run["progress"]) / 3600
                measured = any("ais_nll" in c for c in run.get("checks", []))
                state = ("trained, measured by AIS (below)" if measured else "trained, not yet evaluated") if done == epochs \
                    else "not finished"
                lines.append(f"| {name} | {seed} | | | | {done} of {epochs}: {state} | {last} | | | | {hours:.2f} "
                             f"| {curve_hours:.2f} | |")
        lines.append("")
    lines += checks_section(runs)
    if spread:
        lines += ["## Seed spread", "", "| model | epochs | seeds | mean test NLL | standard deviation |", "|---|---|---|---|---|"]
        for (epochs, name), (mean, sd, n) in sorted(spread.items(), key=lambda item: (item[0][0], _order(item[0][1]))):
            lines.append(f"| {name} | {epochs} | {n} | {mean:.2f} | {sd:.2f} |")
        lines.append("")
    lines += ["## The published orderings", ""]
    lines += ["Each side is the mean over its finished seeds (the difference is worse minus better: positive where "
              "the ordering holds). Rows run with the same seeds are compared seed by seed, a paired t-test at 95%. "
              "Rows not paired so (one seed each, or other seeds) have no spread of their own: they are read against "
              "the largest seed standard deviation measured above"
              + (f" ({noise:.2f} nats, at another budget and on other families)" if noise is not None else "")
              + ", times sqrt(1/n1 + 1/n2) for a difference of means of n1 and n2 seeds (sqrt(2) for one seed each): "
              "a borrowed standard error, and the verdict says so. Such an ordering holds at 2 or more borrowed "
              "standard errors and is reversed at -2 or less: a rough rule (the spread borrowed is one estimate, from "
              "three seeds), so a verdict near 2 is suggestive, not established. A row whose importance sampling fails "
              f"(its NLL more than {LOOSE_NATS:g} nat above AIS's on the same test images) is compared by AIS, where "
              "both rows have it.", ""]
    lines += ["| ordering | budget | better | worse | difference (nats) | standard error | verdict |",
              "|---|---|---|---|---|---|---|"]
    for source, epochs, better, worse, gain, error, verdict in orderings(runs, noise):
        lines.append(f"| {source} | {epochs} | {better} | {worse} | {'' if gain is None else f'{gain:+.2f}'} | "
                     f"{'-' if error is None else f'{error:.2f}'} | {verdict} |")
    lines.append("")
    curves = write_curves(args, runs)
    if curves:
        lines += ["## Learning curves", "",
                  f"Seed 0 of each row: validation bound per epoch (left) and test NLL every {args.curve_every} epochs "
                  f"(k={args.curve_k} on {args.curve_examples} test examples; right); the CSV has every seed. Data: [{os.path.basename(curves_csv(args))}]"
                  f"({os.path.basename(curves_csv(args))}).", ""]
        lines += [f"![{group}]({os.path.basename(path)})" for group, path in curves] + [""]
    machines = sorted({f"{r['machine']} ({r['date']}, {r['dataset']}, {r['num_test']} test examples, k={r['eval_k']}"
                       + (f", eval K={r['eval_reverse_samples']}" if "eval_reverse_samples" in r else "") + ")"
                       for run in runs.values() for r in [run["result"]] if r})
    if machines:
        lines += ["The long runs' evaluations were measured on:"] + [f"- {m}" for m in machines] + [""]
    lines += pythae_section(args.pythae_results)
    benchmark.write_keeping_marked_text(args.output, "\n".join(lines))  # findings written by hand stay
    return runs


def checks_section(runs):
    """The lines of "Beside importance sampling: AIS" from benchmarks/long_ais.py's results ([] without any)."""
    rows, commands = [], {}
    for (epochs, name, seed), run in sorted(runs.items(), key=lambda item: (item[0][0], _order(item[0][1]), item[0][2])):
        for c in run.get("checks", []):
            ais = (f"{c['ais_nll']:.2f} ± {c['ais_standard_error']:.2f} ({c['ais_steps']} steps x {c['ais_chains']} "
                   f"chains, from {c['ais_proposal'].replace('_', ' ')})" if "ais_nll" in c else "")
            exceeded = c.get("is_pareto_k_exceeded_fraction")
            gap = c.get("is_training_estimate_gap")
            gap = "" if gap is None else f"{gap:+.2f} ± {c['is_training_estimate_gap_se']:.2f}"
            if gap and "ais_nll" in c:
                gap += f"; AIS {-c['ais_nll'] - c['is_training_estimate']:+.2f}"
            settings = (f"--examples {c['examples']}" + (f" --k {c['is_k']}" if c["is_k"] != 5000 else "")
                        + (f" --steps {c['ais_steps']} --chains {c['ais_chains']}" if "ais_nll" in c else " --skip-ais"))
            commands.setdefault((epochs, seed, settings), []).append(name)
            rows.append(
                f"| {name} | {epochs} | {seed} | {c['examples']:,} | {ais} | {c['is_nll']:.2f} (k={c['is_k']}) "
                f"| {c['is_ess_mean']:.1f} of {c['is_k']} | {'' if exceeded is None else f'{exceeded:.0%}'} "
                f"| {gap} "
                f"| {c['seconds'] / 60:.1f} |"
            )
    if not rows:
        return []
    return [
        "## Beside importance sampling: AIS",
        "",
        "Annealed importance sampling on the first test images (the long runs' binarization), with importance "
        "sampling repeated on the same images beside it (its mean ESS and the share of examples whose Pareto k-hat "
        f"exceeds its threshold). Where AIS's NLL lies more than {LOOSE_NATS:g} nat below importance sampling's, the "
        "row's importance-sampled NLL is not read (marked in the tables, its orderings checked by AIS). The "
        "next-to-last column is log p(x) minus the row's training estimate, by importance sampling (with its standard "
        "error) and by AIS (negative: an ELBO estimate above log p(x), which no exact ELBO can be). Written from the "
        "results of:",
        "",
        *[f"    python benchmarks/long_ais.py --models {','.join(names)} --epochs {epochs} --seed {seed} {settings}"
          for (epochs, seed, settings), names in sorted(commands.items())],
        "",
        "| model | epochs | seed | test images | AIS NLL | importance-sampled NLL | mean ESS | k-hat above threshold "
        "| log p(x) - training estimate | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def pythae_section(results_dir):
    """The lines of "Against pythae at equal budget" from benchmarks/vs_pythae_quality.py's results ([] without any)."""
    import vs_pythae_quality

    results = []
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if name.endswith(".json"):
            with open(os.path.join(results_dir, name)) as f:
                results.append(json.load(f))
    if not results:
        return []
    return [
        "## Against pythae at equal budget",
        "",
        "The same 784-200-200-50 IWAE-5 trained by vizoo and by pythae, each from its own defaults, and both",
        "evaluated by one evaluator (k=5000, the same test draws); per seed, and the mean difference with its",
        "standard deviation over seeds. Both train on all 60,000 training images (the long runs above hold",
        "10,000 out for their validation bound, so vizoo's IWAE-5 here is not the table's row). Written from the",
        "results of:",
        "",
        "    python benchmarks/vs_pythae_quality.py --pythae-python PY --seeds 0,1,2 --epochs 10,100",
        "",
        vs_pythae_quality.report(results),
        "",
        "Measured on (each result's machine, date and TensorFlow threads; results without them were written before "
        "the script recorded them, on the same machine as the long runs):",
        *sorted({f"- {r['machine']} ({r['date']}, {r['threads']} threads)" if "machine" in r
                 else "- not recorded" for r in results}),
        "",
    ]


def curves_csv(args):
    """The learning curves' CSV, beside the report (docs/benchmarks_long_curves.csv by default)."""
    return os.path.splitext(os.path.abspath(args.output))[0] + "_curves.csv"


def write_curves(args, runs):
    """The curves' CSV (every run's epochs) and one PNG per family group beside the report; returns [(group, png)]."""
    table = []
    for (epochs, name, seed), run in sorted(runs.items()):
        tests = {int(p["epoch"]): p.get("test_nll") for p in run["progress"]}
        for i, row in enumerate(run["history"], start=1):
            table.append({"budget": epochs, "model": name, "seed": seed, "epoch": i, "loss": row.get("loss"),
                          "val_loss": row.get("val_loss"), "test_nll": tests.get(i) or ""})
    if not table:
        return []
    _write_csv(curves_csv(args), table, list(table[0]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for epochs in sorted({e for e, _, _ in runs}):
        drawn = set()
        for group, names in CURVE_GROUPS.items():
            present = [n for n in names if (epochs, n, 0) in runs and runs[(epochs, n, 0)]["history"]]
            if not set(present) - drawn:  # nothing of the group's own yet (the VAE is every group's reference)
                continue
            drawn.update(present)
            fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
            for name in present:
                run = runs[(epochs, name, 0)]
                bound = [-float(r["val_loss"]) for r in run["history"] if r.get("val_loss")]
                left.plot(range(1, len(bound) + 1), bound, label=name)
                points = [(int(p["epoch"]), float(p["test_nll"])) for p in run["progress"] if p.get("test_nll")]
                if points:
                    right.plot(*zip(*points), marker="o", label=name)
            left.set(xlabel="epoch", ylabel="validation bound (nats)", title=f"{group}: validation bound")
            right.set(xlabel="epoch", ylabel="test NLL (nats)", title=f"test NLL (k={args.curve_k})")
            for axis in (left, right):
                axis.grid(alpha=0.3)
                axis.legend(fontsize=8)
            fig.tight_layout()
            path = os.path.join(os.path.dirname(os.path.abspath(args.output)), f"long_e{epochs}_{group}.png")
            fig.savefig(path, dpi=80)
            plt.close(fig)
            written.append((f"{group}, {epochs} epochs", path))
    return written


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    models, epochs, seeds = resolve(args)
    if args.run_one:
        train_one(args.run_one, seeds[0], epochs, args)
        return 0
    if not args.report:
        passthrough = [a for a in argv if a != "--in-process"]
        for name in models:
            for seed in seeds:
                if os.path.exists(os.path.join(run_dir(args.results_dir, epochs, name, seed), "result.json")):
                    print(f"{name} seed {seed}: finished, skipped", flush=True)
                    continue
                if args.in_process:
                    train_one(name, seed, epochs, args)
                else:
                    subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--run-one", name,
                                    "--models", name, "--seeds", str(seed), "--epochs", str(epochs)], check=True)
    write_report(args)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
