"""`python train.py` / `vizoo-train`: train a model on a dataset, evaluate it, export its encoder.

Wiring only: the math lives in vizoo.models, vizoo.losses and vizoo.evaluate.
"""

import argparse
import inspect
import json
import math
import os
import sys
import time

from vizoo import config as run_config
from vizoo.layers import POSTERIORS, PRIORS, FlowPosterior, GaussianPosterior
from vizoo.losses import LOSSES
from vizoo.models import MODELS


# Options passed to the loss when set (each applies to the losses whose constructor takes it).
_LOSS_OPTIONS = ("analytic_kl", "gradient_estimator", "kl_warmup_epochs", "free_bits", "free_bits_groups")


def _accepts(cls, argument):
    """Whether `cls(...)` takes the keyword `argument` (so options follow the registries, not lists here)."""
    return argument in inspect.signature(cls.__init__).parameters


def build_parser():
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a vizoo latent-variable model, estimate its test log-likelihood and export its encoder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="vae", help=f"model family, one of {list(MODELS)}")
    parser.add_argument("--loss", default="iwae", help=f"training bound, one of {list(LOSSES)}")
    parser.add_argument("--k", type=int, default=5, help="samples per example in the training bound")
    parser.add_argument("--analytic-kl", action="store_true", help="ELBO with the closed-form KL term")
    parser.add_argument(
        "--gradient-estimator",
        default=None,
        help="encoder gradient of the IWAE bound: dreg (Tucker et al. 2019) or stl (Roeder et al. 2017); "
        "default the plain reparameterized gradient",
    )
    parser.add_argument("--latent-dim", type=int, default=50, help="dimension of z (vae)")
    parser.add_argument(
        "--sbn-layers",
        type=int,
        nargs="+",
        default=None,
        help="sizes of the sbn's stochastic layers of binary units, h_1 (next to x) first (default 200 200 200)",
    )
    parser.add_argument(
        "--hidden-units",
        type=int,
        nargs="*",
        default=None,
        help="MLP hidden layer sizes (default the model's own: vae 200 200; sbn none, the papers' linear SBN)",
    )
    parser.add_argument("--activation", default="tanh", help="hidden activation")
    parser.add_argument("--posterior", default="diagonal", help=f"q(z|x), one of {list(POSTERIORS)}")
    parser.add_argument(
        "--flow-steps", type=int, default=None, help="steps of a flow posterior (default: IAF 2, planar/radial 4)"
    )
    parser.add_argument(
        "--flow-hidden-units", type=int, nargs="+", default=[320, 320], help="hidden layers of each IAF step's MADE"
    )
    parser.add_argument(
        "--aux-dim", type=int, default=None, help="dimension of the hierarchical posterior's psi (default latent dim)"
    )
    parser.add_argument(
        "--reverse-samples",
        type=int,
        default=None,
        help="K, reverse samples psi ~ tau(psi|z,x) per z of the hierarchical posterior (its default K) and of the "
        "iwhvi loss (default 10)",
    )
    parser.add_argument(
        "--eval-reverse-samples",
        type=int,
        default=None,
        help="K for the test log p(x) of a hierarchical posterior (default its own K; larger is tighter)",
    )
    parser.add_argument("--prior", default="standard_normal", help=f"p(z), one of {list(PRIORS)}")
    parser.add_argument(
        "--prior-components",
        type=int,
        default=None,
        help="mixture components (default 10) or VampPrior pseudo-inputs (default 500, drawn from training data)",
    )
    parser.add_argument("--prior-flow-steps", type=int, default=2, help="MAF steps of the maf prior")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=100, help="training batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument(
        "--control-lr",
        type=float,
        default=None,
        help="learning rate of an Adam of its own for the control group (baselines such as nvil's, a hierarchical "
        "posterior's reverse model); default: the control group shares the main optimizer",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=10,
        help="training steps per compiled call (fewer Python round trips; 10 trained 1.6x faster on 2 CPU cores)",
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits (scikit-learn's, offline), fashion_mnist (IDX files or TFDS), or any TFDS image dataset name",
    )
    parser.add_argument("--data-dir", default=None, help="directory of IDX files, or a TFDS data directory")
    parser.add_argument(
        "--validation-size", type=int, default=None, help="examples held out of train (default: see vizoo.data.load)"
    )
    parser.add_argument(
        "--binarization", default="dynamic", help="dynamic, static, threshold or none (see vizoo.data.load)"
    )
    parser.add_argument("--out-dir", default=os.path.join("runs", "latest"), help="where outputs are written")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and noise")
    parser.add_argument("--eval-k", type=int, default=5000, help="importance samples for test log p(x)")
    parser.add_argument(
        "--verbose", type=int, default=2, help="Keras fit verbosity (0, 1 or 2); 1 and 2 show evaluation's progress bar"
    )
    parser.add_argument(
        "--kl-warmup-epochs",
        type=int,
        default=0,
        help="linear KL warm-up: beta from 0 to 1 over this many epochs, in the training objective only (elbo, iwae)",
    )
    parser.add_argument(
        "--free-bits", type=float, default=0.0, help="free bits lambda, nats per group of latent dimensions (elbo)"
    )
    parser.add_argument(
        "--free-bits-groups", type=int, default=None, help="contiguous groups of latent dimensions for free bits (default one per dimension)"
    )
    parser.add_argument(
        "--precision",
        default="float32",
        help="training precision: float32, mixed_bfloat16 (CPUs with AMX/AVX512-BF16, recent GPUs) or mixed_float16 "
        "(GPUs); densities and log-sum-exps stay float32",
    )
    parser.add_argument(
        "--eval-precision", default=None, help="precision of the test log p(x) evaluation (default: --precision)"
    )
    parser.add_argument(
        "--distribute", default="none", help="none, or mirrored (synchronous training on every local GPU)"
    )
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to OUT_DIR/tensorboard")
    parser.add_argument(
        "--config", default=None, help="JSON or YAML file of options (e.g. a run's config.json); flags given override it"
    )
    parser.add_argument(
        "--restart", action="store_true", help="discard OUT_DIR's checkpoint of an interrupted run instead of resuming it"
    )
    parser.add_argument(
        "--plots-only", action="store_true", help="only re-create the pictures of the finished run in OUT_DIR"
    )
    return parser


