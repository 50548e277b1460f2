"""What each speed change of docs/speed.md bought, timed alternating in one process.

On the IWAE paper's 784-200-200-50 model at batch 100 (IWAE k=5 training steps, 10 per
compiled call, and `log_likelihood` at k=1000 on 100 examples), each row pits vizoo as it is
against one change undone:

- `3-D decoder`: the MLP applied to z `[batch, k, latent]` directly (Keras then uses a tensordot,
  with the bias and tanh as separate passes), as before the decoder ran on rows;
- `Keras Adam`: `keras.optimizers.Adam` instead of `vizoo.optimizers.Adam`;
- `XLA step`: the whole training step compiled with XLA (`jit_compile=True`);
- `evaluation, first call` against `second call`: what the per-model cache of compiled
  sampling loops saves on every call after the first.

    python benchmarks/step_variants.py --precision float32
"""

import argparse
import statistics
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hidden-units", default="200,200", help="the MLPs' widths (a smaller model for a quick check)")
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--steps-per-call", type=int, default=10, help="training steps unrolled in one compiled call")
    parser.add_argument("--eval-k", type=int, default=1000)
    args = parser.parse_args(argv)
    for name in ("rounds", "latent_dim", "steps_per_call", "eval_k"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be an integer >= 1. Received: {getattr(args, name)}")
    try:
        hidden_units = [int(width) for width in args.hidden_units.split(",")]
    except ValueError:
        hidden_units = []
    if not hidden_units or min(hidden_units) < 1:
        raise SystemExit(f"--hidden-units must be comma-separated positive integers. Received: {args.hidden_units!r}")

    import vizoo  # first: it filters TensorFlow's start-up notices

    import keras
    import numpy as np
    import tensorflow as tf

    from vizoo.models import VAE

    rng = np.random.default_rng(0)
    x = tf.constant((rng.random((100, 784)) < 0.3).astype("float32"))

    def decode_3d(self, z):  # what VAE.decode did before it flattened z to rows
        h = z
        for layer in self.decoder_layers:
            h = layer(h)
        return self.likelihood(h)

    rows_decode = VAE.decode
    own_methods = set(VAE.__dict__)  # to restore VAE as it was (decode may be inherited)
    variants = {  # name: (decode, optimizer class, jit_compile)
        "vizoo": (rows_decode, vizoo.optimizers.Adam, False),
        "3-D decoder": (decode_3d, vizoo.optimizers.Adam, False),
        "Keras Adam": (rows_decode, keras.optimizers.Adam, False),
        "XLA step": (rows_decode, vizoo.optimizers.Adam, True),
    }
    steps = {}
    for name, (decode, optimizer, jit_compile) in variants.items():
        VAE.decode = decode  # traced below with this variant
        keras.utils.set_random_seed(0)
        model = VAE(784, args.latent_dim, hidden_units, seed=0, dtype=args.precision)
        model.compile(optimizer=optimizer(1e-3), loss=vizoo.losses.IWAELoss(k=5))
        model.build((None, 784))
        model.optimizer.build(model.trainable_variables)

        @tf.function(jit_compile=jit_compile)
        def train_steps(model=model):
            for _ in range(args.steps_per_call):  # unrolled: XLA compiles the steps as one program
                model.train_step(x)

        train_steps()
        steps[name] = train_steps
    if "decode" in VAE.__dict__ and "decode" not in own_methods:
        del VAE.decode  # back to the inherited method, as the class defines it
    else:
        VAE.decode = rows_decode

    step_ms = {name: [] for name in variants}
    first, second = [], []
    for _ in range(args.rounds):
        for name, train_steps in steps.items():
            start = time.perf_counter()
            for _ in range(10):
                train_steps()
            step_ms[name].append((time.perf_counter() - start) / (10 * args.steps_per_call) * 1000)
        model = VAE(784, args.latent_dim, hidden_units, seed=0, dtype=args.precision)  # a new model: nothing compiled yet
        for seconds in (first, second):
            start = time.perf_counter()
            vizoo.evaluate.log_likelihood(model, x, k=args.eval_k, seed=0)
            seconds.append(time.perf_counter() - start)

    print(f"{args.precision}, 784-{args.hidden_units.replace(',', '-')}-{args.latent_dim}, {args.steps_per_call} steps per call, "
          f"{args.rounds} alternating rounds (medians)")
    print("| training step | ms | vs vizoo |")
    print("|---|---|---|")
    base = statistics.median(step_ms["vizoo"])
    for name, times in step_ms.items():
        print(f"| {name} | {statistics.median(times):.2f} | {statistics.median(times) / base:.2f}x the time |")
    print(f"log_likelihood, k={args.eval_k}, 100 examples: first call on a model {statistics.median(first):.2f} s, "
          f"second call {statistics.median(second):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
