"""How tight is a trained hierarchical posterior's log q estimate with its learned tau, against SIVI's? (issue 25)

The tractable model of tests/ppca.py with a non-orthogonal W (the exact posterior p(z|x) has a full
covariance, so a hierarchical q uses psi to correlate z's coordinates): pPCA decoder frozen,
2-D z, HierarchicalPosterior(2, aux_dim=2, hidden_units=[8], reverse_hidden_units=[8]) trained
jointly with IWHVILoss(k=1, num_reverse_samples=--train-reverse-samples) for --steps steps
(batch 100 of 400 examples, Adam --learning-rate), one run per (tau parameterization, tau
gradient estimator, seed). Then, on --num-eval examples with --num-z draws z ~ q(z|x) each:

    gap_K(tau)  = mean [log q^_K(z|x) with the learned tau - log q(z|x)],
    gap_K(SIVI) = mean [log q^_K(z|x) with tau = q(psi|x)  - log q(z|x)]   (the same model, z and psi_0),

for K = 0, 1, 10 (both are upper bounds on log q in expectation: the smaller gap is the tighter
estimate). log q(z|x) itself is logmeanexp over --truth-samples draws psi ~ q(psi|x) of
log q(z|psi, x) (psi is 2-D: 100,000 draws; its Monte-Carlo error is printed). The difference
gap_K(tau) - gap_K(SIVI) = log q^_K(tau) - log q^_K(SIVI) needs no truth: it is also measured on
all 400 training examples with --num-z-paired draws each (mean and standard error; negative: tau
is tighter), which resolves differences the truth's smaller set cannot. Command:

    nice -n 19 python benchmarks/hierarchical_tau.py --seeds 0,1,2,3,4
"""

import argparse
import os
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

EVAL_REVERSE_SAMPLES = (0, 1, 10)
# name: (reverse_residual, gradient_estimator)
VARIANTS = {
    "residual+dreg (default)": (True, "auto"),
    "residual+plain": (True, "plain"),
    "direct+dreg": (False, "dreg"),
    "direct+plain (before #25)": (False, "plain"),
}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument(
        "--control-learning-rate", type=float, default=None, help="tau's own Adam rate (default: --learning-rate, one optimizer)"
    )
    parser.add_argument("--train-reverse-samples", type=int, default=10)
    parser.add_argument("--num-eval", type=int, default=200)
    parser.add_argument("--num-z", type=int, default=4)
    parser.add_argument("--num-z-paired", type=int, default=25)
    parser.add_argument("--truth-samples", type=int, default=100_000)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    return parser


def trained_model(residual, estimator, seed, steps, learning_rate, train_reverse_samples, control_learning_rate=None):
    """(model, x): the pPCA-decoder VAE with a hierarchical q, trained jointly with IWHVI for `steps` steps."""
    import vizoo  # noqa: F401  (first: it filters TensorFlow's start-up notices)
    import keras
    import tensorflow as tf

    from tests import ppca
    from vizoo.layers import HierarchicalPosterior
    from vizoo.losses import IWHVILoss

    weights, bias = ppca.ppca_parameters(orthogonal=False)
    x = ppca.sample_data(400, weights, bias)
    keras.utils.set_random_seed(seed)
    posterior = HierarchicalPosterior(
        2, aux_dim=2, hidden_units=[8], reverse_hidden_units=[8], reverse_residual=residual, name="posterior"
    )
    model = ppca.ppca_decoder_vae(weights, bias, posterior, seed=seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=IWHVILoss(k=1, num_reverse_samples=train_reverse_samples, gradient_estimator=estimator),
        steps_per_execution=50,
        group_optimizers=None if control_learning_rate is None else {"control": keras.optimizers.Adam(control_learning_rate)},
    )
    data = tf.data.Dataset.from_tensor_slices(x).shuffle(400, seed=seed).repeat().batch(100)
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return model, x


def log_q_estimates(model, x, num_z, seed):
    """(z `[n, num_z, d]`, {(K, "tau" | "sivi"): log q^_K(z|x) `[n * num_z]`}), the same z and psi_0 throughout."""
    import numpy as np

    posterior = model.posterior
    a, d = posterior.aux_dim, posterior.latent_dim
    largest = max(EVAL_REVERSE_SAMPLES)
    eps = np.random.default_rng(seed).standard_normal((len(x), num_z, a + d + largest * a)).astype("float32")
    params = model.encode(x)
    estimates = {}
    for K in EVAL_REVERSE_SAMPLES:
        noise = eps[..., : a + d + K * a]  # nested: the same z and psi_0 for every K and both taus
        for reverse_model in ("learned", "sivi"):
            z, log_q = posterior.transform(params, noise, K, reverse_model=reverse_model)
            estimates[K, "tau" if reverse_model == "learned" else "sivi"] = np.asarray(log_q, "float64").reshape(-1)
    return np.asarray(z), estimates


