"""Active units and KL per latent unit, epoch by epoch: the collapse of hierarchical posteriors (issue 25).

Trains benchmarks/benchmark.py's architecture (784-200-200-50 tanh MLPs, Bernoulli p(x|z),
batch 100, Adam 1e-3, dynamically binarized Fashion-MNIST) with one of the RUNS below and,
after every epoch, measures on a fixed set of test examples (one binarization, fixed by seed):

- `active_units`: units u with Cov_x(E_q[z_u|x]) > 0.01 (Burda et al.); for a hierarchical q,
  E_q[z|x] = E_{psi~q(psi|x)} mu(psi, x), by Monte Carlo over `--psi-samples` draws of psi;
- `kl_u<u>`: KL(q(z_u|x) || N(0, 1)) per unit, averaged over x. Diagonal q: closed form.
  Hierarchical q: the marginal q(z_u|x) = E_psi N(z_u; mu_u(psi, x), sigma_u(psi, x)^2) is a
  one-dimensional mixture; with S = `--psi-samples` draws psi_s and one z_su from each component,
  KL_u ~ mean_s [logmeanexp_s' log N(z_su; mu_s'u, sigma_s'u) - log N(z_su; 0, 1)] (an upper
  bound in expectation, the SIVI bound in one dimension; S = 50 in one dimension is close);
- `kl`: the total KL(q(z|x) || p(z)) by Monte Carlo, with the posterior's log q estimate at
  K = `--eval-reverse-samples` (an upper bound in expectation for a hierarchical q);
- `elbo`: E_q[log p(x|z) + log p(z) - log q^(z|x)] with the same estimate (K reverse samples);
- `slack` (hierarchical): mean of log q^_0 - log q^_K at the same z, the part of the HVM bound's
  gap E KL(q(psi|z, x) || tau(psi|z, x)) that K reverse samples remove: how much the reverse
  model's slack costs an HVM-trained model (a lower estimate of that KL, which it equals at K = inf).

One CSV per run, `<output-dir>/<run>.csv` (a row per epoch), then a summary table on stdout:

    nice -n 19 python benchmarks/active_units.py --runs diagonal,hvm,iwhvi10 --epochs 20
    python benchmarks/active_units.py --table --runs diagonal,hvm,iwhvi10   # the table from the CSVs
"""

import argparse
import csv
import math
import os
import sys
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

LATENT_DIM, HIDDEN = 50, [200, 200]  # as benchmarks/benchmark.py
BATCH_SIZE, LEARNING_RATE = 100, 1e-3
STEPS_PER_EXECUTION = 10
HIERARCHICAL = {"aux_dim": 10, "hidden_units": [200], "reverse_hidden_units": [200]}  # as benchmark.py's rows
FIXED_PSI = "fixed_psi"  # a run option, not the posterior's: q(psi|x) held at N(0, I) (zero, untrained heads)
# A run option: no encoder layers of x alone (VAE hidden_units=[]; the decoder keeps HIDDEN), so the posterior
# takes x itself and psi enters every layer that x does, as in Sobolev & Vetrov's q(z|psi, x).
PSI_EVERY_LAYER = "psi_every_layer"
RUN_OPTIONS = (FIXED_PSI, PSI_EVERY_LAYER)
ACTIVE_THRESHOLD = 0.01

