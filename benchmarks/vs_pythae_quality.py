"""Model quality against pythae at equal budget: the same IWAE-5 trained by each program, evaluated alike.

    python -m venv /tmp/pythae && /tmp/pythae/bin/pip install torch==2.13.0 pythae
    python benchmarks/vs_pythae_quality.py --pythae-python /tmp/pythae/bin/python --seeds 0,1,2 --epochs 10,100

Both programs train the IWAE paper's 784-200-200-50 tanh model with IWAE k=5, batch 100 and
Adam(1e-3) on the 60,000 Fashion-MNIST training images, binarized afresh every epoch, each from
its own defaults: vizoo as `train.py` builds it (Keras's Glorot-uniform kernels and zero biases,
the output bias at the logits of the data mean, the posterior's log-scale head, Keras Adam's
epsilon 1e-7); pythae's `IWAE` with PyTorch's initialisation (uniform +-1/sqrt(fan_in) weights
and biases), a log-variance head and PyTorch Adam's epsilon 1e-8 (benchmarks/pythae_worker.py).

At each budget of `--epochs`, both trained models are evaluated by one evaluator,
`vizoo.evaluate.log_likelihood` with k=`--eval-k` and the same seed, on the same fixed
binarization of the test set: pythae's weights are copied into a vizoo VAE (the two compute the
same function; benchmarks/vs_pythae.py checks that the two programs' NLL estimates agree on one set
of weights). A difference is therefore a difference between the trained models, not between
the evaluators. The table gives each seed and the mean and standard deviation of the
difference over seeds, so seed noise and a real gap can be told apart.

`--vizoo-variant` trains vizoo with one of pythae's defaults instead of its own, to find which
default matters: `torch_init` (PyTorch's initialisation), `adam_epsilon` (1e-8)
or `zero_output_bias` (the output bias left at zero). (The variance heads differ only in scale:
pythae's linear head gives log sigma^2, vizoo's log sigma, so the same functions are reachable;
under `torch_init` vizoo's log-sigma head starts at twice the spread of pythae's.)

Results are kept per (variant, seed, epochs) in `--results-dir` (JSON), each written as soon as
it is measured; a seed whose budgets all have results is skipped, and a seed trained towards a new
budget passes the budgets it has results for without evaluating them again. Training state is kept
too, in `--results-dir`/state/ (every epoch for vizoo, its `TrainingCheckpoint`; every
`--checkpoint-every` epochs for pythae, its weights, Adam and random states): running the command
again after an interruption continues each program where its state stopped, and the state is
removed once the seed's last budget is evaluated.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
for path in (HERE, os.path.dirname(HERE)):  # vs_pythae beside it, and vizoo from this checkout
    if path not in sys.path:
        sys.path.insert(0, path)

from vs_pythae import HIDDEN, INPUT_DIM, LATENT_DIM, Program  # noqa: E402  (standard library only at import)

VARIANTS = ("defaults", "torch_init", "adam_epsilon", "zero_output_bias")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pythae-python", default=os.environ.get("PYTHAE_PYTHON"),
                        help="a Python with torch and pythae (default $PYTHAE_PYTHON)")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX files (default: Debian's)")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", default="10,100", help="comma-separated budgets, evaluated as training reaches each")
    parser.add_argument("--k", type=int, default=5, help="IWAE samples in training")
    parser.add_argument("--eval-k", type=int, default=5000)
    parser.add_argument("--num-test", type=int, default=None, help="the first N test examples (default all)")
    parser.add_argument("--vizoo-variant", choices=VARIANTS, default="defaults")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="epochs between the saved training states")
    parser.add_argument("--results-dir", default=os.path.join(HERE, "results", "vs_pythae_quality"))
    return parser


def _integers(text, flag):
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < (0 if flag == "seeds" else 1):
        raise SystemExit(f"--{flag} must be comma-separated {'non-negative' if flag == 'seeds' else 'positive'} "
                         f"integers. Received: {text!r}")
    return values


def torch_like_init(model, seed):
    """PyTorch's nn.Linear initialisation in a vizoo model: kernel and bias uniform(+-1/sqrt(fan_in))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in [*model.encoder_layers, model.posterior.loc_layer, model.posterior.log_scale_layer,
                  *model.decoder_layers, model.likelihood.logits_layer]:
        kernel, bias = layer.get_weights()
        bound = 1.0 / np.sqrt(kernel.shape[0])
        layer.set_weights([rng.uniform(-bound, bound, kernel.shape).astype(kernel.dtype),
                           rng.uniform(-bound, bound, bias.shape).astype(bias.dtype)])