def _check_args(args):
    from vizoo.distribute import STRATEGIES, get_strategy
    from vizoo.precision import check_precision
    from vizoo.utils import check_choice, check_non_negative_int, check_positive_int

    check_choice(args.model, "model", MODELS)
    check_choice(args.loss, "loss", LOSSES)
    check_choice(args.posterior, "posterior", POSTERIORS)
    check_choice(args.prior, "prior", PRIORS)
    check_precision(args.precision, "precision")
    if args.eval_precision is not None:
        check_precision(args.eval_precision, "eval_precision")
    check_choice(args.distribute, "distribute", STRATEGIES)
    if args.distribute == "multi_worker":
        get_strategy("multi_worker")  # refused, with the reason
    for name in ("k", "latent_dim", "epochs", "batch_size", "eval_k", "steps_per_execution", "prior_flow_steps"):
        check_positive_int(getattr(args, name), name)
    for name in ("flow_steps", "prior_components", "aux_dim"):
        if getattr(args, name) is not None:
            check_positive_int(getattr(args, name), name)
    for name in ("reverse_samples", "eval_reverse_samples"):
        if getattr(args, name) is not None:
            check_non_negative_int(getattr(args, name), name)
    hierarchical = [name for name, cls in POSTERIORS.items() if _accepts(cls, "num_reverse_samples")]
    if args.aux_dim is not None and not _accepts(POSTERIORS[args.posterior], "aux_dim"):
        raise ValueError(f"aux_dim applies to the posteriors {hierarchical}. Received: posterior={args.posterior!r}")
    for name in ("reverse_samples", "eval_reverse_samples"):
        applies = _accepts(POSTERIORS[args.posterior], "num_reverse_samples") or (
            name == "reverse_samples" and _accepts(LOSSES[args.loss], "num_reverse_samples")
        )
        if getattr(args, name) is not None and not applies:
            raise ValueError(
                f"{name} applies to the posteriors {hierarchical} (and reverse_samples to the loss iwhvi). "
                f"Received: posterior={args.posterior!r}, loss={args.loss!r}"
            )
    posterior, prior = POSTERIORS[args.posterior], PRIORS[args.prior]
    if args.flow_steps is not None and not issubclass(posterior, FlowPosterior):
        flows = [name for name, cls in POSTERIORS.items() if issubclass(cls, FlowPosterior)]
        raise ValueError(f"flow_steps applies to the flow posteriors {flows}. Received: posterior={args.posterior!r}")
    if args.prior_components is not None and not _accepts(prior, "num_components"):
        choices = [name for name, cls in PRIORS.items() if _accepts(cls, "num_components")]
        raise ValueError(f"prior_components applies to the priors {choices}. Received: prior={args.prior!r}")
    if not args.lr > 0:
        raise ValueError(f"lr must be positive. Received: lr={args.lr}")
    if args.control_lr is not None and not (math.isfinite(args.control_lr) and args.control_lr > 0):
        raise ValueError(f"control_lr must be finite and positive. Received: control_lr={args.control_lr}")
    if args.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError(
                "tensorboard logs need the tensorboard package: pip install tensorboard "
                '(or pip install -e ".[tensorboard]"). Received: tensorboard=True'
            )
    model_cls = MODELS[args.model]
    if args.sbn_layers is not None and not _accepts(model_cls, "latent_dims"):
        choices = [name for name, cls in MODELS.items() if _accepts(cls, "latent_dims")]
        raise ValueError(f"sbn_layers applies to the models {choices}. Received: model={args.model!r}")
    if not _accepts(model_cls, "posterior"):  # the model has its own posterior and prior (the sbn's are Bernoulli)
        for option, default in (("posterior", "diagonal"), ("prior", "standard_normal")):
            if getattr(args, option) != default:
                choices = [name for name, cls in MODELS.items() if _accepts(cls, option)]
                raise ValueError(
                    f"{option} applies to the models {choices}. Received: model={args.model!r}, "
                    f"{option}={getattr(args, option)!r}"
                )
    for option in _LOSS_OPTIONS:
        if getattr(args, option) and not _accepts(LOSSES[args.loss], option):
            choices = [name for name, cls in LOSSES.items() if _accepts(cls, option)]
            raise ValueError(f"{option} applies to the losses {choices}. Received: loss={args.loss!r}")
    if args.analytic_kl and not (issubclass(posterior, GaussianPosterior) and prior.is_standard_normal):
        raise ValueError(
            "analytic_kl needs a Gaussian posterior and the standard normal prior (a closed-form KL). "
            f"Received: posterior={args.posterior!r}, prior={args.prior!r}"
        )
    # The loss's own arguments' errors, then whether the model can train with it, before any data is loaded.
    build_model(args, input_dim=1).check_loss(build_loss(args))


