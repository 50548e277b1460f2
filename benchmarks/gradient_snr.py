"""Encoder gradient signal-to-noise ratio of IWAE and DReG at k = 1, 5, 50; writes docs/benchmarks_dreg.md.

Rainforth et al. (2018) showed that the IWAE bound's reparameterized gradient for the encoder
gets *noisier* relative to its size as k grows (SNR ~ 1/sqrt(k)), while the decoder's gets
cleaner; Tucker et al.'s (2019) doubly reparameterized estimator (DReG) removes the score-function
term responsible, so its encoder SNR grows with k instead.

For each trained model (the `.keras` files `benchmarks/benchmark.py` leaves in its results
directory) and an untrained one of the same architecture, on one fixed batch of test data, the
script draws `--draws` independent gradient estimates of the batch-mean objective for every k,
and reports per parameter SNR_i = |mean_i| / std_i, summarised over the parameters by the
median and the mean (parameters whose every estimate is zero are left out). Both estimators are
computed from the same samples in each draw: the plain IWAE gradient of the bound and the DReG
surrogate of `IWAELoss(k, gradient_estimator="dreg")` (at k = 1 DReG is STL). The decoder's
SNR is the same for both (it always follows the bound).

    python benchmarks/benchmark.py --epochs 5 --num-test 2000 --models dreg \
        --results-dir benchmarks/results/dreg --output docs/benchmarks_dreg_nll.md
    python benchmarks/gradient_snr.py --results-dir benchmarks/results/dreg
"""

import argparse
import glob
import json
import os
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERMS = ("log_px_z", "log_pz", "log_qz", "log_qz_detached")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default=os.path.join(REPO, "benchmarks", "results", "dreg"))
    parser.add_argument("--models", default="iwae50,iwae50_dreg", help="comma-separated result names in --results-dir")
    parser.add_argument("--ks", default="1,5,50", help="comma-separated numbers of importance samples")
    parser.add_argument("--draws", type=int, default=500, help="gradient estimates per (model, k)")
    parser.add_argument("--batch-size", type=int, default=100, help="test examples in the fixed batch")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "benchmarks_dreg.md"))
    return parser


def gradient_draws(model, x, k, draws, seed):
    """[draws, P] arrays of (plain IWAE encoder, DReG encoder, decoder) gradients of the batch-mean objective."""
    import vizoo  # noqa: F401  (first: it filters TensorFlow's start-up notices)
    import keras
    import numpy as np
    import tensorflow as tf

    from vizoo.losses import IWAELoss

    loss = IWAELoss(k=k, gradient_estimator="dreg")
    groups = model.gradient_groups()
    encoder, decoder = groups["inference"], groups["generative"]
    generator = keras.random.SeedGenerator(seed)

    def flat(gradients):
        return tf.concat([tf.reshape(g, [-1]) for g in gradients], axis=0)

    @tf.function
    def one_draw():
        with tf.GradientTape(persistent=True) as tape:
            terms = model.sample_terms(x, k, seed=generator, terms=TERMS)
            plain = -tf.reduce_mean(loss.bound(terms))
            dreg = loss.group_losses(terms)["inference"]
        return flat(tape.gradient(plain, encoder)), flat(tape.gradient(dreg, encoder)), flat(tape.gradient(plain, decoder))

    samples = [[], [], []]
    for _ in range(draws):
        for store, value in zip(samples, one_draw()):
            store.append(value.numpy().astype(np.float64))
    return [np.stack(values) for values in samples]


def snr_summary(draws):
    """(median, mean) over parameters of |mean| / std across draws, and the parameters counted."""
    import numpy as np

    mean, std = draws.mean(axis=0), draws.std(axis=0, ddof=1)
    kept = std > 0
    snr = np.abs(mean[kept]) / std[kept]
    return float(np.median(snr)), float(np.mean(snr)), int(kept.sum())