# name: (posterior options or None for the diagonal Gaussian, loss name, loss options, K ramp start or None,
#        note). Loss "elbo" on a hierarchical posterior with num_reverse_samples=0 is HVM (log q^_0), which is
#        how KL warm-up is applied to HVM (ELBOLoss reads the model's kl_weight; HVMLoss has no warm-up).
RUNS = {
    "diagonal": (None, "elbo", {}, None, "diagonal Gaussian q, ELBO"),
    "diagonal_warmup": (None, "elbo", {"kl_warmup_epochs": 10}, None, "diagonal Gaussian q, ELBO, KL warm-up over 10 epochs"),
    "hvm": ({**HIERARCHICAL, "reverse_residual": False}, "hvm", {}, None, "HVM, tau unrelated to q(psi|x) (before #25)"),
    "iwhvi10": (
        {**HIERARCHICAL, "reverse_residual": False},
        "iwhvi",
        {"num_reverse_samples": 10, "gradient_estimator": "plain"},
        None,
        "IWHVI K=10, plain tau gradient, tau unrelated to q(psi|x) (before #25)",
    ),
    "hvm_residual": ({**HIERARCHICAL, "reverse_residual": True}, "hvm", {}, None, "HVM, residual tau (tau = q(psi|x) at init)"),
    "iwhvi10_default": (
        {**HIERARCHICAL, "reverse_residual": True},
        "iwhvi",
        {"num_reverse_samples": 10, "gradient_estimator": "dreg"},
        None,
        "IWHVI K=10, defaults after #25: residual tau, DReG",
    ),
    "hvm_warmup": (
        {**HIERARCHICAL, "reverse_residual": True, "num_reverse_samples": 0},
        "elbo",
        {"kl_warmup_epochs": 10},
        None,
        "HVM, residual tau, KL warm-up over 10 epochs",
    ),
    "hvm_psi50": (
        {**HIERARCHICAL, "aux_dim": 50, "reverse_residual": True},
        "hvm",
        {},
        None,
        "HVM, residual tau, psi of 50 dimensions",
    ),
    "iwhvi10_fixed_psi": (  # the IWHVI paper's q(psi) = N(0, I), psi of z's size (its code's noise_dim = z_dim)
        {**HIERARCHICAL, "aux_dim": LATENT_DIM, "reverse_residual": True, FIXED_PSI: True},
        "iwhvi",
        {"num_reverse_samples": 10, "gradient_estimator": "dreg"},
        None,
        "IWHVI K=10, defaults, q(psi|x) fixed at N(0, I) (Sobolev & Vetrov's q(psi)), psi of 50 dimensions",
    ),
    "iwhvi10_psi_every_layer": (  # the IWHVI paper's encoder: q(psi) = N(0, I), psi enters each of x's layers
        {
            **HIERARCHICAL,
            "aux_dim": LATENT_DIM,
            "hidden_units": HIDDEN,
            "reverse_hidden_units": HIDDEN,
            "reverse_residual": True,
            FIXED_PSI: True,
            PSI_EVERY_LAYER: True,
        },
        "iwhvi",
        {"num_reverse_samples": 10, "gradient_estimator": "dreg"},
        None,
        "IWHVI K=10, Sobolev & Vetrov's encoder: q(psi) = N(0, I) with psi of 50 dimensions entering both of "
        "q(z|psi, x)'s layers of x, and tau's layers taking x and z",
    ),
    "iwhvi50_ramp": (
        {**HIERARCHICAL, "reverse_residual": True},
        "iwhvi",
        {"num_reverse_samples": 50, "gradient_estimator": "dreg"},
        10,
        "IWHVI, residual tau, DReG, K from 10 to 50 linearly",
    ),
}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="diagonal,hvm,iwhvi10", help=f"comma-separated, from {list(RUNS)}")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num-train", type=int, default=None, help="train on the first N training examples")
    parser.add_argument("--num-test", type=int, default=1000, help="test examples the per-epoch statistics use")
    parser.add_argument("--psi-samples", type=int, default=50, help="draws of psi per x for E[z|x] and KL per unit")
    parser.add_argument("--eval-reverse-samples", type=int, default=100, help="K of the log q estimate of kl, elbo, slack")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=os.path.join(REPO, "benchmarks", "results", "active_units"))
    parser.add_argument("--table", action="store_true", help="print the table from existing CSVs, train nothing")
    return parser


