"""Quality and speed of vizoo's models on dynamically binarized Fashion-MNIST; writes docs/benchmarks.md.

The IWAE paper's architecture (784-200-200-50 tanh MLPs, diagonal Gaussian q,
Bernoulli p(x|z); batch 100, Adam 1e-3), trained for the same number of epochs
with each bound, then evaluated on the test set with k=5000 importance samples:

    python benchmarks/benchmark.py --epochs 10 --models vae,iwae5,iwae50   # (no --models: every row)
    python benchmarks/benchmark.py --epochs 10 --models iwae5   # one model
    python benchmarks/benchmark.py --epochs 5 --num-test 2000 --models posteriors \
        --results-dir benchmarks/results/posteriors --output docs/benchmarks_posteriors.md

`--models posteriors` is every posterior (diagonal, full covariance, IAF,
planar) with the ELBO and IWAE-5, for the posterior comparison.

Each model runs in its own process (so its peak memory is its own) and leaves
`<results-dir>/<model>.json`; models already there are skipped (the run is
resumable, `--force` redoes them). The table in `--output` is rebuilt from
every result in `--results-dir`.

Speed: in the same process as each model, a plain tf.matmul of the model's
largest layer shape ([rows, 200] x [200, 784], rows = batch x k for training,
batch x chunk for evaluation) is timed, and training and evaluation GFLOP/s are
reported as fractions of it. FLOPs count 2 per multiply-add of the dense layers;
training is 3x the forward pass (forward + two backward matmuls).
"""

import argparse
import datetime
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from anywhere: vizoo from this checkout
    sys.path.insert(0, REPO)

from vizoo.registry import LOSSES  # noqa: E402  (the registries only: no model is built at import)
import vizoo.losses  # noqa: E402,F401  (fills LOSSES)