def load_vizoo_layout(model, path):
    """Weights saved by pythae_worker's save_weights, into a vizoo VAE of the same sizes."""
    import numpy as np

    a = np.load(path)
    for i, layer in enumerate(model.encoder_layers):
        layer.set_weights([a[f"encoder_{i}_kernel"], a[f"encoder_{i}_bias"]])
    for i, layer in enumerate(model.decoder_layers):
        layer.set_weights([a[f"decoder_{i}_kernel"], a[f"decoder_{i}_bias"]])
    model.posterior.loc_layer.set_weights([a["loc_kernel"], a["loc_bias"]])
    model.posterior.log_scale_layer.set_weights([a["log_scale_kernel"], a["log_scale_bias"]])
    model.likelihood.logits_layer.set_weights([a["logits_kernel"], a["logits_bias"]])


def run_seed(seed, budgets, args, pythae, evaluated=(), record=None):
    """Train both programs to each budget, evaluating both at each but those in `evaluated` (whose results
    exist: training passes through them); each result goes to `record(epochs, result)` as it is measured.

    Both programs continue from the seed's saved training state when there is one (`state_dir`), and
    save theirs as they go (vizoo every epoch, pythae every `--checkpoint-every` epochs and at each budget).
    """
    import vizoo  # first: it filters TensorFlow's start-up notices

    import keras
    import numpy as np

    from vizoo.callbacks import TrainingCheckpoint

    def load(binarization):
        return vizoo.data.load(args.dataset, batch_size=100, binarization=binarization, seed=seed,
                               data_dir=args.data_dir, validation_size=0)

    splits, grey = load("dynamic"), load("none")
    test = splits.test
    if args.num_test:
        test = test.unbatch().take(args.num_test).batch(100)
    keras.utils.set_random_seed(seed)
    model = vizoo.models.VAE(INPUT_DIM, LATENT_DIM, list(HIDDEN), seed=seed)
    model.build((None, INPUT_DIM))
    if args.vizoo_variant == "torch_init":
        torch_like_init(model, seed)
    if args.vizoo_variant != "zero_output_bias":
        model.initialize_output_bias(splits.train_mean)
    epsilon = 1e-8 if args.vizoo_variant == "adam_epsilon" else 1e-7
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=epsilon), loss=vizoo.losses.IWAELoss(k=args.k),
                  steps_per_execution=10)
    twin = vizoo.models.VAE(INPUT_DIM, LATENT_DIM, list(HIDDEN), seed=seed)  # pythae's weights, evaluated by vizoo
    twin.build((None, INPUT_DIM))
    state = state_dir(args, seed)
    os.makedirs(state, exist_ok=True)
    pythae_state = os.path.join(state, "pythae.pt")
    targets = sorted(set(range(args.checkpoint_every, budgets[-1], args.checkpoint_every)) | set(budgets))

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        arrays = os.path.join(tmp, "train.npz")
        np.savez(arrays, train=np.concatenate([np.asarray(x) for x in grey.train]))
        pythae.ask(op="setup_fresh", arrays=arrays, batch_size=100, k=args.k, seed=seed,
                   hidden_units=list(HIDDEN), latent_dim=LATENT_DIM)
        pythae_done = pythae.ask(op="load_state", path=pythae_state)["epochs"] if os.path.exists(pythae_state) else 0
        seconds = {"vizoo": 0.0, "pythae": 0.0}  # this process's training time towards the next budget
        last_loss = {"vizoo": None, "pythae": None}
        for target in targets:
            # A fresh pipeline each time: the checkpoint restores the model (the same weights in this process) and
            # advances the pipeline by the finished epochs, as for a run resumed in a new process.
            train = load("dynamic").train
            start = time.perf_counter()
            history = model.fit(train, epochs=target, verbose=0,
                                callbacks=[TrainingCheckpoint(os.path.join(state, "vizoo"), train_data=train)])
            seconds["vizoo"] += time.perf_counter() - start
            last_loss["vizoo"] = history.history["loss"][-1] if history.history.get("loss") else last_loss["vizoo"]
            if pythae_done < target:
                start = time.perf_counter()
                trained = pythae.ask(op="train_epochs", epochs=target - pythae_done)
                seconds["pythae"] += time.perf_counter() - start
                last_loss["pythae"], pythae_done = trained["losses"][-1], target
                pythae.ask(op="save_state", path=pythae_state)
            if target not in budgets or target in evaluated:
                continue
            load_vizoo_layout(twin, pythae.ask(op="save_weights", path=os.path.join(tmp, "pythae.npz"))["path"])
            nll = {name: vizoo.evaluate.log_likelihood(m, test, k=args.eval_k, seed=seed)
                   for name, m in (("vizoo", model), ("pythae", twin))}
            results[target] = {
                "seed": seed, "epochs": target, "variant": args.vizoo_variant, "eval_k": args.eval_k,
                "num_test": nll["vizoo"]["num_examples"],
                **{f"{name}_{key}": value[key] for name, value in nll.items() for key in ("nll", "elbo", "kl", "active_units")},
                "vizoo_last_train_loss": last_loss["vizoo"], "pythae_last_train_loss": last_loss["pythae"],
                "vizoo_train_seconds": seconds["vizoo"], "pythae_train_seconds": seconds["pythae"],
            }
            seconds = {"vizoo": 0.0, "pythae": 0.0}
            if record is not None:
                record(target, results[target])
            print(f"seed {seed}, {target} epochs: NLL vizoo {nll['vizoo']['nll']:.2f}, pythae {nll['pythae']['nll']:.2f}",
                  flush=True)
    shutil.rmtree(state, ignore_errors=True)  # every budget of the seed is evaluated: its state is done with
    try:
        os.rmdir(os.path.dirname(state))  # state/ itself, once no other seed's is there
    except OSError:
        pass
    return results