def build_model(args, input_dim):
    """The model that --model and its options describe, for data of `input_dim` features."""
    cls = MODELS[args.model]
    options = {"input_dim": input_dim, "activation": args.activation, "seed": args.seed, "dtype": args.precision}
    if args.hidden_units is not None:
        options["hidden_units"] = args.hidden_units
    if _accepts(cls, "latent_dims"):
        options["latent_dims"] = args.sbn_layers or [200, 200, 200]
    if _accepts(cls, "posterior"):
        options.update(
            latent_dim=args.latent_dim, likelihood="bernoulli", posterior=build_posterior(args), prior=build_prior(args)
        )
    return cls(**options)


def build_posterior(args):
    """The posterior layer that --posterior, --flow-steps, --flow-hidden-units, --aux-dim and --reverse-samples describe."""
    cls = POSTERIORS[args.posterior]
    options = {} if args.flow_steps is None else {"num_steps": args.flow_steps}
    if issubclass(cls, FlowPosterior) and _accepts(cls, "hidden_units"):
        options["hidden_units"] = args.flow_hidden_units
    if args.aux_dim is not None:
        options["aux_dim"] = args.aux_dim
    if args.reverse_samples is not None and _accepts(cls, "num_reverse_samples"):
        options["num_reverse_samples"] = args.reverse_samples
    return cls(args.latent_dim, name="posterior", **options)


def build_prior(args):
    """The prior layer that --prior, --prior-components and --prior-flow-steps describe."""
    cls = PRIORS[args.prior]
    options = {}
    if args.prior_components is not None:
        options["num_components"] = args.prior_components
    if _accepts(cls, "num_steps"):
        options["num_steps"] = args.prior_flow_steps
    return cls(name="prior", **options)


def build_loss(args):
    """The bound that --loss, --k, --analytic-kl, --gradient-estimator, --reverse-samples, --kl-warmup-epochs and --free-bits describe."""
    options = {option: getattr(args, option) for option in _LOSS_OPTIONS if getattr(args, option)}
    if args.reverse_samples is not None and _accepts(LOSSES[args.loss], "num_reverse_samples"):
        options["num_reverse_samples"] = args.reverse_samples
    return LOSSES[args.loss](k=args.k, **options)


def first_examples(dataset, num_examples):
    """The first `num_examples` x of a batched dataset of x or (x, ...) tuples, as numpy."""
    import numpy as np

    batches, count = [], 0
    for batch in dataset:
        x = batch[0] if isinstance(batch, tuple) else batch
        batches.append(np.asarray(x))
        count += len(batches[-1])
        if count >= num_examples:
            break
    x = np.concatenate(batches)
    if len(x) < num_examples:
        raise ValueError(
            f"prior_components must not exceed the training examples ({len(x)}). Received: prior_components={num_examples}"
        )
    return x[:num_examples]