# name: (model family, bound, k, posterior, loss options); families, bounds and posteriors are names in
# vizoo's registries (vizoo.models.MODELS, vizoo.losses.LOSSES, vizoo.layers.POSTERIORS); posterior None
# for a family that takes no posterior (its `components`). Posteriors besides the diagonal one are named
# after it; gradient estimators after the estimator.
ROWS = {
    "vae": ("vae", "elbo", 1, "diagonal", {}),
    "iwae5": ("vae", "iwae", 5, "diagonal", {}),
    "iwae50": ("vae", "iwae", 50, "diagonal", {}),
    "iwae50_dreg": ("vae", "iwae", 50, "diagonal", {"gradient_estimator": "dreg"}),
    **{f"{model}_{posterior}": ("vae", bound, k, posterior, {})
       for posterior in ("full_covariance", "iaf", "planar")
       for model, bound, k in (("vae", "elbo", 1), ("iwae5", "iwae", 5))},
    # Hierarchical q (k=1, as the vae rows): HVM (K=0) and IWHVI with K reverse samples.
    "hvm": ("vae", "hvm", 1, "hierarchical", {}),
    "iwhvi10": ("vae", "iwhvi", 1, "hierarchical", {"num_reverse_samples": 10}),
    "iwhvi50": ("vae", "iwhvi", 1, "hierarchical", {"num_reverse_samples": 50}),
    "iwhvi50_ramp": ("vae", "iwhvi", 1, "hierarchical", {"num_reverse_samples": 50}),
    # SIVI: the IWHVI bound with tau = q(psi|x) (no reverse network; ROW_POSTERIOR_OPTIONS).
    "sivi50": ("vae", "iwhvi", 1, "hierarchical", {"num_reverse_samples": 50}),
    # Richer priors (ELBO, diagonal q): the VampPrior and a MAF prior, with their defaults.
    "vae_vamp": ("vae", "elbo", 1, "diagonal", {}),
    "vae_maf": ("vae", "elbo", 1, "diagonal", {}),
    # An implicit q trained adversarially (AVB with adaptive contrast, k=1 as the vae rows): its value is an
    # ELBO estimate; the adversary is the model's (POSTERIOR_OPTIONS["adversary"]) with its own Adam.
    "avb": ("vae", "avb", 1, "implicit", {"adaptive_contrast": True}),
    # Discrete latents: the sigmoid belief network (its own Bernoulli q).
    "sbn_vimco5": ("sbn", "vimco", 5, None, {}),
    "sbn_vimco50": ("sbn", "vimco", 50, None, {}),
    "sbn_nvil": ("sbn", "nvil", 1, None, {}),
}
# The prior of rows that change it (registry names of vizoo.layers.PRIORS); every other row has N(0, I).
ROW_PRIORS = {"vae_vamp": "vamp", "vae_maf": "maf"}
# Posterior options of rows that differ from their posterior's POSTERIOR_OPTIONS.
ROW_POSTERIOR_OPTIONS = {"sivi50": {"reverse_model": "sivi"}}
# Every other registered loss gets a row of its own with its defaults, k=5, on the IWAE paper's VAE: a new
# reparameterization loss is benchmarked with no edit here (others need a row above, as VIMCO and NVIL have).
DEFAULT_ROW = ("vae", 5, "diagonal")
MODELS = {
    **ROWS,
    **{
        name: (DEFAULT_ROW[0], name, DEFAULT_ROW[1], DEFAULT_ROW[2], {})
        for name, cls in LOSSES.items()
        if cls.requires_reparameterization and not any(row[1] == name for row in ROWS.values())
    },
}
# A schedule for K: these rows start at this K and grow it linearly to their own K by the
# last epoch (one compile per epoch; the optimizer and its state carry over).
REVERSE_SAMPLE_RAMPS = {"iwhvi50_ramp": 10}
GROUPS = {
    "posteriors": [
        name for name, (family, bound, k, _, options) in MODELS.items()
        if family == "vae" and bound in ("elbo", "iwae") and k in (1, 5) and not options and name not in ROW_PRIORS
    ],
    "priors": ["vae", *ROW_PRIORS],
    "hierarchical": ["hvm", "iwhvi10", "iwhvi50", "iwhvi50_ramp", "sivi50"],
    "dreg": ["iwae50", "iwae50_dreg"],
    "sbn": ["sbn_vimco5", "sbn_vimco50", "sbn_nvil"],
}
LATENT_DIM, HIDDEN = 50, [200, 200]  # Burda et al.'s one-layer architecture
SBN_LAYERS = [200, 200, 200]  # Mnih & Rezende's SBN: three layers of binary units, linear conditionals
# Each family's constructor options (keyed by its registry name, as the rows are).
FAMILY_OPTIONS = {"vae": {"latent_dim": LATENT_DIM, "hidden_units": HIDDEN}, "sbn": {"latent_dims": SBN_LAYERS}}
# Flow posteriors: IAF as Kingma et al. (2 steps, MADE with 2 x 320 hidden units, gated);
# planar: 8 steps (Rezende & Mohamed report 10 to 80; each step is cheap).
# Hierarchical: psi of 10 dimensions; q(z|psi,x) and tau(psi|z,x) each one hidden layer of 200 on the
# encoder's features (psi, resp. z, enters it).
POSTERIOR_OPTIONS = {
    "iaf": {"num_steps": 2, "hidden_units": [320, 320]},
    "planar": {"num_steps": 8},
    "hierarchical": {"aux_dim": 10, "hidden_units": [200], "reverse_hidden_units": [200]},
    # AVB's sampler z = z0(x) + sum_i a_i(x) * v_i(eps_i) (its moments give the adaptive contrast), and its
    # adversary T(x, z) (two MLPs of 256 256, 64 inner-product features), trained by Adam with beta_1 = 0.5 at
    # twice the learning rate (the paper's settings).
    "implicit": {"structure": "adaptive_contrast", "hidden_units": [200], "num_bases": 8, "basis_hidden_units": [64]},
    "adversary": {"hidden_units": [256, 256], "feature_dim": 64},
}
ADVERSARY_LR_FACTOR, ADVERSARY_BETA_1 = 2.0, 0.5
BATCH_SIZE, LEARNING_RATE = 100, 1e-3
# An output's text from this line on is kept when the table above it is rewritten.
KEPT_MARKER = "<!-- kept by benchmarks/benchmark.py: text below is not generated -->"
# Training steps per compiled call: on 2 CPU cores, 10 gave 1.6x the examples/s
# of 1 for IWAE k=5 (per-step dispatch costs ~10 ms); it changes no math.
STEPS_PER_EXECUTION = 10


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {list(MODELS)}, or a group: {list(GROUPS)}")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--eval-k", type=int, default=5000)
    parser.add_argument(
        "--eval-reverse-samples", type=int, default=50, help="K of hierarchical posteriors' log q estimate in evaluation"
    )
    parser.add_argument("--num-test", type=int, default=None, help="evaluate on the first N test examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "benchmarks.md"))
    parser.add_argument("--force", action="store_true", help="rerun models that have results")
    parser.add_argument("--in-process", action="store_true", help="run models in this process (tests)")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    return parser


def layer_flops(input_dim):
    """FLOPs (2 per multiply-add) of one encoder pass and one decoder pass."""
    encoder = 2 * (input_dim * HIDDEN[0] + HIDDEN[0] * HIDDEN[1] + HIDDEN[1] * 2 * LATENT_DIM)
    decoder = 2 * (LATENT_DIM * HIDDEN[1] + HIDDEN[1] * HIDDEN[0] + HIDDEN[0] * input_dim)
    return encoder, decoder


def sbn_layer_flops(input_dim):
    """FLOPs of the SBN's once-per-example part (q(h_1|x)'s logits) and of its per-sample part."""
    d1, d2, d3 = SBN_LAYERS
    per_sample = 2 * (d1 * d2 + d2 * d3 + d3 * d2 + d2 * d1 + d1 * input_dim)  # q(h_2|h_1), q(h_3|h_2), p chain, p(x|h_1)
    return 2 * input_dim * d1, per_sample


# FLOPs of each family's once-per-example and per-sample parts (keyed by its registry name).
FAMILY_FLOPS = {"vae": layer_flops, "sbn": sbn_layer_flops}


def median_seconds(fn, repeats=30):
    """Median wall time of `fn()` after one warm-up call; `fn` must finish its work (e.g. call .numpy())."""
    import numpy as np

    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_gflops(rows, input_dim, repeats=30):
    """Median GFLOP/s of a plain tf.matmul [rows, 200] x [200, input_dim]."""
    import tensorflow as tf

    a, b = tf.random.normal([rows, HIDDEN[0]]), tf.random.normal([HIDDEN[0], input_dim])
    matmul = tf.function(tf.matmul, autograph=False)
    seconds = median_seconds(lambda: matmul(a, b).numpy(), repeats)
    return 2 * rows * HIDDEN[0] * input_dim / seconds / 1e9


def build_model(name, splits, seed, learning_rate=None, extra_loss_options=None):
    """The row's model, seeded, its output bias at the data's logits, compiled with the row's loss.

    `learning_rate` (default LEARNING_RATE; an adversary's is ADVERSARY_LR_FACTOR times it) and
    `extra_loss_options` (over the row's) give a variant of the row (benchmarks/avb_settings.py).
    """
    import keras

    from vizoo.layers import POSTERIORS
    from vizoo.models import MODELS as FAMILIES

    family, loss_name, k, posterior_name, loss_options = MODELS[name]
    loss_options = {**loss_options, **(extra_loss_options or {})}
    learning_rate = LEARNING_RATE if learning_rate is None else learning_rate
    model_cls = FAMILIES[family]
    options = dict(FAMILY_OPTIONS.get(family, {}))
    keras.utils.set_random_seed(seed)
    if "posterior" in model_cls.components:
        options["posterior"] = POSTERIORS[posterior_name](
            LATENT_DIM, name="posterior", **POSTERIOR_OPTIONS.get(posterior_name, {}), **ROW_POSTERIOR_OPTIONS.get(name, {})
        )
    if name in ROW_PRIORS:
        options["prior"] = ROW_PRIORS[name]
    group_optimizers = {}
    if LOSSES[loss_name].needs_adversary and model_cls.takes_adversary:
        import vizoo

        options["adversary"] = vizoo.layers.Adversary(name="adversary", **POSTERIOR_OPTIONS["adversary"])
        group_optimizers["adversary"] = keras.optimizers.Adam(ADVERSARY_LR_FACTOR * learning_rate, beta_1=ADVERSARY_BETA_1)
    model = model_cls(input_dim=splits.input_dim, seed=seed, **options)
    model.initialize_output_bias(splits.train_mean)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=LOSSES[loss_name](k=k, **loss_options),
                  group_optimizers=group_optimizers, steps_per_execution=STEPS_PER_EXECUTION)
    return model


