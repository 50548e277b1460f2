"""Pictures of a trained model (matplotlib, PNG): samples, reconstructions, training curves, 2-D posteriors.

`train.py` writes them into every run directory; re-create them from a saved
run (its `model.keras`, `config.json` and `history.csv`) with

    python -m vizoo.plots runs/latest

or compare the posteriors of several runs with 2-D latents in one figure
(the IWAE paper's figure 1: the VAE's q(z|x) fits its true posterior more
tightly than the IWAE's, whose true posterior is broader):

    python train.py --loss elbo --latent-dim 2 --out-dir runs/vae2
    python train.py --loss iwae --k 50 --latent-dim 2 --out-dir runs/iwae2
    python -m vizoo.plots runs/vae2 runs/iwae2 --out posteriors.png

matplotlib is imported when a picture is drawn, with the non-interactive
"Agg" backend (files only, no display needed).
"""

import argparse
import csv
import json
import math
import os
import sys

import keras
import numpy as np

SAMPLES_FILE = "samples.png"
RECONSTRUCTIONS_FILE = "reconstructions.png"
CURVES_FILE = "training_curves.png"
POSTERIORS_FILE = "posteriors.png"
MAX_POSTERIOR_EXAMPLES = 16  # test examples a run's pictures draw (reconstructions; the posterior figure's rows)
PICTURES = (SAMPLES_FILE, RECONSTRUCTIONS_FILE, CURVES_FILE, POSTERIORS_FILE)  # what plot_run may draw