def run(args):
    """Train, evaluate and export as `args` says; return the final metrics dict.

    Resumes the interrupted run in `args.out_dir` (its checkpoint) unless
    `args.restart`; with `args.plots_only`, only re-creates a finished run's pictures.
    """
    _check_args(args)
    import keras

    import vizoo
    from vizoo import runs

    runs.prepare_out_dir(args.out_dir)
    if args.plots_only:
        from vizoo import plots

        written = plots.plot_run(args.out_dir)
        print(f"pictures in {args.out_dir}: {', '.join(sorted(os.path.basename(p) for p in written))}")
        return {}
    if args.restart:
        runs.finish_run(args.out_dir)
    elif runs.checkpoint_epoch(args.out_dir) is not None:  # an interrupted run: resume it (with the same options)
        run_config.check_resumable(args, args.out_dir)
    run_config.write_run_config(build_parser(), args, args.out_dir)

    keras.utils.set_random_seed(args.seed)
    splits = vizoo.data.load(
        args.dataset,
        batch_size=args.batch_size,
        binarization=args.binarization,
        seed=args.seed,
        data_dir=args.data_dir,
        validation_size=args.validation_size,
    )
    with vizoo.distribute.get_strategy(args.distribute).scope():  # variables on every replica
        model = build_model(args, splits.input_dim)
        model.initialize_output_bias(splits.train_mean)
        if args.prior == "vamp":  # pseudo-inputs start as training examples (shuffled, binarized)
            model.prior.initialize_pseudo_inputs(first_examples(splits.train, model.prior.num_components))
        group_optimizers = {} if args.control_lr is None else {"control": vizoo.optimizers.Adam(args.control_lr)}
        model.compile(
            optimizer=vizoo.optimizers.Adam(args.lr),
            loss=build_loss(args),
            group_optimizers=group_optimizers,
            steps_per_execution=args.steps_per_execution,
        )

    # Checkpointed every epoch (resumed when restarted); history.csv, best.keras, model.keras.
    trained = runs.fit_run(
        model,
        splits.train,
        args.out_dir,
        args.epochs,
        validation_data=splits.validation,  # None with --validation-size 0
        verbose=args.verbose,
        tensorboard=args.tensorboard,
    )
    train_seconds = trained["train_seconds"]

    start = time.perf_counter()
    sampler_options = {}  # an evaluation-time K for a hierarchical posterior
    if args.eval_reverse_samples is not None:
        sampler_options["num_reverse_samples"] = args.eval_reverse_samples
    try:
        metrics = vizoo.evaluate.log_likelihood(
            model,
            splits.test,
            k=args.eval_k,
            seed=args.seed,
            verbose=1 if args.verbose else 0,
            precision=args.eval_precision,
            **sampler_options,
        )
    except KeyboardInterrupt:
        raise runs.RunInterrupted(
            f"interrupted during evaluation; training is done (model in {os.path.join(args.out_dir, 'model.keras')}). "
            "Run the same command again to evaluate it."
        ) from None
    metrics.update(
        train_seconds=train_seconds,
        resumed_from_epoch=trained["resumed_epoch"],
        eval_seconds=time.perf_counter() - start,
        dataset=args.dataset,
        data_source=splits.source,
        binarization=args.binarization,
        config=dict(vars(args)),
    )
    with open(os.path.join(args.out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    vizoo.export.export_encoder(model, os.path.join(args.out_dir, "encoder"))
    runs.finish_run(args.out_dir)  # every output is written: the checkpoint has served
    from vizoo import plots

    plots.plot_run(args.out_dir, model=model, data=splits.test, history=os.path.join(args.out_dir, "history.csv"))
    print(
        f"test NLL {metrics['nll']:.3f} nats (k={args.eval_k}"
        f"{'; an upper bound: log q is estimated' if metrics.get('log_likelihood_is_lower_bound') else ''}), "
        f"ELBO {metrics['elbo']:.3f}, "
        f"IWAE-{metrics['train_k']} {metrics['iwae_k']:.3f}, KL {metrics['kl']:.3f}, "
        f"active units {metrics['active_units']}/{metrics['latent_units']}, {metrics['bits_per_dim']:.4f} bits/dim; "
        f"outputs in {args.out_dir}"
    )
    return metrics


def main(argv=None):
    """Run `train.py`; returns the exit code: 0, 2 for a named error, 1 for a file error, 130 if interrupted."""
    from vizoo.runs import RunInterrupted

    parser = build_parser()
    try:
        args = run_config.parse_args(parser, argv)  # flags override --config FILE
        run(args)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except OSError as error:  # e.g. the disk filled up while writing outputs
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except RunInterrupted as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
