"""Where the time of one evaluation chunk and one training step goes (medians of repeated runs).

Times, on the IWAE-paper architecture at batch 100, the pieces of the work and the
whole, each as its own compiled function:

    python benchmarks/profile_breakdown.py --output docs/profile.md

- `matmuls only`: the decoder's three plain matmuls on the same shapes (the floor);
- `decoder`: the Dense layers with bias and tanh;
- `log p(x|z)`: the Bernoulli log-probability on the decoder's logits;
- `noise + z`: drawing eps and z = mu + sigma * eps;
- `whole`: what vizoo runs (one chunk of `evaluate.log_likelihood`, one `train_step`).
For a sampling profile of the same code: py-spy record --native -- python benchmarks/profile_breakdown.py
"""

import argparse
import os
import platform


from benchmark import layer_flops, median_seconds  # noqa: E402  (this script's folder)


def median_ms(fn, *args):
    return 1000 * median_seconds(lambda: fn(*args).numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    batch, chunk, dim = 100, 25, 784
    x = tf.constant((np.random.default_rng(0).random((batch, dim)) < 0.3).astype("float32"))
    model = VAE(dim, 50, [200, 200])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=IWAELoss(k=5))
    model.build((None, dim))
    encoding = model.encode(x)
    eps = tf.random.normal([batch, chunk, 50])
    z, _ = model.posterior.transform(encoding, eps)
    logits = model.decode(z)["logits"]
    kernels = [layer.kernel for layer in model.decoder_layers] + [model.likelihood.logits_layer.kernel]
    rows = tf.reshape(z, [-1, 50])

    @tf.function(autograph=False)
    def matmuls(h):
        for kernel in kernels:
            h = tf.matmul(h, kernel)
        return h

    pieces = {
        "matmuls only": (matmuls, rows),
        "decoder": (tf.function(lambda z: model.decode(z)["logits"]), z),
        "log p(x|z)": (tf.function(lambda l: model.likelihood.log_prob(x, {"logits": l})), logits),
        "noise + z": (tf.function(lambda e: model.posterior.transform(e, model.posterior.sample_noise(e, chunk))[0]), encoding),
        "whole": (tf.function(lambda x: model.sample_terms(x, chunk, terms=("log_px_z",))["log_px_z"]), x),
    }
    encoder_flops, decoder_flops = layer_flops(dim)
    flops = batch * chunk * decoder_flops
    results = {name: median_ms(fn, arg) for name, (fn, arg) in pieces.items()}
    lines = [
        f"Evaluation chunk: batch {batch} x {chunk} samples = {batch * chunk} decoder rows, {flops / 1e6:.0f} MFLOP.",
        "",
        "| piece | median ms | share of whole | GFLOP/s (decoder FLOPs) |",
        "|---|---|---|---|",
    ]
    for name, ms in results.items():
        lines.append(f"| {name} | {ms:.2f} | {ms / results['whole']:.2f} | {flops / ms / 1e6:.1f} |")

    data = tf.data.Dataset.from_tensors(x).repeat()
    iterator = iter(data)
    model.make_train_function()
    step_ms = median_ms(lambda: model.train_function(iterator)["loss"])
    train_flops = 3 * batch * (encoder_flops + 5 * decoder_flops)
    forward_ms = median_ms(tf.function(lambda x: model(x)["log_px_z"]), x)
    lines += [
        "",
        f"IWAE k=5 training step, batch {batch}: {train_flops / 1e6:.0f} MFLOP (forward: a third).",
        "",
        "| piece | median ms | GFLOP/s |",
        "|---|---|---|",
        f"| forward (model(x)) | {forward_ms:.2f} | {train_flops / 3 / forward_ms / 1e6:.1f} |",
        f"| train step (forward, backward, Adam) | {step_ms:.2f} | {train_flops / step_ms / 1e6:.1f} |",
    ]
    # The input pipeline alone: one epoch of dynamically binarized training batches.
    import vizoo

    name = "fashion_mnist" if vizoo.data.idx.find_split_file(vizoo.data.DEBIAN_FASHION_MNIST_DIR, "train") else "digits"
    splits = vizoo.data.load(name, batch_size=batch)

    def one_epoch():
        for _ in splits.train:
            pass

    pipeline_rate = splits.num_train / median_seconds(one_epoch, repeats=3)
    lines += [
        "",
        f"Input pipeline alone ({name}, dynamic binarization, batch {batch}): "
        f"{pipeline_rate:,.0f} examples/s, {1000 * batch / pipeline_rate:.2f} ms per batch "
        f"against {step_ms:.2f} ms per IWAE k=5 training step.",
    ]
    print("\n".join(lines))
    if args.output:
        header = [
            "# Where the time goes",
            "",
            "Written by `python benchmarks/profile_breakdown.py --output docs/profile.md` on",
            f"{platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}. Each piece is its own",
            "compiled function, timed alone (medians of 30 runs); pieces overlap in `whole` because",
            "TensorFlow runs independent ops on both cores at once. The matmul rows are the floor;",
            "what `whole` adds to them is bias, tanh, the Bernoulli log-probability (a softplus per",
            "pixel and sample), sampling and reductions: memory-bound elementwise work.",
            "",
        ]
        with open(args.output, "w") as f:
            f.write("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
