"""AVB at the long runs' settings and at the paper's: is the gap to the VAE the learning rate or the estimator?

Trains benchmarks/benchmark.py's `avb` row (the IWAE paper's 784-200-200-50 architecture, the
adaptive-contrast sampler and its adversary, dynamically binarized Fashion-MNIST, batch 100) with
one of the VARIANTS below, and every `--curve-every` epochs measures what benchmarks/long_run.py's
curves measure: the test NLL with k=`--curve-k` importance samples (the Gaussian proposal fitted to
q's samples) on the first `--curve-examples` test examples, beside the training loss (the negated
ELBO estimate) and the adversary's logistic loss. One CSV per variant in `--output-dir`, then a table:

    nice -n 19 python benchmarks/avb_settings.py --variants paper_lr,two_adversary_steps --epochs 20
    python benchmarks/avb_settings.py --table --variants long_run,paper_lr,two_adversary_steps

The `long_run` variant is the long runs' own setting (Adam 1e-3, the adversary's 2e-3 with beta_1 0.5,
one adversary step per step): its curve is also in benchmarks/results/long/e100/avb/seed0/progress.csv.
"""

import argparse
import csv
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import benchmark  # noqa: E402  (the row, its model and the data settings)

# name: (main learning rate, adversary steps per step, note). The adversary's learning rate stays
# benchmark.ADVERSARY_LR_FACTOR times the main one, with beta_1 = benchmark.ADVERSARY_BETA_1.
VARIANTS = {
    "long_run": (1e-3, 1, "the long runs' setting: Adam 1e-3, adversary 2e-3, one adversary step"),
    "paper_lr": (1e-4, 1, "Mescheder et al.'s learning rate: Adam 1e-4, adversary 2e-4"),
    "two_adversary_steps": (1e-3, 2, "Adam 1e-3, two adversary steps per sampler step"),
}
FIELDS = ["epoch", "loss", "adversary_loss", "test_nll", "test_elbo", "test_kl", "active_units", "seconds"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="paper_lr,two_adversary_steps")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curve-every", type=int, default=10)
    parser.add_argument("--curve-k", type=int, default=1000)
    parser.add_argument("--curve-examples", type=int, default=1000)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output-dir", default=os.path.join(HERE, "results", "avb_settings"))
    parser.add_argument("--table", action="store_true", help="only print the table from the CSVs")
    return parser


def train_variant(name, args):
    import vizoo
    from vizoo import evaluate

    learning_rate, adversary_steps, _ = VARIANTS[name]
    splits = vizoo.data.load(args.dataset, batch_size=benchmark.BATCH_SIZE, binarization="dynamic", seed=args.seed,
                             data_dir=args.data_dir)
    # The row's model, loss and adversary optimizer (ADVERSARY_LR_FACTOR times the learning rate).
    model = benchmark.build_model("avb", splits, args.seed, learning_rate=learning_rate,
                                  extra_loss_options={"adversary_steps": adversary_steps})
    curve_data = splits.test.unbatch().take(args.curve_examples).batch(benchmark.BATCH_SIZE)
    path = os.path.join(args.output_dir, f"{name}.csv")
    rows = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        logs = model.fit(splits.train, initial_epoch=epoch - 1, epochs=epoch, verbose=0).history
        row = {"epoch": epoch, "loss": logs["loss"][-1], "adversary_loss": logs["adversary_loss"][-1],
               "seconds": round(time.perf_counter() - start, 2)}
        if epoch % args.curve_every == 0 or epoch == args.epochs:
            metrics = evaluate.log_likelihood(model, curve_data, k=args.curve_k, seed=args.seed)
            row.update(test_nll=metrics["nll"], test_elbo=metrics["elbo"], test_kl=metrics["kl"],
                       active_units=metrics["active_units"])
        rows.append(row)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"{name} epoch {epoch}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "epoch" and v is not None),
              flush=True)


def table(args, names):
    lines = ["| variant | setting | epoch | training loss (-ELBO estimate) | adversary loss | test NLL | test ELBO (proposal's) | KL | active units |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        path = os.path.join(args.output_dir, f"{name}.csv")
        if name == "long_run" and not os.path.exists(path):
            continue
        with open(path) as f:
            for row in csv.DictReader(f):
                if row["test_nll"]:
                    lines.append(f"| {name} | {VARIANTS[name][2]} | {row['epoch']} | {float(row['loss']):.2f} "
                                 f"| {float(row['adversary_loss']):.3f} | {float(row['test_nll']):.2f} "
                                 f"| {float(row['test_elbo']):.2f} | {float(row['test_kl']):.2f} | {row['active_units']} |")
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    names = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not names:
        raise SystemExit(f"--variants must name some of {sorted(VARIANTS)}. Received: {args.variants!r}")
    for flag in ("epochs", "curve_every", "curve_k", "curve_examples"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')} must be a positive integer. Received: {getattr(args, flag)}")
    os.makedirs(args.output_dir, exist_ok=True)
    if not args.table:
        for name in names:
            train_variant(name, args)
    print(table(args, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
