"""The 4-point toy example of Adversarial Variational Bayes (Mescheder et al. 2017, section 5.1).

x is one of 4 one-hot points (uniform), z is 2-D, p(z) = N(0, I), p(x|z) four Bernoulli bits from a
decoder of z. Two models train the same number of steps with the same learning rate:

- AVB: an implicit sampler z = f(x, eps) (`ImplicitPosterior`, noise concatenated), its adversary T(x, z),
  `AVBLoss` with 2 adversary steps per step (the paper's toy setting);
- VAE: a diagonal Gaussian q(z|x) with the ELBO.

Each q(z|x) is compared with its own model's true posterior p(z|x) ∝ p(x|z) p(z), computed on a grid over
[-4, 4]^2 (40 x 40 bins), by the total variation distance between the grid posterior's bin masses and the
histogram of 20,000 samples of q (mass outside the grid counts as error). With `--frozen-decoder` both
train q alone against one fixed decoder (logits 6 u_j . z - 1, u_j the 4 diagonal directions), so that they
chase the same posteriors; that variant, small, is what tests/models/test_avb_toy.py runs in CI.

    python benchmarks/avb_toy.py                      # the paper's setting: decoder trained too; writes docs/avb_toy.png
    python benchmarks/avb_toy.py --frozen-decoder --steps 600 --no-plot
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from anywhere: vizoo from this checkout
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

LIMIT, BINS, SAMPLES = 4.0, 40, 20000  # the grid [-LIMIT, LIMIT]^2, bins per axis, samples of q per x
DIRECTIONS = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) / np.sqrt(2.0)  # the frozen decoder's u_j
POINTS = np.eye(4, dtype="float32")
# The frozen decoder's logits DECODER_SCALE u_j . z - 1: each posterior is a narrow ridge along a diagonal u_j, which an
# axis-aligned Gaussian cannot follow.
DECODER_SCALE = 6.0


def build(kind, frozen_decoder, hidden=64, seed=0, learning_rate=3e-3):
    """The AVB or VAE model of the toy (compiled): 4 -> z (2-D) -> 4 Bernoulli bits."""
    import vizoo  # noqa: F401  (first: it filters TensorFlow's start-up notices)
    import keras

    from vizoo.layers import Adversary, ImplicitPosterior
    from vizoo.losses import AVBLoss, ELBOLoss
    from vizoo.models import VAE

    keras.utils.set_random_seed(seed)
    # A frozen decoder is linear (logits 6 u_j . z - 1); a trained one an MLP, as the paper's.
    hidden_units = [] if frozen_decoder else [hidden, hidden]
    if kind == "avb":
        posterior = ImplicitPosterior(2, noise_dim=8, hidden_units=[hidden, hidden], activation="relu", name="posterior")
        model = VAE(4, 2, hidden_units=hidden_units, activation="relu", posterior=posterior, seed=seed,
                    adversary=Adversary(hidden_units=[hidden, hidden], feature_dim=16, name="adversary"))
        loss, group_optimizers = AVBLoss(k=4, adversary_steps=2), {
            "adversary": keras.optimizers.Adam(2 * learning_rate, beta_1=0.5)}
    else:
        model = VAE(4, 2, hidden_units=hidden_units, activation="relu", seed=seed)
        loss, group_optimizers = ELBOLoss(k=4), {}
    model.build((None, 4))
    if frozen_decoder:
        model.likelihood.set_weights([DECODER_SCALE * DIRECTIONS.T, -np.ones(4)])
        model.likelihood.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5), loss=loss, group_optimizers=group_optimizers,
                  steps_per_execution=50)
    return model


def train(model, steps, batch_size=64, seed=0):
    """`steps` steps on batches of the 4 points drawn uniformly."""
    rng = np.random.default_rng(seed)
    x = POINTS[rng.integers(0, 4, size=steps * batch_size)]
    model.fit(x, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return model


def grid():
    edges = np.linspace(-LIMIT, LIMIT, BINS + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    z1, z2 = np.meshgrid(centres, centres, indexing="ij")
    return edges, np.stack([z1.ravel(), z2.ravel()], axis=-1).astype("float32")  # [BINS^2, 2]


def true_posteriors(model):
    """`[4, BINS, BINS]` masses of p(z|x) ∝ p(x|z) p(z) on the grid's bins (midpoint rule), one per point x."""
    _, z = grid()
    zs = np.broadcast_to(z[None], (4, len(z), 2))
    terms = model.joint_terms(POINTS, zs)
    log_joint = np.asarray(terms["log_px_z"], "float64") + np.asarray(terms["log_pz"], "float64")  # [4, BINS^2]
    mass = np.exp(log_joint - log_joint.max(axis=1, keepdims=True))
    return (mass / mass.sum(axis=1, keepdims=True)).reshape(4, BINS, BINS)


def posterior_samples(model, seed=1):
    return np.asarray(model.sample_terms(POINTS, SAMPLES, seed=seed, terms=("z",))["z"], "float64")  # [4, S, 2]


def total_variations(model, seed=1):
    """TV(q(z|x), p(z|x)) for each of the 4 points: histogram of q's samples against the grid posterior."""
    edges, _ = grid()
    truth = true_posteriors(model)
    samples = posterior_samples(model, seed)
    distances = []
    for i in range(4):
        counts, _, _ = np.histogram2d(samples[i, :, 0], samples[i, :, 1], bins=[edges, edges])
        q = counts / SAMPLES  # mass outside the grid is missing from q: counted as error below
        distances.append(0.5 * (np.abs(q - truth[i]).sum() + (1.0 - q.sum())))
    return np.array(distances)


def plot(models, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, _ = grid()
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.3), dpi=80)
    for ax, (name, model, tv) in zip(np.atleast_1d(axes), models):
        truth, samples = true_posteriors(model), posterior_samples(model)
        centres = 0.5 * (edges[1:] + edges[:-1])
        for i in range(4):
            ax.contour(centres, centres, truth[i].T, levels=4, colors=colours[i], linewidths=0.8)
            ax.scatter(samples[i, :400, 0], samples[i, :400, 1], s=1.5, color=colours[i], alpha=0.5)
        ax.set(xlim=(-LIMIT, LIMIT), ylim=(-LIMIT, LIMIT), aspect="equal", xticks=[-3, 0, 3], yticks=[-3, 0, 3])
        ax.set_title(f"{name}: mean TV {tv.mean():.2f}", fontsize=9)
    fig.suptitle("q(z|x) samples (dots) vs true p(z|x) (contours), 4 points", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frozen-decoder", action="store_true", help="train q alone against a fixed decoder")
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "avb_toy.png"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for kind in ("avb", "vae"):
        model = train(build(kind, args.frozen_decoder, seed=args.seed), args.steps, seed=args.seed)
        tv = total_variations(model)
        print(f"{kind}: TV per point {np.round(tv, 3).tolist()}, mean {tv.mean():.3f}", flush=True)
        results.append(("AVB (implicit q)" if kind == "avb" else "VAE (diagonal q)", model, tv))
    if not args.no_plot:
        plot(results, args.output)
        print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