def measure(model, x, args):
    rows = []
    for k in (int(k) for k in args.ks.split(",")):
        plain, dreg, decoder = gradient_draws(model, x, k, args.draws, args.seed + k)
        rows.append({"k": k, "iwae_encoder": snr_summary(plain), "dreg_encoder": snr_summary(dreg), "decoder": snr_summary(decoder)})
        print(f"  k={k}: encoder SNR IWAE {rows[-1]['iwae_encoder'][0]:.4f}, DReG {rows[-1]['dreg_encoder'][0]:.4f}; "
              f"decoder {rows[-1]['decoder'][0]:.4f} (medians)", flush=True)
    return rows


def main(argv=None):
    args = build_parser().parse_args(argv)
    import vizoo  # noqa: F401  (first: it filters TensorFlow's start-up notices)
    import keras

    import vizoo

    splits = vizoo.data.load(args.dataset, batch_size=args.batch_size, binarization="dynamic", seed=args.seed,
                             data_dir=args.data_dir, validation_size=0)
    x = next(iter(splits.test))
    x = x[0] if isinstance(x, tuple) else x
    results, nll = {}, {}
    for name in [n for n in args.models.split(",") if n]:
        path = os.path.join(args.results_dir, f"{name}.keras")
        if not os.path.exists(path):
            raise SystemExit(f"No trained model at {path}: run benchmarks/benchmark.py --models dreg first (see --help).")
        print(f"{name} (trained):", flush=True)
        model = keras.models.load_model(path)
        results[f"{name} (trained)"] = measure(model, x, args)
        with open(os.path.join(args.results_dir, f"{name}.json")) as f:
            nll[name] = json.load(f)
    keras.utils.set_random_seed(args.seed)
    untrained = type(model).from_config(model.get_config())  # the last model's architecture, new weights
    untrained.initialize_output_bias(splits.train_mean)
    print("untrained:", flush=True)
    results["untrained"] = measure(untrained, x, args)
    write_report(args, results, nll, argv if argv is not None else sys.argv[1:])
    print(f"wrote {args.output}")
    return 0


def write_report(args, results, nll, argv):
    command = "python benchmarks/gradient_snr.py " + " ".join(argv)
    lines = [
        "# IWAE-50 with and without DReG: test NLL and encoder gradient SNR",
        "",
        "Written by `benchmarks/benchmark.py --models dreg` (training and NLL) and",
        f"`benchmarks/gradient_snr.py` (SNR). Command: `{command.strip()}`",
        "",
        "## Test NLL at equal epochs",
        "",
        "| model | bound | epochs | test NLL | test ELBO | test IWAE-50 | active units | train ex/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in nll.items():
        lines.append(
            f"| {name} | {r['loss']} | {r['epochs']} | {r['test_nll']:.2f} | {r['test_elbo']:.2f} | {r['test_iwae_k']:.2f} "
            f"| {r['active_units']}/50 | {r['train_examples_per_second']:.0f} |"
        )
    if nll:
        r = next(iter(nll.values()))
        lines += ["", f"Budget: {r['dataset']}, {r['num_train']} training examples, NLL with k={r['eval_k']} on the "
                  f"first {r['num_test']} test examples; {r['machine']}."]
    lines += [
        "",
        "## Gradient signal-to-noise ratio (Rainforth et al. 2018)",
        "",
        f"One fixed batch of {args.batch_size} test examples; {args.draws} independent estimates of the gradient of the",
        "batch-mean objective per cell; SNR_i = |mean_i| / std_i per parameter, given as median (mean) over the",
        "encoder's (or decoder's) parameters. IWAE: the plain reparameterized gradient of the bound;",
        "DReG: the doubly reparameterized encoder gradient (STL at k = 1), from the same samples.",
        "",
        "| model | k | encoder SNR, IWAE | encoder SNR, DReG | DReG / IWAE | decoder SNR |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for row in rows:
            (iwae_median, iwae_mean, _), (dreg_median, dreg_mean, _) = row["iwae_encoder"], row["dreg_encoder"]
            lines.append(
                f"| {name} | {row['k']} | {iwae_median:.4f} ({iwae_mean:.4f}) | {dreg_median:.4f} ({dreg_mean:.4f}) "
                f"| {dreg_median / iwae_median:.2f} | {row['decoder'][0]:.4f} ({row['decoder'][1]:.4f}) |"
            )
    lines.append("")
    with open(args.output, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