def evaluation_options(model, reverse_samples):
    """Sampler options of a row's evaluation: hierarchical posteriors' K reverse samples."""
    if "num_reverse_samples" in getattr(model.posterior, "sampler_options", {}):
        return {"num_reverse_samples": reverse_samples}
    return {}


def run_one(name, args):
    """Train and evaluate one model; return its result dict."""
    import keras
    import numpy as np

    import vizoo
    from vizoo import evaluate

    family, loss_name, k, posterior_name, loss_options = MODELS[name]
    splits = vizoo.data.load(
        args.dataset, batch_size=BATCH_SIZE, binarization="dynamic", seed=args.seed, data_dir=args.data_dir
    )
    model = build_model(name, splits, args.seed)
    loss = model.loss

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of each training epoch."""

        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    start = time.perf_counter()
    if name in REVERSE_SAMPLE_RAMPS:  # K from the ramp's start to the row's K, linearly over the epochs
        first, last = REVERSE_SAMPLE_RAMPS[name], loss_options["num_reverse_samples"]
        losses = []
        for epoch in range(args.epochs):
            K = round(first + (last - first) * epoch / max(1, args.epochs - 1))
            model.compile(optimizer=model.optimizer, loss=LOSSES[loss_name](k=k, **{**loss_options, "num_reverse_samples": K}),
                          steps_per_execution=STEPS_PER_EXECUTION)
            stage = model.fit(splits.train, initial_epoch=epoch, epochs=epoch + 1, verbose=2, shuffle=False, callbacks=[timer])
            losses += stage.history["loss"]
        history = keras.callbacks.History()
        history.history = {"loss": losses}
    else:
        history = model.fit(splits.train, epochs=args.epochs, verbose=2, shuffle=False, callbacks=[timer])
    train_seconds = time.perf_counter() - start
    # The first epoch includes tracing; with more than one, it is left out of the speed.
    epoch_seconds = float(np.median(timer.seconds[1:] if len(timer.seconds) > 1 else timer.seconds))

    test = splits.test
    num_test = splits.num_test
    if args.num_test:
        num_test = min(args.num_test, splits.num_test)
        test = test.unbatch().take(num_test).batch(BATCH_SIZE)
    sampler_options = evaluation_options(model, args.eval_reverse_samples)
    start = time.perf_counter()
    metrics = evaluate.log_likelihood(model, test, k=args.eval_k, seed=args.seed, **sampler_options)
    eval_seconds = time.perf_counter() - start
    model.save(os.path.join(args.results_dir, f"{name}.keras"))  # for benchmarks/gradient_snr.py

    encoder_flops, decoder_flops = FAMILY_FLOPS.get(family, layer_flops)(splits.input_dim)
    train_flops = 3 * (encoder_flops + k * decoder_flops) * splits.num_train / epoch_seconds
    eval_flops = (encoder_flops + args.eval_k * decoder_flops) * num_test / eval_seconds
    eval_rows = BATCH_SIZE * evaluate._chunk_size(args.eval_k, BATCH_SIZE, splits.input_dim, k)
    matmul_train = matmul_gflops(BATCH_SIZE * k, splits.input_dim)
    matmul_eval = matmul_gflops(eval_rows, splits.input_dim)
    return {
        "model": name,
        "loss": f"{loss_name.upper()} k={k}"
        + "".join(f", {key}" if value is True else f", {value}" for key, value in loss_options.items())
        + ("" if loss.is_bound else " (an estimate, not a bound)"),
        "posterior": posterior_name or family,
        "epochs": args.epochs,
        "dataset": f"{args.dataset} (dynamic binarization, source {splits.source})",
        "num_train": splits.num_train,
        "num_test": num_test,
        "final_train_loss": history.history["loss"][-1],
        "test_nll": metrics["nll"],
        "test_elbo": metrics["elbo"],
        "test_iwae_k": metrics["iwae_k"],
        "test_kl": metrics["kl"],
        "active_units": metrics["active_units"],
        "latent_units": metrics["latent_units"],
        "eval_k": args.eval_k,
        **({"eval_reverse_samples": args.eval_reverse_samples} if sampler_options else {}),
        "test_nll_is_upper_bound": bool(metrics.get("log_likelihood_is_lower_bound", False)),
        # A density-free q: the training estimate (AVB's ELBO^) beside log p(x), from evaluate.log_likelihood.
        **{key: metrics[key] for key in ("proposal", "training_estimate", "training_estimate_gap",
                                         "training_estimate_gap_se", "adversary_kl") if key in metrics},
        "train_seconds": train_seconds,
        "train_examples_per_second": splits.num_train / epoch_seconds,
        "eval_seconds": eval_seconds,
        "eval_examples_per_second": num_test / eval_seconds,
        "train_gflops": train_flops / 1e9,
        "eval_gflops": eval_flops / 1e9,
        "matmul_gflops_train_shape": matmul_train,
        "matmul_gflops_eval_shape": matmul_eval,
        "train_matmul_fraction": train_flops / 1e9 / matmul_train,
        "eval_matmul_fraction": eval_flops / 1e9 / matmul_eval,
        "train_matmul_rows": BATCH_SIZE * k,
        "eval_matmul_rows": eval_rows,
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "machine": machine_description(),
        "date": datetime.date.today().isoformat(),
    }


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import tensorflow as tf

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow {tf.__version__}"


def write_table(results_dir, output, command):
    results = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    order = {name: i for i, name in enumerate(MODELS)}
    results.sort(key=lambda r: order.get(r["model"], len(order)))
    lines = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/benchmark.py`; every number below was measured by it. Command:",
        "",
        f"    {command}",
        "",
        "IWAE-paper architecture (784-200-200-50 tanh MLPs, Bernoulli p(x|z), N(0, I) prior),",
        "batch 100, Adam 1e-3, dynamically binarized training data, steps_per_execution 10;",
        "test NLL by importance sampling. q(z|x) is a diagonal Gaussian unless the posterior column",
        f"says otherwise (IAF: {POSTERIOR_OPTIONS['iaf']['num_steps']} gated steps, MADE "
        f"{POSTERIOR_OPTIONS['iaf']['hidden_units']}, context = encoder features;",
        f"planar: {POSTERIOR_OPTIONS['planar']['num_steps']} steps; hierarchical: {POSTERIOR_OPTIONS['hierarchical']}, "
        "test NLL with log q estimated from the rows' eval K reverse samples, marked * (unbiased weights, noisier: looser at a given k); "
        f"{', '.join(f'{n} grows K linearly from {K0}' for n, K0 in REVERSE_SAMPLE_RAMPS.items())}).",
        "GFLOP/s count the encoder and decoder dense layers only.",
        f"Rows sbn_*: sigmoid belief network {'-'.join(map(str, SBN_LAYERS))} (binary units, linear Bernoulli "
        "conditionals, Bernoulli q layer by layer) trained with VIMCO (k samples) or NVIL (k=1, baseline MLP [100]);",
        "its active units count the first layer's. Published: VIMCO k=5, SBN 200-200-200, -93.6 on binarized MNIST",
        "(Mnih & Rezende 2016), a different dataset and budget (not reproducible offline).",
        "Test metrics are nats per example. Speeds are medians (training: per epoch, first epoch left out).",
        "",
        "| model | posterior | bound | epochs | test NLL | test ELBO | test IWAE-k | KL | active units | train ex/s | eval ex/s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r.get('posterior', 'diagonal')} | {r['loss']} | {r['epochs']} "
            f"| {r['test_nll']:.2f}{'*' if r.get('test_nll_is_upper_bound') else ''} | {r['test_elbo']:.2f} "
            f"| {r['test_iwae_k']:.2f} | {r['test_kl']:.2f} | {r['active_units']}/{r.get('latent_units', LATENT_DIM)} "
            f"| {r['train_examples_per_second']:.0f} | {r['eval_examples_per_second']:.1f} | {r['peak_memory_mib']:.0f} |"
        )
    lines += [
        "",
        "## Speed against a plain matmul of the largest layer",
        "",
        "| model | train GFLOP/s | matmul GFLOP/s (rows) | train fraction | eval GFLOP/s | matmul GFLOP/s (rows) | eval fraction |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['train_gflops']:.1f} | {r['matmul_gflops_train_shape']:.1f} ({r['train_matmul_rows']}) "
            f"| {r['train_matmul_fraction']:.2f} | {r['eval_gflops']:.1f} "
            f"| {r['matmul_gflops_eval_shape']:.1f} ({r['eval_matmul_rows']}) | {r['eval_matmul_fraction']:.2f} |"
        )
    nll = {r["model"]: r["test_nll"] for r in results}
    if {"vae", "iwae5", "iwae50"} <= set(nll):
        holds = nll["iwae50"] < nll["iwae5"] < nll["vae"]
        lines += ["", f"Expected ordering NLL(IWAE k=50) < NLL(IWAE k=5) < NLL(VAE): {'holds' if holds else 'does NOT hold'}."]
    for bound in ("vae", "iwae5"):
        if {bound, f"{bound}_iaf"} <= set(nll):
            gain = nll[bound] - nll[f"{bound}_iaf"]
            lines += ["", f"IAF vs diagonal ({bound}): test NLL {'lower' if gain > 0 else 'NOT lower'} by {gain:.2f} nats."]
    for r in results:
        if "adversary_kl" in r:
            lines += ["", (
                f"{r['model']}: q has no density, so test NLL uses a Gaussian proposal fitted to q's samples and the "
                f"ELBO, IWAE-k and KL columns are that proposal's. The training estimate ELBO^ = "
                f"{r['training_estimate']:.2f} (the adversary's KL estimate {r['adversary_kl']:.2f}); "
                f"log p(x) - ELBO^ = {r['training_estimate_gap']:.2f} +- {r['training_estimate_gap_se']:.2f} "
                "(positive for a true ELBO: it is KL(q(z|x) || p(z|x)))."
            )]
    lines += ["", "Where the time goes inside a step: [profile.md](profile.md) (`benchmarks/profile_breakdown.py`)."]
    machines = sorted({
        f"{r['machine']} ({r['date']}, {r['dataset']}, {r['num_test']} test examples, k={r['eval_k']}"
        + (f", eval K={r['eval_reverse_samples']}" if "eval_reverse_samples" in r else "") + ")"
        for r in results
    })
    lines += ["", "Measured on:"] + [f"- {m}" for m in machines] + [""]
    write_keeping_marked_text(output, "\n".join(lines))
    return results


def write_keeping_marked_text(output, text):
    """Write a generated page, keeping what stands from KEPT_MARKER on in the page it replaces.

    (Sections written by other scripts, e.g. benchmarks/active_units.py's, or by hand.)
    """
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    kept = ""
    if os.path.exists(output):
        with open(output) as f:
            previous = f.read()
        if KEPT_MARKER in previous:
            kept = previous[previous.index(KEPT_MARKER):]
    tmp = f"{output}.tmp{os.getpid()}"  # moved over the page in one step: two writers never interleave
    with open(tmp, "w") as f:
        f.write(text + ("\n" + kept if kept else ""))
    os.replace(tmp, output)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.run_one:
        result = run_one(args.run_one, args)
        with open(os.path.join(args.results_dir, f"{args.run_one}.json"), "w") as f:
            json.dump(result, f, indent=2)
        return 0
    names = [m for n in args.models.split(",") if n for m in GROUPS.get(n, [n])]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"Unknown model(s) {unknown}. Expected names from {list(MODELS) + list(GROUPS)}. Received: models={args.models!r}")
    if args.epochs < 1:
        raise SystemExit(f"epochs must be a positive integer. Received: epochs={args.epochs}")
    os.makedirs(args.results_dir, exist_ok=True)
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--force", "--in-process")]
    for name in names:
        path = os.path.join(args.results_dir, f"{name}.json")
        if os.path.exists(path) and not args.force:
            print(f"{name}: result exists ({path}), skipped; --force reruns it")
            continue
        print(f"{name}: training {args.epochs} epochs, then evaluating with k={args.eval_k}", flush=True)
        if args.in_process:
            result = run_one(name, args)
            with open(path, "w") as f:
                json.dump(result, f, indent=2)
        else:
            subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--run-one", name], check=True)
    command = "python benchmarks/benchmark.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--in-process",)
    )
    for r in write_table(args.results_dir, args.output, command.strip()):
        print(
            f"{r['model']}: NLL {r['test_nll']:.2f}, train {r['train_examples_per_second']:.0f} ex/s "
            f"({r['train_matmul_fraction']:.2f} of matmul), eval {r['eval_examples_per_second']:.1f} ex/s "
            f"({r['eval_matmul_fraction']:.2f} of matmul), peak {r['peak_memory_mib']:.0f} MiB"
        )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