def state_dir(args, seed):
    """Where the training state of (variant, seed) is kept until the seed's last budget is evaluated."""
    return os.path.join(args.results_dir, "state", f"{args.vizoo_variant}_seed{seed}")


def report(results):
    lines = ["| variant | epochs | seed | vizoo NLL | pythae NLL | vizoo - pythae | vizoo KL | pythae KL | active units (vizoo, pythae) |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["variant"], r["epochs"]) for r in results})
    for variant, epochs in keys:
        rows = sorted((r for r in results if (r["variant"], r["epochs"]) == (variant, epochs)), key=lambda r: r["seed"])
        for r in rows:
            lines.append(f"| {variant} | {epochs} | {r['seed']} | {r['vizoo_nll']:.2f} | {r['pythae_nll']:.2f} "
                         f"| {r['vizoo_nll'] - r['pythae_nll']:+.2f} | {r['vizoo_kl']:.2f} | {r['pythae_kl']:.2f} "
                         f"| {r['vizoo_active_units']}, {r['pythae_active_units']} |")
        gaps = [r["vizoo_nll"] - r["pythae_nll"] for r in rows]
        if len(gaps) == 1:
            lines.append(f"| {variant} | {epochs} | one seed so far | | | no spread yet | | | |")
        if len(gaps) >= 2:
            lines.append(f"| {variant} | {epochs} | mean of {len(gaps)} | {statistics.mean(r['vizoo_nll'] for r in rows):.2f} "
                         f"| {statistics.mean(r['pythae_nll'] for r in rows):.2f} | {statistics.mean(gaps):+.2f} "
                         f"(sd {statistics.stdev(gaps):.2f}) | | | |")
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.pythae_python:
        raise SystemExit("--pythae-python must name a Python with torch and pythae (see the docstring). Received: none")
    seeds, budgets = _integers(args.seeds, "seeds"), sorted(set(_integers(args.epochs, "epochs")))
    for flag, value in (("eval-k", args.eval_k), ("k", args.k), ("num-test", 1 if args.num_test is None else args.num_test),
                        ("checkpoint-every", args.checkpoint_every)):
        if value < 1:
            raise SystemExit(f"--{flag} must be a positive integer. Received: {value}")
    os.makedirs(args.results_dir, exist_ok=True)

    def path(seed, epochs):
        return os.path.join(args.results_dir, f"{args.vizoo_variant}_seed{seed}_e{epochs}.json")

    pythae = None
    try:
        for seed in seeds:
            if all(os.path.exists(path(seed, e)) for e in budgets):
                print(f"seed {seed}: results exist, skipped", flush=True)
                continue
            pythae = pythae or Program([args.pythae_python, os.path.join(HERE, "pythae_worker.py")])
            evaluated = [e for e in budgets if os.path.exists(path(seed, e))]

            def record(epochs, result, seed=seed):
                import benchmark  # (imports vizoo: after the pythae worker has started)

                result = {**result, "machine": benchmark.machine_description(), "date": datetime.date.today().isoformat(),
                          "threads": os.environ.get("TF_NUM_INTRAOP_THREADS", "default")}
                with open(path(seed, epochs) + ".tmp", "w") as f:
                    json.dump(result, f, indent=2)
                os.replace(path(seed, epochs) + ".tmp", path(seed, epochs))

            run_seed(seed, budgets, args, pythae, evaluated, record)
    finally:
        if pythae:
            pythae.close()
    results = []
    for name in sorted(os.listdir(args.results_dir)):
        if name.endswith(".json"):
            with open(os.path.join(args.results_dir, name)) as f:
                results.append(json.load(f))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
