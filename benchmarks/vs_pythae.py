"""vizoo against pythae (PyTorch) in one run: IWAE training and k=5000 evaluation, float32 and bfloat16.

Both programs get the same model (the IWAE paper's 784-200-200-50 tanh MLPs with a Bernoulli
decoder), the same binarized Fashion-MNIST examples and, for evaluation, the same trained
weights: vizoo trains the model for `--pretrain-epochs`, and pythae's `IWAE` is built from those
weights, so the two NLL estimates must agree within Monte-Carlo error (a check that both compute
the same bound). Each program runs in its own long-lived process (pythae in a Python with torch
and pythae: `--pythae-python`); the driver asks them in turn, alternating, `--repeats` rounds, and
prints medians. Run it alone: anything else on the machine moves the timings.

    python -m venv /tmp/pythae && /tmp/pythae/bin/pip install torch==2.13.0 pythae
    python benchmarks/vs_pythae.py --pythae-python /tmp/pythae/bin/python

- training: `--train-examples` (an epoch) of IWAE k=5 at batch 100 per timed pass. vizoo:
  `model.fit` on an in-memory tf.data pipeline, as `train.py` runs it (steps_per_execution 10,
  `optimizer="adam"`); pythae: forward, backward and Adam step in a plain loop (pythae's trainer
  does the same work plus logging).
- evaluation: `vizoo.evaluate.log_likelihood(k=5000)` against pythae's `get_nll(n_samples=5000)`
  on the first `--eval-examples` test examples. Both programs first run a short untimed pass of
  each workload (vizoo traces its compiled functions once per model; pythae allocates).
- bfloat16: vizoo's `mixed_bfloat16` policy (`vizoo.precision.with_precision`); pythae under
  `torch.autocast("cpu", dtype=torch.bfloat16)`.
- The matmul table times each matmul shape of the two workloads alone (TensorFlow, the same
  threads), and each workload's row says what fraction of that rate it reaches: the time its
  matmuls would take at those rates over the time it took (training counts the backward pass
  as twice the forward's matmul work).
- The medians are the headline; the ratio of the two programs' fastest rounds is printed beside
  them because on a shared machine some passes are slowed from outside (the seconds of every
  round are printed too).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PRECISIONS = ("float32", "bfloat16")
POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
INPUT_DIM, LATENT_DIM, HIDDEN = 784, 50, (200, 200)
ANSWER = "@answer "  # the workers' answer lines start with it; anything else on their stdout is passed on


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pythae-python", default=os.environ.get("PYTHAE_PYTHON"),
                        help="a Python with torch and pythae (default $PYTHAE_PYTHON)")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX files (default: Debian's)")
    parser.add_argument("--pretrain-epochs", type=int, default=2, help="epochs vizoo trains the evaluated model")
    parser.add_argument("--train-examples", type=int, default=60000, help="examples per timed training pass")
    parser.add_argument("--eval-examples", type=int, default=200, help="test examples per timed evaluation")
    parser.add_argument("--k", type=int, default=5, help="IWAE samples in training")
    parser.add_argument("--eval-k", type=int, default=5000)
    parser.add_argument("--pythae-nll-batch", type=int, default=1000,
                        help="pythae get_nll's batch_size (samples per forward pass; must divide --eval-k)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of idle before each timed pass")
    parser.add_argument("--only", choices=("train", "eval"), default=None, help="time only one workload")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


# ----------------------------------------------------------------------------------------------
# vizoo's side (runs in its own process, like pythae's)


def dense_flops(rows, sizes):
    return sum(2 * rows * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def matmul_shapes(batch, k, chunk_rows):
    """(name, rows, in, out, times) of every matmul of one training step and one evaluation chunk."""
    enc = [INPUT_DIM, *HIDDEN]
    dec = [LATENT_DIM, *HIDDEN[::-1], INPUT_DIM]
    shapes = {"train": [], "eval": []}
    for a, b in zip(enc[:-1], enc[1:]):
        shapes["train"].append((batch, a, b))
    shapes["train"].append((batch, HIDDEN[-1], 2 * LATENT_DIM))  # loc and log_scale heads
    for a, b in zip(dec[:-1], dec[1:]):
        shapes["train"].append((batch * k, a, b))
        shapes["eval"].append((chunk_rows, a, b))
    return shapes


class VizooWorker:
    def setup(self, arrays, data_dir, pretrain_epochs, train_examples, eval_examples, k, seed):
        import vizoo  # first: it filters TensorFlow's start-up notices
        from vizoo.precision import with_precision

        import keras
        import numpy as np
        import tensorflow as tf

        self.tf, self.np, self.vizoo = tf, np, vizoo
        splits = vizoo.data.load("fashion_mnist", batch_size=100, binarization="static", seed=seed,
                                 data_dir=data_dir, validation_size=0)
        train = np.concatenate([np.asarray(x) for x in splits.train])
        test = np.concatenate([np.asarray(x) for x in splits.test])[:eval_examples]
        keras.utils.set_random_seed(seed)
        model = vizoo.models.VAE(INPUT_DIM, LATENT_DIM, list(HIDDEN), seed=seed)
        model.compile(optimizer="adam", loss=vizoo.losses.IWAELoss(k=k), steps_per_execution=10)
        model.build((None, INPUT_DIM))
        model.likelihood.set_bias_from_mean(train.mean(axis=0))
        if pretrain_epochs:
            model.fit(train, batch_size=100, epochs=pretrain_epochs, verbose=0)
        def copy(policy):  # a model of its own (with_precision returns `model` itself for its own policy)
            twin = type(model).from_config(model.get_config())
            twin.build((None, INPUT_DIM))
            twin.set_weights(model.get_weights())
            return with_precision(twin, policy)

        self.evaluated = {p: copy(POLICY[p]) for p in PRECISIONS}
        weights = {"train": train[:train_examples], "test": test, "latent_dim": LATENT_DIM,
                   "hidden_units": np.array(HIDDEN)}
        for i, layer in enumerate(model.encoder_layers):
            weights[f"encoder_{i}_kernel"], weights[f"encoder_{i}_bias"] = layer.get_weights()
        for i, layer in enumerate(model.decoder_layers):
            weights[f"decoder_{i}_kernel"], weights[f"decoder_{i}_bias"] = layer.get_weights()
        for name, layer in (("loc", model.posterior.loc_layer), ("log_scale", model.posterior.log_scale_layer),
                            ("logits", model.likelihood.logits_layer)):
            weights[f"{name}_kernel"], weights[f"{name}_bias"] = layer.get_weights()
        np.savez(arrays, **weights)

        # Fresh copies for the timed training (same start for both precisions), pipelines in memory.
        self.train_ds = tf.data.Dataset.from_tensor_slices(train[:train_examples]).batch(100).cache()
        self.trained = {}
        for p in PRECISIONS:
            self.trained[p] = copy(POLICY[p])
            self.trained[p].compile(optimizer="adam", loss=vizoo.losses.IWAELoss(k=k), steps_per_execution=10)
            self.trained[p].fit(self.train_ds.take(20), epochs=1, verbose=0)  # traces the step
        self.test = test
        return {"tensorflow": tf.__version__, "keras": keras.__version__,
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}

    def train(self, precision, examples):
        start = time.perf_counter()
        self.trained[precision].fit(self.train_ds, epochs=1, verbose=0)
        return {"seconds": time.perf_counter() - start}

    def eval(self, precision, examples, k, nll_batch=None):
        start = time.perf_counter()
        result = self.vizoo.evaluate.log_likelihood(self.evaluated[precision], self.test[:examples], k=k, seed=0)
        return {"seconds": time.perf_counter() - start, "nll": result["nll"]}

    def matmul_rates(self, shapes, repeats=20):
        """GFLOP/s of [rows, a] x [a, b] for each shape, float32 and bfloat16."""
        tf = self.tf
        rates = {}
        for rows, a, b in shapes:
            for p, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
                x = tf.random.normal([rows, a], dtype=dtype)
                w = tf.random.normal([a, b], dtype=dtype)
                reps = max(1, int(2e9 // (2 * rows * a * b)))  # about 2 GFLOP per timed call

                @tf.function
                def run(x, w):
                    total = tf.zeros([], dtype)
                    for _ in tf.range(reps):
                        total += tf.matmul(x, w)[0, 0]
                    return total

                run(x, w).numpy()
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    run(x, w).numpy()
                    times.append(time.perf_counter() - start)
                rates[f"{rows}x{a}x{b}:{p}"] = 2 * rows * a * b * reps / statistics.median(times) / 1e9
        return rates


def serve(worker):
    """Answer the driver's JSON commands on stdin with `worker`'s methods, until "quit".

    Both workers run it (`pythae_worker.py` imports it: this module needs only the standard
    library at import time, so it loads in pythae's Python too).
    """
    answers, sys.stdout = sys.stdout, sys.stderr  # library prints go to stderr, not into the answers
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        answers.write(ANSWER + json.dumps(getattr(worker, op)(**command)) + "\n")
        answers.flush()


# ----------------------------------------------------------------------------------------------
# The driver


class Program:
    def __init__(self, argv):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.process.args[0]} exited with {self.process.wait()}")
            if line.startswith(ANSWER):
                return json.loads(line[len(ANSWER):])
            sys.stderr.write(line)

    def close(self):
        self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
        self.process.stdin.flush()
        self.process.wait()


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        serve(VizooWorker())
        return 0
    for name in ("pretrain_epochs", "train_examples", "eval_examples", "k", "eval_k", "pythae_nll_batch", "repeats"):
        value, least = getattr(args, name), 0 if name == "pretrain_epochs" else 1
        if value < least:
            sys.exit(f"--{name.replace('_', '-')} must be an integer >= {least}. Received: {value}")
    if args.pause < 0:
        sys.exit(f"--pause must be >= 0 seconds. Received: {args.pause}")
    if not args.pythae_python:
        sys.exit("--pythae-python: a Python with torch and pythae is needed (see the docstring). Received: none")
    if args.eval_k % args.pythae_nll_batch:
        sys.exit(f"--pythae-nll-batch must divide --eval-k={args.eval_k}. Received: {args.pythae_nll_batch}")

    arrays = os.path.join(tempfile.mkdtemp(prefix="vs_pythae_"), "shared.npz")
    vizoo_prog = Program([sys.executable, os.path.abspath(__file__), "--worker"])
    versions = vizoo_prog.ask(op="setup", arrays=arrays, data_dir=args.data_dir, pretrain_epochs=args.pretrain_epochs,
                              train_examples=args.train_examples, eval_examples=args.eval_examples, k=args.k,
                              seed=args.seed)
    pythae_prog = Program([args.pythae_python, os.path.join(HERE, "pythae_worker.py")])
    versions.update(pythae_prog.ask(op="setup", arrays=arrays, batch_size=100, k=args.k))
    programs = {"vizoo": vizoo_prog, "pythae": pythae_prog}

    workloads = ("train", "eval") if args.only is None else (args.only,)
    seconds = {(w, name, p): [] for w in workloads for name in programs for p in PRECISIONS}
    nll = {}
    for w in workloads:  # one short untimed pass each (first passes allocate, vizoo's evaluation traces)
        for name, prog in programs.items():
            for p in PRECISIONS:
                if w == "train":
                    prog.ask(op="train", precision=p, examples=min(1000, args.train_examples))
                else:  # at the timed batch size: vizoo compiles one loop per batch size
                    prog.ask(op="eval", precision=p, examples=min(100, args.eval_examples), k=args.eval_k,
                             nll_batch=args.pythae_nll_batch)
    for _ in range(args.repeats):
        for w in workloads:
            for p in PRECISIONS:
                for name, prog in programs.items():
                    # Idle threads of the program that just answered spin for a while (OpenMP,
                    # Eigen) and would take the cores from the next: let them settle first.
                    time.sleep(args.pause)
                    if w == "train":
                        r = prog.ask(op="train", precision=p, examples=args.train_examples)
                    else:
                        r = prog.ask(op="eval", precision=p, examples=args.eval_examples, k=args.eval_k,
                                     nll_batch=args.pythae_nll_batch)
                        nll[(name, p)] = r["nll"]
                    seconds[(w, name, p)].append(r["seconds"])

    chunk_rows = 100 * max(1, 2**21 // (100 * INPUT_DIM))  # evaluate's default chunk at batch 100
    shapes = matmul_shapes(100, args.k, chunk_rows)
    rates = vizoo_prog.ask(op="matmul_rates", shapes=sorted({s for w in workloads for s in shapes[w]}))
    for prog in programs.values():
        prog.close()

    examples = {"train": args.train_examples, "eval": args.eval_examples}
    print(f"vizoo vs pythae, {args.repeats} alternating rounds (medians); {versions}")
    print(f"IWAE 784-200-200-50, training k={args.k} batch 100 on {args.train_examples} examples per pass; "
          f"evaluation k={args.eval_k} on {args.eval_examples} test examples (pythae get_nll batch "
          f"{args.pythae_nll_batch}); vizoo's model pretrained {args.pretrain_epochs} epochs")
    print()
    print("| workload | precision | vizoo ex/s | pythae ex/s | vizoo / pythae | fastest rounds' ratio "
          "| vizoo: matmul GFLOP/s | of the matmul rate |")
    print("|---|---|---|---|---|---|---|---|")
    for w in workloads:
        for p in PRECISIONS:
            speed = {name: examples[w] / statistics.median(seconds[(w, name, p)]) for name in programs}
            # matmul work per example and the time it would take at the measured rates
            per_example_rows = {"train": 1 / 100, "eval": args.eval_k / chunk_rows}[w]
            factor = 3 if w == "train" else 1  # backward = 2x forward
            flops = sum(factor * 2 * rows * a * b for rows, a, b in shapes[w]) * per_example_rows
            ideal = sum(factor * 2 * rows * a * b / (rates[f"{rows}x{a}x{b}:{p}"] * 1e9)
                        for rows, a, b in shapes[w]) * per_example_rows
            fastest = min(seconds[(w, "pythae", p)]) / min(seconds[(w, "vizoo", p)])
            print(f"| {w} | {p} | {speed['vizoo']:.1f} | {speed['pythae']:.1f} | {speed['vizoo'] / speed['pythae']:.2f}x "
                  f"| {fastest:.2f}x | {flops * speed['vizoo'] / 1e9:.0f} | {ideal * speed['vizoo']:.0%} |")
    if nll:
        print()
        print("| precision | vizoo NLL | pythae NLL | difference |")
        print("|---|---|---|---|")
        for p in PRECISIONS:
            print(f"| {p} | {nll[('vizoo', p)]:.3f} | {nll[('pythae', p)]:.3f} | "
                  f"{nll[('vizoo', p)] - nll[('pythae', p)]:+.3f} |")
    print()
    print("Seconds of each round:", "; ".join(
        f"{w} {name} {p}: " + ", ".join(f"{t:.2f}" for t in times) for (w, name, p), times in seconds.items()))
    print()
    print("| matmul [rows, in] x [in, out] | float32 GFLOP/s | bfloat16 GFLOP/s | bf16 / fp32 |")
    print("|---|---|---|---|")
    for rows, a, b in sorted({s for w in workloads for s in shapes[w]}):
        f32, b16 = rates[f"{rows}x{a}x{b}:float32"], rates[f"{rows}x{a}x{b}:bfloat16"]
        print(f"| [{rows}, {a}] x [{a}, {b}] | {f32:.0f} | {b16:.0f} | {b16 / f32:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