def unit_statistics(model, x, psi_samples, eval_reverse_samples, seed):
    """Per-epoch statistics of `model` on x `[n, input_dim]` (see the module docstring)."""
    import vizoo  # noqa: F401  (first: it filters TensorFlow's start-up notices)
    import keras
    import numpy as np
    from keras import ops

    from vizoo.losses.bound_loss import logmeanexp

    posterior = model.posterior
    hierarchical = hasattr(posterior, "reverse_log_weights")
    rng = np.random.default_rng(seed)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    means, kl_units, kl, elbo, slack = [], [], [], [], []
    for start in range(0, len(x), BATCH_SIZE):
        xb = x[start : start + BATCH_SIZE]
        params = model.encode(xb)
        if hierarchical:
            a, d = posterior.aux_dim, posterior.latent_dim
            e_psi = rng.standard_normal((len(xb), psi_samples, a)).astype("float32")
            psi = params["psi_loc"][:, None, :] + ops.exp(params["psi_log_scale"])[:, None, :] * e_psi
            conditional = posterior.conditional(params["features"], psi)
            loc = ops.convert_to_numpy(conditional["loc"])  # [b, S, d]
            scale = np.exp(ops.convert_to_numpy(conditional["log_scale"]))
            means.append(loc.mean(axis=1))
            z = loc + scale * rng.standard_normal(loc.shape).astype("float32")  # z_su from component s
            # log N(z_su; mu_s'u, sigma_s'u): [b, S (z), S' (component), d]
            log_n = (
                -0.5 * np.square((z[:, :, None, :] - loc[:, None, :, :]) / scale[:, None, :, :])
                - np.log(scale[:, None, :, :])
                - half_log_2pi
            )
            log_q = ops.convert_to_numpy(logmeanexp(ops.convert_to_tensor(log_n), axis=2))  # [b, S, d]
            log_p = -0.5 * np.square(z) - half_log_2pi
            kl_units.append((log_q - log_p).mean(axis=1))
            # One z per x (its own psi_0), K reverse samples: log q^_0 and log q^_K at the same z.
            noise = keras.random.normal((len(xb), 1, posterior.noise_size(eval_reverse_samples)), seed=int(rng.integers(2**31)))
            z1, log_v = posterior.reverse_log_weights(params, noise, eval_reverse_samples)
            log_q_k = logmeanexp(log_v, axis=-1)[:, 0]
            slack.append(ops.convert_to_numpy(log_v[:, 0, 0] - log_q_k))
        else:
            loc = ops.convert_to_numpy(params["loc"])
            log_scale = ops.convert_to_numpy(params["log_scale"])
            means.append(loc)
            kl_units.append(0.5 * (np.square(loc) + np.exp(2 * log_scale) - 1.0) - log_scale)
            noise = keras.random.normal((len(xb), 1, d := posterior.latent_dim), seed=int(rng.integers(2**31)))
            z1, log_q = posterior.transform(params, noise)
            log_q_k = log_q[:, 0]
        joint = model.joint_terms(xb, z1)  # z1 [b, 1, d]: log p(x|z), log p(z) `[b, 1]`
        log_pz, log_px_z = (ops.convert_to_numpy(joint[name])[:, 0] for name in ("log_pz", "log_px_z"))
        log_q_k = ops.convert_to_numpy(log_q_k)
        kl.append(log_q_k - log_pz)
        elbo.append(log_px_z + log_pz - log_q_k)
    means = np.concatenate(means)
    covariance = means.var(axis=0)
    return {
        "active_units": int(np.sum(covariance > ACTIVE_THRESHOLD)),
        "kl": float(np.mean(np.concatenate(kl))),
        "elbo": float(np.mean(np.concatenate(elbo))),
        "slack": float(np.mean(np.concatenate(slack))) if slack else float("nan"),
        "kl_units": np.concatenate(kl_units).mean(axis=0),
        "cov_units": covariance,
    }


