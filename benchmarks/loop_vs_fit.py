"""vizoo's own training loop against Keras's `fit`, float32 and bfloat16, timed alternating in one process.

The IWAE paper's model (784-200-200-50 tanh MLPs, Bernoulli decoder) trained with IWAE k=5 at
batch 100 on binarized Fashion-MNIST (`vizoo.data.load`, dynamic binarization: the pipeline
`train.py` uses), 10 steps per compiled call in every variant:

- `fit`: `model.fit(steps_per_execution=10)`, what `train.py` runs today;
- `loop`: `vizoo.distribute.train(steps_per_execution=10)`: the ten steps unrolled in one
  `tf.function` (the model's own `gradient_step` under `strategy.run`);
- `loop + XLA`: the same with `jit_compile=True`: each call's ten steps are one XLA program
  (which `fit(jit_compile=True)` does not build: it compiles one step at a time).

Each variant has its own model (same seed), traced by an untimed first epoch. Every round then
times one epoch (`--train-examples` examples) of each variant in turn, precisions interleaved;
the table gives medians over `--rounds` rounds, in ms per training step and relative to `fit` of
the same precision, and the seconds of every round follow it. Run it alone on the machine: anything
else running moves the timings.

    python benchmarks/loop_vs_fit.py                      # the full measurement (60,000 examples, 5 rounds)
    python benchmarks/loop_vs_fit.py --train-examples 2000 --rounds 2   # a quick check that it runs
"""

import argparse
import statistics
import sys
import time

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
VARIANTS = ("fit", "loop", "loop + XLA")
STEPS_PER_EXECUTION = 10
BATCH_SIZE = 100


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-examples", type=int, default=60000, help="examples per timed epoch")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), help="float32 and/or bfloat16")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX files (default: Debian's, else TFDS)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("train_examples", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be an integer >= 1. Received: {getattr(args, name)}")
    if args.train_examples < BATCH_SIZE:
        raise SystemExit(
            f"--train-examples must be at least the batch size {BATCH_SIZE}. Received: {args.train_examples}"
        )
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        raise SystemExit(f"--precisions must be among {list(PRECISIONS)}. Received: {unknown}")

    import vizoo  # first: it filters TensorFlow's start-up notices

    import keras

    splits = vizoo.data.load(
        "fashion_mnist", batch_size=BATCH_SIZE, seed=0, data_dir=args.data_dir, validation_size=0
    )
    train = splits.train.take(args.train_examples // BATCH_SIZE)  # whole batches: every step the same size
    steps = int(train.cardinality())

    def build(precision):
        keras.utils.set_random_seed(0)
        model = vizoo.models.VAE(splits.input_dim, 50, [200, 200], seed=0, dtype=PRECISIONS[precision])
        model.initialize_output_bias(splits.train_mean)
        model.compile(
            optimizer=vizoo.optimizers.Adam(1e-3),
            loss=vizoo.losses.IWAELoss(k=5),
            steps_per_execution=STEPS_PER_EXECUTION,
        )
        return model

    def epoch_of(variant, model):
        if variant == "fit":
            return lambda: model.fit(train, epochs=1, verbose=0)
        jit_compile = variant == "loop + XLA"
        return lambda: vizoo.distribute.train(
            model, train, 1, steps_per_execution=STEPS_PER_EXECUTION, jit_compile=jit_compile, verbose=0
        )

    runs = {}
    for precision in args.precisions:
        for variant in VARIANTS:
            run = epoch_of(variant, build(precision))
            run()  # traced (and XLA-compiled) here, untimed
            runs[precision, variant] = run
    seconds = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[key].append(time.perf_counter() - start)

    print(
        f"IWAE k=5, 784-200-200-50, batch {BATCH_SIZE}, {STEPS_PER_EXECUTION} steps per call, "
        f"{steps} steps per timed epoch, {args.rounds} alternating rounds (medians)"
    )
    print("| precision | training | ms per step | vs fit |")
    print("|---|---|---|---|")
    for precision in args.precisions:
        base = statistics.median(seconds[precision, "fit"])
        for variant in VARIANTS:
            median = statistics.median(seconds[precision, variant])
            print(f"| {precision} | {variant} | {median / steps * 1000:.2f} | {median / base:.2f}x the time |")
    print("Seconds of each round: " + "; ".join(
        f"{precision} {variant}: " + ", ".join(f"{s:.2f}" for s in seconds[precision, variant])
        for precision, variant in runs
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