def log_q_gaps(model, x, num_z, truth_samples, seed, chunk=20_000):
    """{(K, "tau" | "sivi"): per-z gaps `[n * num_z]`} and the truth's Monte-Carlo standard error (max over z)."""
    import numpy as np
    from keras import ops

    from vizoo.layers.conditional_gaussian import ConditionalGaussian

    posterior = model.posterior
    a = posterior.aux_dim
    z, estimates = log_q_estimates(model, x, num_z, seed)
    rng = np.random.default_rng(seed + 1)
    params = model.encode(x)
    # The truth: log q(z|x) = log E_{psi ~ q(psi|x)} q(z|psi, x), by Monte Carlo in chunks of psi.
    truth, standard_error = [], []
    for i in range(len(x)):
        features = params["features"][i : i + 1]
        log_terms = []
        for start in range(0, truth_samples, chunk):
            size = min(chunk, truth_samples - start)
            psi = params["psi_loc"][i] + ops.exp(params["psi_log_scale"][i]) * rng.standard_normal((1, size, a)).astype("float32")
            conditional = posterior.conditional(features, psi)  # [1, size, d]
            conditional = {key: value[:, None] for key, value in conditional.items()}  # [1, 1, size, d]
            log_terms.append(np.asarray(ConditionalGaussian.log_prob(z[i : i + 1, :, None, :], conditional), "float64")[0])
        log_terms = np.concatenate(log_terms, axis=-1)  # [num_z, M]
        top = log_terms.max(axis=-1, keepdims=True)
        weights = np.exp(log_terms - top)
        mean = weights.mean(axis=-1)
        truth.append(np.log(mean) + top[:, 0])
        # delta method: sd(log mean) ~ sd(w) / (sqrt(M) mean)
        standard_error.append(weights.std(axis=-1) / (np.sqrt(weights.shape[-1]) * mean))
    truth = np.concatenate(truth)
    return {key: value - truth for key, value in estimates.items()}, float(np.max(np.concatenate(standard_error)))


def main(argv=None):
    import numpy as np

    args = build_parser().parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"Unknown variant(s) {unknown}. Expected names from {list(VARIANTS)}. Received: variants={args.variants!r}")
    results = {}  # (variant, seed) -> {(K, which): mean gap}
    worst_error = 0.0
    for variant in variants:
        residual, estimator = VARIANTS[variant]
        for seed in seeds:
            model, x = trained_model(
                residual, estimator, seed, args.steps, args.learning_rate, args.train_reverse_samples, args.control_learning_rate
            )
            gaps, error = log_q_gaps(model, x[: args.num_eval], args.num_z, args.truth_samples, seed + 1000)
            worst_error = max(worst_error, error)
            results[variant, seed] = {key: (float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))) for key, v in gaps.items()}
            _, estimates = log_q_estimates(model, x, args.num_z_paired, seed + 2000)
            for K in EVAL_REVERSE_SAMPLES:
                difference = estimates[K, "tau"] - estimates[K, "sivi"]
                results[variant, seed][K, "difference"] = (
                    float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))
                )
            print(
                f"{variant}, seed {seed}: "
                + ", ".join(
                    f"K={K} tau {results[variant, seed][K, 'tau'][0]:.3f} sivi {results[variant, seed][K, 'sivi'][0]:.3f} "
                    f"(tau - sivi {results[variant, seed][K, 'difference'][0]:+.4f} +- {results[variant, seed][K, 'difference'][1]:.4f})"
                    for K in EVAL_REVERSE_SAMPLES
                ),
                flush=True,
            )
    print()
    print(
        f"Gap to the exact log q(z|x) (nats, mean over {args.num_eval} x {args.num_z} z; smaller is tighter) after "
        f"{args.steps} joint IWHVI steps (k=1, K={args.train_reverse_samples}, batch 100, Adam {args.learning_rate}); "
        f"truth by {args.truth_samples} psi draws, Monte-Carlo s.e. <= {worst_error:.4f} per z."
    )
    print()
    print(
        f"tau - SIVI: log q^_K(tau) - log q^_K(SIVI) on 400 x {args.num_z_paired} z (mean +- standard error; negative: "
        "tau tighter); bold: tau tighter by more than 2 standard errors."
    )
    print()
    header = "| tau | seed | " + " | ".join(f"K={K}: tau | SIVI | tau - SIVI" for K in EVAL_REVERSE_SAMPLES) + " |"
    print(header)
    print("|" + "---|" * (2 + 3 * len(EVAL_REVERSE_SAMPLES)))
    for variant in variants:
        for seed in seeds:
            r = results[variant, seed]
            cells = []
            for K in EVAL_REVERSE_SAMPLES:
                tau, sivi = r[K, "tau"][0], r[K, "sivi"][0]
                difference, error = r[K, "difference"]
                tighter = difference < -2 * error
                cells += [f"{tau:.3f}", f"{sivi:.3f}", f"**{difference:+.4f}** +- {error:.4f}" if tighter else f"{difference:+.4f} +- {error:.4f}"]
            print(f"| {variant} | {seed} | " + " | ".join(cells) + " |")
        means = {key: np.mean([results[variant, s][key][0] for s in seeds]) for key in results[variant, seeds[0]]}
        wins = {
            K: sum(results[variant, s][K, "difference"][0] < -2 * results[variant, s][K, "difference"][1] for s in seeds)
            for K in EVAL_REVERSE_SAMPLES
        }
        print(
            f"| {variant} | mean (seeds tau tighter) | "
            + " | ".join(
                f"{means[K, 'tau']:.3f} | {means[K, 'sivi']:.3f} | {means[K, 'difference']:+.4f} ({wins[K]}/{len(seeds)})"
                for K in EVAL_REVERSE_SAMPLES
            )
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