def run(name, args):
    import vizoo  # first: it filters TensorFlow's start-up notices

    import keras
    import numpy as np

    from vizoo.layers import POSTERIORS
    from vizoo.losses import LOSSES
    from vizoo.models import VAE

    posterior_options, loss_name, loss_options, ramp_start, _ = RUNS[name]
    keras.utils.set_random_seed(args.seed)
    splits = vizoo.data.load(args.dataset, batch_size=BATCH_SIZE, binarization="dynamic", seed=args.seed, data_dir=args.data_dir)
    train = splits.train
    if args.num_train:
        train = train.take(args.num_train // BATCH_SIZE)
    x_test = np.concatenate([np.asarray(b[0] if isinstance(b, tuple) else b) for b in splits.test.as_numpy_iterator()])
    x_test = x_test[: args.num_test]
    if posterior_options is None:
        posterior = POSTERIORS["diagonal"](LATENT_DIM, name="posterior")
    else:
        options = {key: value for key, value in posterior_options.items() if key not in RUN_OPTIONS}
        posterior = POSTERIORS["hierarchical"](LATENT_DIM, name="posterior", **options)
    every_layer = bool(posterior_options and posterior_options.get(PSI_EVERY_LAYER))
    model = VAE(
        input_dim=splits.input_dim,
        latent_dim=LATENT_DIM,
        hidden_units=[] if every_layer else HIDDEN,
        decoder_hidden_units=HIDDEN[::-1],
        posterior=posterior,
        seed=args.seed,
    )
    model.initialize_output_bias(splits.train_mean)
    if posterior_options and posterior_options.get(FIXED_PSI):
        for layer in (posterior.auxiliary.loc_layer, posterior.auxiliary.log_scale_layer):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        posterior.auxiliary.trainable = False  # q(psi|x) = N(0, I) for every x

    def compile_with(options):
        model.compile(
            optimizer=getattr(model, "optimizer", None) or keras.optimizers.Adam(LEARNING_RATE),
            loss=LOSSES[loss_name](k=1, **options),
            steps_per_execution=STEPS_PER_EXECUTION,
        )

    path = os.path.join(args.output_dir, f"{name}.csv")
    fields = ["epoch", "train_loss", "kl_weight", "K", "elbo", "kl", "active_units", "slack", "seconds"]
    fields += [f"kl_u{u:02d}" for u in range(LATENT_DIM)] + [f"cov_u{u:02d}" for u in range(LATENT_DIM)]
    rows = []

    def record(epoch, logs, K, seconds):
        stats = unit_statistics(model, x_test, args.psi_samples, args.eval_reverse_samples, args.seed + epoch)
        row = {
            "epoch": epoch + 1,
            "train_loss": logs.get("loss"),
            "kl_weight": logs.get("kl_weight", 1.0),
            "K": K,
            "elbo": stats["elbo"],
            "kl": stats["kl"],
            "active_units": stats["active_units"],
            "slack": stats["slack"],
            "seconds": seconds,
        }
        row.update({f"kl_u{u:02d}": v for u, v in enumerate(stats["kl_units"])})
        row.update({f"cov_u{u:02d}": v for u, v in enumerate(stats["cov_units"])})
        rows.append(row)
        with open(path, "w", newline="") as f:  # rewritten every epoch: a cut run keeps its epochs
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        print(
            f"{name} epoch {epoch + 1}: loss {row['train_loss']:.2f}, elbo {row['elbo']:.2f}, kl {row['kl']:.2f}, "
            f"active {row['active_units']}/{LATENT_DIM}, slack {row['slack']:.3f}, {seconds:.0f} s",
            flush=True,
        )

    class Recorder(keras.callbacks.Callback):
        def __init__(self, K):
            super().__init__()
            self.K = K

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            record(epoch, logs or {}, self.K, time.perf_counter() - self.start)

    K_final = loss_options.get("num_reverse_samples", posterior_options.get("num_reverse_samples", 0) if posterior_options else 0)
    if loss_name == "hvm":
        K_final = 0
    if ramp_start is None:
        compile_with(loss_options)
        model.fit(train, epochs=args.epochs, verbose=0, shuffle=False, callbacks=[Recorder(K_final)])
    else:
        for epoch in range(args.epochs):
            K = round(ramp_start + (K_final - ramp_start) * epoch / max(1, args.epochs - 1))
            compile_with({**loss_options, "num_reverse_samples": K})
            model.fit(train, initial_epoch=epoch, epochs=epoch + 1, verbose=0, shuffle=False, callbacks=[Recorder(K)])


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def table(names, output_dir):
    """Markdown: per run, active units, KL, ELBO and slack at epochs 1, 5, 10, 20 (or the last)."""
    lines = [
        "| run | epoch | test ELBO | KL | active units | units with KL > 0.01 | slack log q^_0 - log q^_K |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        path = os.path.join(output_dir, f"{name}.csv")
        if not os.path.exists(path):
            continue
        rows = read_rows(path)
        last = int(rows[-1]["epoch"])
        for row in rows:
            epoch = int(row["epoch"])
            if epoch not in (1, 5, 10, 20) and epoch != last:
                continue
            kl_units = [float(row[f"kl_u{u:02d}"]) for u in range(LATENT_DIM)]
            slack = float(row["slack"])
            lines.append(
                f"| {name} | {epoch} | {float(row['elbo']):.2f} | {float(row['kl']):.2f} | {row['active_units']}/{LATENT_DIM} "
                f"| {sum(v > 0.01 for v in kl_units)} | {'-' if math.isnan(slack) else f'{slack:.3f}'} |"
            )
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"Unknown run(s) {unknown}. Expected names from {list(RUNS)}. Received: runs={args.runs!r}")
    os.makedirs(args.output_dir, exist_ok=True)
    if not args.table:
        for name in names:
            run(name, args)
    print(table(names, args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