def _save(fig, path):
    """Write the figure as a PNG atomically (an interrupted or failed write leaves the picture that was there),
    then close it."""
    from vizoo.callbacks import _write_atomically

    try:
        _write_atomically(os.fspath(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    finally:
        _pyplot().close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _image_side(input_dim):
    side = int(round(math.sqrt(input_dim)))
    return side if side * side == input_dim else None


def _tile(images, side, columns):
    """`[n, side*side]` -> one `[rows*side, columns*side]` array with 1-pixel gaps."""
    rows = math.ceil(len(images) / columns)
    canvas = np.ones((rows * (side + 1) - 1, columns * (side + 1) - 1), dtype=np.float32)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        canvas[r * (side + 1) : r * (side + 1) + side, c * (side + 1) : c * (side + 1) + side] = image.reshape(side, side)
    return canvas


def _first_examples(data, num_examples):
    """The first `num_examples` rows of an array or of a batched dataset of x (or (x, ...) tuples)."""
    if isinstance(data, np.ndarray):
        return data[:num_examples].astype(np.float32)
    batches, count = [], 0
    for batch in data:
        x = np.asarray(batch[0] if isinstance(batch, tuple) else batch)
        batches.append(x)
        count += len(x)
        if count >= num_examples:
            break
    return np.concatenate(batches)[:num_examples].astype(np.float32)


def plot_samples(model, path, num_samples=64, seed=0):
    """Means of p(x|z) for z drawn from the prior, on a grid. Returns `path`, or None if x is not a square image.

    Args:
        model: a trained model with `generate(n, seed)` (e.g. `VAE`).
        path: str, the PNG to write.
        num_samples: int, images in the grid.
        seed: int, seed of the prior draws.

    Returns:
        str or None.
    """
    side = _image_side(model.input_dim)
    if side is None or not model.generates:
        return None
    images = np.asarray(model.generate(num_samples, seed=seed))
    plt = _pyplot()
    columns = int(math.ceil(math.sqrt(num_samples)))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(_tile(images, side, columns), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title("samples: mean of p(x|z), z ~ p(z)")
    ax.axis("off")
    _save(fig, path)
    return path


def plot_reconstructions(model, x, path, num_examples=16):
    """Data (top row of each pair) beside the mean of p(x|z) at z = E_q[z|x] (below it).

    Args:
        model: a trained model with `posterior_mean`, `decode` and a likelihood with `mean`.
        x: `[n, input_dim]` data (the first `num_examples` rows are used).
        path: str, the PNG to write.
        num_examples: int.

    Returns:
        str, or None if x is not a square image or the model has no decoder mean.
    """
    side = _image_side(model.input_dim)
    if side is None or not model.decodes:
        return None
    x = np.asarray(x[:num_examples], dtype=np.float32)
    z = model.posterior_mean(x)
    reconstructions = np.asarray(model.likelihood.mean(model.decode(z)))
    columns = min(8, len(x))
    pairs = []
    for start in range(0, len(x), columns):
        pairs += list(x[start : start + columns]) + list(reconstructions[start : start + columns])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(columns * 0.7 + 0.5, len(pairs) / columns * 0.7 + 0.5))
    ax.imshow(_tile(np.asarray(pairs), side, columns), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title("data (upper rows) and reconstructions (lower rows)")
    ax.axis("off")
    _save(fig, path)
    return path


def plot_history(history_csv, path, value_name="bound"):
    """Training curves from a `history.csv`: the training and validation bounds per epoch (and beta).

    The loss Keras logs is the negated bound, so the curves show the bound in
    nats (higher is better). `value_name` is what the loss's value is (its
    `value_name`: `"estimate"` for a loss that is not a bound, e.g. Rényi with
    alpha < 0). Returns `path`, or None if there is no epoch.
    """
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None

    def column(name):
        values = [row.get(name) for row in rows]
        return None if any(v in (None, "", "NA") for v in values) else np.array(values, dtype=np.float64)

    epochs = column("epoch")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label in (("loss", f"training {value_name}"), ("val_loss", f"validation {value_name}")):
        values = column(name)
        if values is not None:
            ax.plot(epochs, -values, marker="o" if len(rows) < 30 else None, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{value_name} of log p(x) (nats)" if value_name != "bound" else "bound on log p(x) (nats)")
    beta = column("kl_weight")
    if beta is not None:
        twin = ax.twinx()
        twin.plot(epochs, beta, color="gray", linestyle="--", label="KL weight beta")
        twin.set_ylabel("KL weight beta")
        twin.set_ylim(-0.05, 1.05)
        twin.legend(loc="lower right")
    ax.legend(loc="upper left" if beta is not None else "best")
    ax.grid(alpha=0.3)
    ax.set_title("training curves")
    _save(fig, path)
    return path


def posterior_grids(model, x, grid_size=80, extent=3.5, num_samples=20000, seed=0):
    """The true posterior p(z|x) and q(z|x) on a grid, for a model with 2-D latents.

    p(z|x) ∝ p(x|z) p(z) is evaluated at the grid's cell centres and
    normalized numerically; q(z|x) is its density on the same grid where the
    posterior has one (Gaussians), else a histogram of `num_samples` samples
    (flows).

    Args:
        model: a model with `latent_dim == 2`, `decode`, `likelihood`, `prior`, `encode`.
        x: `[n, input_dim]` examples.
        grid_size: int, cells per axis.
        extent: float, the grid spans [-extent, extent]^2.

    Returns:
        `(true, approx, edges)`: two `[n, grid_size, grid_size]` arrays of
        probabilities per cell (rows: z_2, columns: z_1; each sums to 1 over the
        grid) and the `[grid_size + 1]` cell edges.
    """
    from keras import ops

    if model.latent_dim != 2:
        raise ValueError(f"posterior_grids needs a model with latent_dim=2. Received: latent_dim={model.latent_dim}")
    x = np.asarray(x, dtype=np.float32)
    edges = np.linspace(-extent, extent, grid_size + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    z1, z2 = np.meshgrid(centres, centres)  # [rows: z2, columns: z1]
    z = np.stack([z1.ravel(), z2.ravel()], axis=-1).astype(np.float32)  # [G*G, 2]
    decoded = model.decode(ops.convert_to_tensor(z))
    log_pz = np.asarray(model.prior(ops.convert_to_tensor(z)), dtype=np.float64)  # [G*G]
    true, approx = [], []
    has_log_prob = model.posterior.has_log_prob  # else a histogram of samples
    encoding = model.encode(ops.convert_to_tensor(x))
    if not has_log_prob:  # drawn 1,000 per example at a time: a hierarchical q's samples carry K reverse samples each
        generator = keras.random.SeedGenerator(seed)
        samples = np.concatenate(
            [
                np.asarray(model.sample_terms(ops.convert_to_tensor(x), size, seed=generator, terms=("z",))["z"])
                for size in [1000] * (num_samples // 1000) + ([num_samples % 1000] if num_samples % 1000 else [])
            ],
            axis=1,
        )
    for i in range(len(x)):
        log_px_z = np.asarray(model.likelihood.log_prob(ops.convert_to_tensor(x[i : i + 1]), decoded), dtype=np.float64)
        log_joint = (log_px_z + log_pz).reshape(grid_size, grid_size)
        p = np.exp(log_joint - log_joint.max())
        true.append(p / p.sum())
        if has_log_prob:
            params = {key: value[i : i + 1] for key, value in encoding.items()}
            log_q = np.asarray(model.posterior.log_prob(ops.convert_to_tensor(z), params), dtype=np.float64)
            q = np.exp(log_q - log_q.max()).reshape(grid_size, grid_size)
        else:
            q, _, _ = np.histogram2d(samples[i, :, 1], samples[i, :, 0], bins=[edges, edges])
        approx.append(q / max(q.sum(), 1e-300))
    return np.array(true), np.array(approx), edges


def plot_posteriors(models, x, path, grid_size=80, extent=3.5):
    """Heatmaps of the true posterior p(z|x) next to q(z|x) for a few x, one pair of columns per model.

    The IWAE paper's figure 1 (VAE vs IWAE with k=5 and 50): an IWAE's q is
    broader than its true posterior; a VAE's q fits its (tighter) posterior.

    Args:
        models: a model with 2-D latents, or a list of `(label, model)`.
        x: `[n, input_dim]` examples (a few: one row each).
        path: str, the PNG to write.

    Returns:
        str, `path`.
    """
    if not isinstance(models, (list, tuple)):
        models = [("", models)]
    x = np.asarray(x, dtype=np.float32)
    plt = _pyplot()
    columns = 2 * len(models)
    fig, axes = plt.subplots(len(x), columns, figsize=(2.1 * columns, 2.1 * len(x)), squeeze=False)
    for m, (label, model) in enumerate(models):
        true, approx, edges = posterior_grids(model, x, grid_size, extent)
        for i in range(len(x)):
            for j, (grid, name) in enumerate(((true[i], "p(z|x)"), (approx[i], "q(z|x)"))):
                ax = axes[i, 2 * m + j]
                ax.imshow(grid, origin="lower", extent=(edges[0], edges[-1], edges[0], edges[-1]), cmap="viridis")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{label}\n{name}" if label else name, fontsize=9)
    fig.suptitle(f"true posterior vs q(z|x) on [-{extent}, {extent}]^2", fontsize=10)
    _save(fig, path)
    return path


def _load_run(run_dir):
    """`(model, test data)` of a saved run: its model.keras and config.json."""
    import vizoo
    from vizoo.data import load_from_config

    model_path = os.path.join(run_dir, "model.keras")
    config_path = os.path.join(run_dir, "config.json")
    for path in (model_path, config_path):
        if not os.path.exists(path):
            raise ValueError(
                f"run_dir must be a finished run of train.py (it has no {os.path.basename(path)}). Received: run_dir={run_dir!r}"
            )
    with open(config_path) as f:
        config = json.load(f)
    model = vizoo.load_model(model_path)  # a corrupt or truncated file is named
    return model, load_from_config(config).test


def plot_run(run_dir, model=None, data=None, history=None, num_posteriors=4):
    """Write a run's pictures into `run_dir`; return the paths written.

    `samples.png` (from the prior), `reconstructions.png` (data beside
    reconstructions; both for square images), `training_curves.png` (from
    `history.csv`) and, for 2-D latents, `posteriors.png` (p(z|x) next to
    q(z|x) for `num_posteriors` test examples).

    Args:
        run_dir: str, a run directory of `train.py`.
        model: optional trained model; default the run's `model.keras`.
        data: optional test data (array or dataset); default the run's test
            split, loaded as its `config.json` says.
        history: optional path of the history CSV; default `run_dir/history.csv`.

    Returns:
        list of str.

    Example:
        >>> vizoo.plots.plot_run("runs/latest")
        ['runs/latest/samples.png', 'runs/latest/reconstructions.png', 'runs/latest/training_curves.png']
    """
    if model is None or data is None:
        loaded_model, loaded_data = _load_run(run_dir)
        model = loaded_model if model is None else model
        data = loaded_data if data is None else data
    x = _first_examples(data, MAX_POSTERIOR_EXAMPLES)
    written = [
        plot_samples(model, os.path.join(run_dir, SAMPLES_FILE)),
        plot_reconstructions(model, x, os.path.join(run_dir, RECONSTRUCTIONS_FILE)),
    ]
    history = history or os.path.join(run_dir, "history.csv")
    if os.path.exists(history):
        value_name = getattr(getattr(model, "loss", None), "value_name", "bound")  # the compiled loss's
        written.append(plot_history(history, os.path.join(run_dir, CURVES_FILE), value_name))
    if model.latent_dim == 2 and model.decodes:
        written.append(plot_posteriors(model, x[:num_posteriors], os.path.join(run_dir, POSTERIORS_FILE)))
    return [path for path in written if path is not None]


def main(argv=None):
    """`python -m vizoo.plots RUN_DIR [RUN_DIR ...] [--out FILE]`."""
    parser = argparse.ArgumentParser(
        prog="python -m vizoo.plots",
        description="Re-create a train.py run's pictures in its directory; with several runs with 2-D latents, "
        "compare their true and approximate posteriors in one figure.",
    )
    parser.add_argument("run_dirs", nargs="+", help="run directories of train.py (--out-dir)")
    parser.add_argument("--out", default=None, help="with several runs: the comparison PNG (default posteriors.png)")
    parser.add_argument("--examples", type=int, default=4, help="test examples in the posterior figure")
    args = parser.parse_args(argv)
    try:
        if not 1 <= args.examples <= MAX_POSTERIOR_EXAMPLES:
            raise ValueError(
                f"examples must be between 1 and {MAX_POSTERIOR_EXAMPLES} (the figure's rows). "
                f"Received: examples={args.examples}"
            )
        if len(args.run_dirs) == 1 and args.out is None:
            written = plot_run(args.run_dirs[0], num_posteriors=args.examples)
        else:
            loaded = [(os.path.basename(os.path.normpath(d)), *_load_run(d)) for d in args.run_dirs]
            for label, model, _ in loaded:
                if model.latent_dim != 2:
                    raise ValueError(f"comparing posteriors needs runs with latent_dim=2. Received: {label} with latent_dim={model.latent_dim}")
            x = _first_examples(loaded[0][2], args.examples)
            written = [plot_posteriors([(label, model) for label, model, _ in loaded], x, args.out or POSTERIORS_FILE)]
    except (ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
