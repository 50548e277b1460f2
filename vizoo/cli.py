"""`python train.py` / `vizoo-train`: train a model on a dataset, evaluate it, export its encoder.

Wiring only: the math lives in vizoo.models, vizoo.losses and vizoo.evaluate.
"""

import argparse
import json
import math
import os
import sys
import time

from vizoo import config as run_config
from vizoo.layers import POSTERIORS, PRIORS
from vizoo.losses import LOSSES
from vizoo.models import MODELS
from vizoo.registry import declared_options

# The registries whose classes declare command-line options (`cli_options`), by the flag that chooses the class.
# Every option below comes from those declarations: no family is named here.
_CHOOSERS = {"model": MODELS, "posterior": POSTERIORS, "prior": PRIORS, "loss": LOSSES}
# Components a model may take (its `components`), chosen by the flag of the same name.
_COMPONENTS = ("posterior", "prior")
_PLURALS = {"model": "models", "loss": "losses", "posterior": "posteriors", "prior": "priors"}


def declared_flags():
    """`{dest: (Option, {chooser: [names of the classes that take it]})}` over every registered class's `cli_options`.

    Raises:
        ValueError: if two classes declare one flag with different types, nargs or defaults.
    """
    flags = {}
    for chooser, registry in _CHOOSERS.items():
        for name, cls in registry.items():
            for argument, option in declared_options(cls).items():
                known, takers = flags.setdefault(option.dest, (option, {}))
                if (known.type, known.nargs, known.default) != (option.type, option.nargs, option.default):
                    raise ValueError(
                        f"{option.flag} is declared with another type, nargs or default by {name!r} than before. "
                        f"Received: {chooser}={name!r}"
                    )
                takers.setdefault(chooser, []).append(name)
    return flags


def given_options(cls, args):
    """`{argument: value}` of the options `cls` declares that `args` gives (0 and False included; None: the class's default)."""
    options = {}
    for argument, option in declared_options(cls).items():
        value = getattr(args, option.dest)
        if value is not None:
            options[argument] = option.check(value, option.dest) if option.check is not None else value
    return options


def _add_declared_flags(parser):
    for dest, (option, takers) in declared_flags().items():
        applies = "; ".join(f"{_PLURALS[chooser]} {', '.join(names)}" for chooser, names in takers.items())
        help_text = f"{option.help} (for the {applies})"
        if option.type is bool:
            parser.add_argument(option.flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(option.flag, type=option.type, nargs=option.nargs, default=option.default, help=help_text)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a vizoo latent-variable model, estimate its test log-likelihood and export its encoder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="vae", help=f"model family, one of {list(MODELS)}")
    parser.add_argument("--loss", default="iwae", help=f"training bound, one of {list(LOSSES)}")
    parser.add_argument("--k", type=int, default=5, help="samples per example in the training bound")
    parser.add_argument("--posterior", default="diagonal", help=f"q(z|x), one of {list(POSTERIORS)}")
    parser.add_argument("--prior", default="standard_normal", help=f"p(z), one of {list(PRIORS)}")
    _add_declared_flags(parser)  # every option a registered model, loss, posterior or prior declares
    parser.add_argument(
        "--eval-reverse-samples",
        type=int,
        default=None,
        help="K for the test log p(x) of a hierarchical posterior (default its own K; larger is tighter)",
    )
    parser.add_argument("--epochs", type=int, default=100, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=100, help="training batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument(
        "--clip-norm",
        type=float,
        default=None,
        help="clip each optimizer's gradients to this global norm (Keras's global_clipnorm; every group's Adam: "
        "a remedy for a training loss that jumps, e.g. planar flows); default: no clipping",
    )
    parser.add_argument(
        "--control-lr",
        type=float,
        default=None,
        help="learning rate of an Adam of its own for the control group (baselines such as nvil's, a hierarchical "
        "posterior's reverse model); default: the control group shares the main optimizer",
    )
    parser.add_argument(
        "--adversary-lr",
        type=float,
        default=None,
        help="learning rate of the adversary's Adam (beta_1 0.5), for a loss that trains an adversary (avb); "
        "default twice --lr, the paper's setting",
    )
    parser.add_argument(
        "--adversary-hidden-units",
        type=int,
        nargs="*",
        default=None,
        help="hidden layers of each of the adversary's two MLPs (of x and of z), for a loss that trains an "
        "adversary (avb); default 256 256",
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
        "--eval",
        default="is",
        help="test log p(x) by importance sampling (is), or also by annealed importance sampling with HMC (ais; "
        "continuous latents; see vizoo.ais)",
    )
    parser.add_argument("--ais-steps", type=int, default=1000, help="AIS annealing steps T, T - 1 HMC transitions (with --eval ais)")
    parser.add_argument("--ais-chains", type=int, default=16, help="AIS chains per test example (with --eval ais)")
    parser.add_argument(
        "--ais-examples", type=int, default=None, help="AIS on the first N test examples (with --eval ais; default all)"
    )
    parser.add_argument(
        "--verbose", type=int, default=2, help="Keras fit verbosity (0, 1 or 2); 1 and 2 show evaluation's progress bar"
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
        "--distribute",
        default="none",
        help="none, mirrored (synchronous training on every local GPU) or multi_worker (the machines of the "
        "TF_CONFIG environment variable, see the README's 'Several machines')",
    )
    parser.add_argument(
        "--training-loop",
        default="auto",
        help="fit (Keras's), vizoo (vizoo.distribute.train: N steps per compiled call, optionally XLA) or auto "
        "(vizoo with --distribute multi_worker, else fit)",
    )
    parser.add_argument(
        "--jit-compile", action="store_true", help="compile each call's steps as one XLA program (--training-loop vizoo)"
    )
    parser.add_argument(
        "--cluster",
        default="tf_config",
        help="where multi_worker finds the workers: tf_config (the TF_CONFIG environment variable) or slurm "
        "(the Slurm job step: one srun task per worker)",
    )
    parser.add_argument(
        "--slurm-port", type=int, default=12345, help="with --cluster slurm, the port of each node's first worker"
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=60.0,
        help="seconds a worker waits for another (to start, between heartbeats, per collective) with multi_worker",
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
    from vizoo.data import BINARIZATIONS
    from vizoo.distribute import STRATEGIES
    from vizoo.precision import check_precision
    from vizoo.utils import check_choice, check_hidden_units, check_non_negative_int, check_positive_int

    check_choice(args.model, "model", MODELS)
    check_choice(args.loss, "loss", LOSSES)
    check_choice(args.posterior, "posterior", POSTERIORS)
    check_choice(args.prior, "prior", PRIORS)
    check_precision(args.precision, "precision")
    if args.eval_precision is not None:
        check_precision(args.eval_precision, "eval_precision")
    check_choice(args.distribute, "distribute", STRATEGIES)
    check_choice(args.training_loop, "training_loop", TRAINING_LOOPS)
    if args.distribute == "multi_worker" and args.training_loop == "fit":
        raise ValueError(
            "Keras 3.15's fit cannot train under MultiWorkerMirroredStrategy (keras-team/keras#20585): use "
            "--training-loop vizoo (the default with multi_worker). Received: distribute='multi_worker', "
            "training_loop='fit'"
        )
    if args.jit_compile and training_loop(args) == "fit":
        raise ValueError(
            "jit_compile applies to --training-loop vizoo (fit's own jit_compile does not compile several steps "
            f"as one program). Received: training_loop={args.training_loop!r}, jit_compile=True"
        )
    check_choice(args.cluster, "cluster", ("tf_config", "slurm"))
    if args.cluster == "slurm" and args.distribute != "multi_worker":
        raise ValueError(f"cluster applies to --distribute multi_worker. Received: distribute={args.distribute!r}")
    if not 0 < args.slurm_port < 65536:
        raise ValueError(f"slurm_port must be a port number. Received: slurm_port={args.slurm_port}")
    if not (math.isfinite(args.peer_timeout) and args.peer_timeout > 0):
        raise ValueError(f"peer_timeout must be finite and positive. Received: peer_timeout={args.peer_timeout}")
    for name in ("k", "epochs", "batch_size", "eval_k", "steps_per_execution"):
        check_positive_int(getattr(args, name), name)
    # vizoo.data.load's own checks, here: before the run directory is written.
    check_choice(args.binarization, "binarization", BINARIZATIONS)
    check_non_negative_int(args.seed, "seed")
    if args.validation_size is not None:
        check_non_negative_int(args.validation_size, "validation_size")
    if args.data_dir is not None:
        args.data_dir = os.path.expanduser(args.data_dir)  # (a config file's "~/..." is not expanded by a shell)
        if not os.path.isdir(args.data_dir):
            raise ValueError(f"data_dir must be an existing directory. Received: data_dir={args.data_dir!r}")
    check_choice(args.eval, "eval", ("is", "ais"))
    for name in ("ais_steps", "ais_chains"):
        check_positive_int(getattr(args, name), name)
    if args.ais_examples is not None:
        check_positive_int(args.ais_examples, "ais_examples")
    if args.eval_reverse_samples is not None:
        check_non_negative_int(args.eval_reverse_samples, "eval_reverse_samples")
    adversarial = [name for name, cls in LOSSES.items() if cls.needs_adversary]
    for name in ("adversary_lr", "adversary_hidden_units"):
        if getattr(args, name) is not None and not LOSSES[args.loss].needs_adversary:
            raise ValueError(
                f"{name} applies to the losses that train an adversary {adversarial}. Received: loss={args.loss!r}"
            )
    for name in ("lr", "clip_norm", "control_lr", "adversary_lr"):  # (None: not given)
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and positive. Received: {name}={value}")
    if args.adversary_hidden_units is not None:
        check_hidden_units(args.adversary_hidden_units, "adversary_hidden_units")
    if LOSSES[args.loss].needs_adversary and not MODELS[args.model].takes_adversary:
        raise ValueError(
            f"the loss {args.loss!r} trains an adversary T(x, z), which only the models "
            f"{[name for name, cls in MODELS.items() if cls.takes_adversary]} take. Received: model={args.model!r}"
        )
    if args.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError(
                "tensorboard logs need the tensorboard package: pip install tensorboard "
                '(or pip install -e ".[tensorboard]"). Received: tensorboard=True'
            )
    check_choice(args.verbose, "verbose", (0, 1, 2))
    parser_defaults = vars(build_parser().parse_args([]))
    # Flags of one mode, given outside it: refused, not ignored.
    for names, applies, mode in (
        (("ais_steps", "ais_chains", "ais_examples"), args.eval == "ais", "--eval ais"),
        (("slurm_port",), args.cluster == "slurm", "--cluster slurm"),
        (("peer_timeout",), args.distribute == "multi_worker", "--distribute multi_worker"),
    ):
        for name in names:
            if not applies and getattr(args, name) != parser_defaults[name]:
                raise ValueError(f"{name} applies with {mode}. Received: {name}={getattr(args, name)!r}")
    model_cls = MODELS[args.model]
    # The components the model takes (its `components`); the others must stay at their defaults.
    chosen = {"model": args.model, "loss": args.loss}
    for option in _COMPONENTS:
        if option in model_cls.components:
            chosen[option] = getattr(args, option)
        elif getattr(args, option) != parser_defaults[option]:
            choices = [name for name, cls in MODELS.items() if option in cls.components]
            raise ValueError(
                f"{option} applies to the models {choices}. Received: model={args.model!r}, "
                f"{option}={getattr(args, option)!r}"
            )
    # Each declared option given must apply to a chosen class that declares it.
    for dest, (option, takers) in declared_flags().items():
        value = getattr(args, dest)
        if value is None or value == option.default or (option.type is bool and value is False):
            continue  # not given (a switch set False in a config file is the switch left off)
        if not any(chosen.get(chooser) in names for chooser, names in takers.items()):
            applies = " and ".join(f"the {_PLURALS[chooser]} {sorted(names)}" for chooser, names in takers.items())
            received = ", ".join(f"{chooser}={getattr(args, chooser)!r}" for chooser in takers)
            raise ValueError(f"{dest} applies to {applies}. Received: {received}")
        if option.requires is not None and getattr(args, option.requires[0]) != option.requires[1]:
            other, needed = option.requires
            raise ValueError(
                f"{dest} applies with --{other.replace('_', '-')} {needed}. Received: {other}={getattr(args, other)!r}, "
                f"{dest}={value!r}"
            )
        if option.check is not None:
            option.check(value, dest)
    if args.eval_reverse_samples is not None and not (
        "posterior" in chosen and "num_reverse_samples" in POSTERIORS[args.posterior].sampler_options
    ):
        takers = [name for name, cls in POSTERIORS.items() if "num_reverse_samples" in cls.sampler_options]
        raise ValueError(
            f"eval_reverse_samples applies to the posteriors {takers} (those whose sampler_options take "
            f"num_reverse_samples). Received: model={args.model!r}, posterior={args.posterior!r}"
        )
    if args.distribute != "multi_worker":  # (with multi_worker: once the strategy has started, see run)
        _check_model_and_loss(args)


def _check_model_and_loss(args):
    # The loss's own arguments' errors, then whether the model can train with it, before any data is loaded.
    model = build_model(args, input_dim=1)
    model.check_loss(build_loss(args))
    if args.control_lr is not None:  # the groups the compiled loss trains (an SBN's baseline: under NVIL only)
        model.build((None, 1))
        model.compile(optimizer="sgd", loss=build_loss(args))
        if not model.gradient_groups().get("control"):
            raise ValueError(
                "control_lr applies to models with a control gradient group (a hierarchical posterior's reverse "
                "model, an SBN's NVIL baseline); this one has none, so it would train nothing. Received: "
                f"model={args.model!r}, posterior={getattr(args, 'posterior', None)!r}, control_lr={args.control_lr}"
            )
    if args.eval == "ais" and (model.latent_dim is None or not model.posterior.reparameterized):
        raise ValueError(
            f"eval='ais' needs a model with one continuous latent vector (HMC). Received: model={args.model!r}, "
            f"posterior={args.posterior!r}"
        )


TRAINING_LOOPS = ("auto", "fit", "vizoo")


def training_loop(args):
    """`"fit"` or `"vizoo"`: the loop `--training-loop` (and `--distribute`) choose."""
    if args.training_loop != "auto":
        return args.training_loop
    return "vizoo" if args.distribute == "multi_worker" else "fit"


def build_model(args, input_dim):
    """The model that --model and the options it declares describe, for data of `input_dim` features."""
    cls = MODELS[args.model]
    options = {"input_dim": input_dim, "seed": args.seed, "dtype": args.precision, **given_options(cls, args)}
    if "posterior" in cls.components:
        options["posterior"] = build_posterior(args)
    if "prior" in cls.components:
        options["prior"] = build_prior(args)
    if cls.takes_adversary and LOSSES[args.loss].needs_adversary:
        options["adversary"] = build_adversary(args)
    return cls(**options)


def build_adversary(args):
    """AVB's adversary T(x, z) for a loss that `needs_adversary` (--adversary-hidden-units)."""
    from vizoo.layers import Adversary

    options = {} if args.adversary_hidden_units is None else {"hidden_units": args.adversary_hidden_units}
    return Adversary(name="adversary", **options)


def _replace_finished_run(out_dir):
    """Say that a finished run's outputs in `out_dir` are replaced, and remove its pictures."""
    earlier = sorted(name for name in os.listdir(out_dir) if name in _RUN_OUTPUTS)
    if earlier:  # said, not silent: a finished run's outputs are replaced as this run writes its own
        print(f"{out_dir} holds a finished run ({', '.join(earlier)}): this new run replaces its "
              "outputs as it writes them (use another --out-dir to keep them)", flush=True)
        from vizoo.plots import PICTURES

        for name in PICTURES:  # drawn from the old run's model: this run may not draw each of them again
            if os.path.isfile(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))


def _clipping(args):
    """The optimizer arguments of --clip-norm (Keras's global_clipnorm), for every group's Adam."""
    return {} if args.clip_norm is None else {"global_clipnorm": args.clip_norm}


def build_optimizer(args):
    """The main Adam of the command line: --lr, with --clip-norm."""
    import vizoo

    return vizoo.optimizers.Adam(args.lr, **_clipping(args))


def build_group_optimizers(args, model):
    """`{group: optimizer}` of the command line: `control` with --control-lr; `adversary` for a model with one
    (Adam with beta_1 = 0.5 at --adversary-lr, default twice --lr: the AVB paper's settings)."""
    import vizoo

    clip = _clipping(args)
    group_optimizers = {} if args.control_lr is None else {"control": vizoo.optimizers.Adam(args.control_lr, **clip)}
    if model.adversary is not None:
        lr = 2.0 * args.lr if args.adversary_lr is None else args.adversary_lr
        group_optimizers["adversary"] = vizoo.optimizers.Adam(lr, beta_1=0.5, **clip)
    return group_optimizers


def build_posterior(args):
    """The posterior layer that --posterior, --latent-dim and the options it declares describe."""
    cls = POSTERIORS[args.posterior]
    return cls(args.latent_dim, name="posterior", **given_options(cls, args))


def build_prior(args):
    """The prior layer that --prior and the options it declares describe."""
    cls = PRIORS[args.prior]
    return cls(name="prior", **given_options(cls, args))


def build_loss(args):
    """The bound that --loss, --k and the options it declares describe (an option given as 0 or False is passed)."""
    cls = LOSSES[args.loss]
    return cls(k=args.k, **given_options(cls, args))


def run(args):
    """Train, evaluate and export as `args` says; return the final metrics dict.

    Resumes the interrupted run in `args.out_dir` (its checkpoint) unless
    `args.restart`; with `args.plots_only`, only re-creates a finished run's pictures.
    """
    _check_args(args)
    import keras

    import vizoo
    from vizoo import runs

    resolver = None
    if args.distribute == "multi_worker":  # the chief writes the run's files; known before the strategy starts
        import tensorflow as tf

        if args.cluster == "slurm":
            resolver = vizoo.distribute.slurm_cluster_resolver(args.slurm_port)
        else:
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        chief = vizoo.distribute.is_chief(resolver)
    else:
        chief = True
    if chief and not args.plots_only:  # (--plots-only reads a finished run: it creates no directory)
        runs.prepare_out_dir(args.out_dir)
    if args.plots_only:
        from vizoo import plots

        written = plots.plot_run(args.out_dir)
        print(f"pictures in {args.out_dir}: {', '.join(sorted(os.path.basename(p) for p in written))}")
        return {}
    if chief:
        if args.restart:
            runs.finish_run(args.out_dir)
        interrupted = runs.checkpoint_epoch(args.out_dir) is not None or runs.backup_epoch(args.out_dir) is not None
        if interrupted:
            run_config.check_resumable(args, args.out_dir)  # an interrupted run: resume it (with the same options)
    # Every worker waits here for the others (up to --peer-timeout), after the chief prepared out_dir.
    # MultiWorkerMirroredStrategy must start before TensorFlow runs any operation: hence after the checks
    # that need none, and before building a model.
    strategy = vizoo.distribute.get_strategy(
        args.distribute, cluster_resolver=resolver, timeout_seconds=args.peer_timeout
    )
    if args.distribute == "multi_worker":
        _check_model_and_loss(args)

    keras.utils.set_random_seed(args.seed)
    splits = vizoo.data.load(
        args.dataset,
        batch_size=args.batch_size,
        binarization=args.binarization,
        seed=args.seed,
        data_dir=args.data_dir,
        validation_size=args.validation_size,
    )
    if chief:  # the data is there and fits the options: only now is a finished run's directory written
        if not interrupted:
            _replace_finished_run(args.out_dir)
        run_config.write_run_config(build_parser(), args, args.out_dir)
    with strategy.scope():  # variables on every replica
        model = build_model(args, splits.input_dim)
        model.initialize_output_bias(splits.train_mean)
        model.initialize_from_data(splits.train)  # e.g. VampPrior's pseudo-inputs: training examples (shuffled, binarized)
        model.compile(
            optimizer=build_optimizer(args),
            loss=build_loss(args),
            group_optimizers=build_group_optimizers(args, model),
            steps_per_execution=args.steps_per_execution,
        )

    # Checkpointed every epoch (resumed when restarted); history.csv, best.keras, model.keras.
    try:
        options = dict(
            validation_data=splits.validation,  # None with --validation-size 0
            verbose=args.verbose,
            tensorboard=args.tensorboard,
        )
        if training_loop(args) == "vizoo":
            trained = runs.train_run(
                model,
                splits.train,
                args.out_dir,
                args.epochs,
                strategy=strategy,
                steps_per_execution=args.steps_per_execution,
                jit_compile=args.jit_compile,
                **options,
            )
        else:
            trained = runs.fit_run(model, splits.train, args.out_dir, args.epochs, **options)
    except vizoo.callbacks.TrainingDiverged as error:  # the last good checkpoint stays; metrics.json says what diverged
        if not chief:
            raise
        write_metrics(
            args.out_dir,
            {
                "nll": None, "elbo": None, "iwae_k": None, "kl": None,
                "diverged": error.diverged,
                "training_loss": type(model.loss).__name__,
                "dataset": args.dataset,
                "data_source": splits.source,
                "config": dict(vars(args)),
            },
        )
        raise
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
    if args.eval == "ais":  # annealed importance sampling, beside importance sampling (vizoo/ais.py)
        from vizoo import ais

        test = ais._as_array(model, splits.test, "test data")
        result = ais.ais_log_likelihood(
            model,
            test[: args.ais_examples],
            num_steps=args.ais_steps,
            num_chains=args.ais_chains,
            seed=args.seed,
            verbose=1 if args.verbose else 0,
        )
        metrics["ais"] = ais.summary(result)
    metrics.update(
        # The training objective and whether it is a bound (a loss declares `is_bound`; e.g. RenyiLoss with
        # alpha < 0 is an estimate, not a bound, and its training loss values are that estimate).
        training_loss=type(model.loss).__name__,
        training_loss_is_bound=bool(model.loss.is_bound),
        training_loss_value=model.loss.value_name,  # e.g. "ELBO estimate" (AVB): what history.csv's loss negates
        train_seconds=train_seconds,
        resumed_from_epoch=trained["resumed_epoch"],
        eval_seconds=time.perf_counter() - start,
        dataset=args.dataset,
        data_source=splits.source,
        binarization=args.binarization,
        config=dict(vars(args)),
    )
    if not chief:  # every worker evaluated (no collective is left to wait for); the chief writes the outputs
        return metrics
    write_metrics(args.out_dir, metrics)
    # The run directory's own export: a new run in out_dir replaces every output of the last (model.keras too).
    vizoo.export.export_encoder(model, os.path.join(args.out_dir, "encoder"), overwrite=True)
    runs.finish_run(args.out_dir)  # every output is written: the checkpoint has served
    from vizoo import plots

    plots.plot_run(args.out_dir, model=model, data=splits.test, history=os.path.join(args.out_dir, "history.csv"))
    print(
        f"test NLL {metrics['nll']:.3f} nats (k={args.eval_k}"
        f"{'; log q estimated: noisier weights, looser at this k' if metrics.get('log_likelihood_is_lower_bound') else ''}), "
        f"ELBO {metrics['elbo']:.3f}, "
        f"IWAE-{metrics['train_k']} {metrics['iwae_k']:.3f}, KL {metrics['kl']:.3f}"
        f"{' (of the fitted Gaussian proposal: q has no density)' if metrics.get('proposal') == 'fitted_gaussian' else ''}, "
        f"active units {metrics['active_units']}/{metrics['latent_units']}, {metrics['bits_per_dim']:.4f} bits/dim; "
        f"outputs in {args.out_dir}"
    )
    if "ais" in metrics:
        ais_metrics = metrics["ais"]
        print(
            f"AIS test NLL {ais_metrics['nll']:.3f} +- {ais_metrics['standard_error']:.3f} nats "
            f"({ais_metrics['num_examples']} examples, {args.ais_steps} steps, {args.ais_chains} chains, "
            f"acceptance {ais_metrics['acceptance']:.2f})"
        )
    warning = reliability_warning(metrics)
    if warning:
        print(warning)
    if "adversary_kl" in metrics:
        print(
            f"AVB: ELBO estimate {metrics['training_estimate']:.3f} (adversary's KL estimate "
            f"{metrics['adversary_kl']:.3f}); log p(x) - ELBO estimate = {metrics['training_estimate_gap']:.3f} "
            f"+- {metrics['training_estimate_gap_se']:.3f} (a true ELBO gives >= 0, where importance sampling is reliable)"
        )
    if not metrics["training_loss_is_bound"]:
        print(
            f"note: the training loss {metrics['training_loss']} ({args.loss} with these options) is an estimate, "
            "not a bound on log p(x): its values in history.csv may lie below -log p(x)"
        )
    return metrics


def _finite_or_none(value):
    if isinstance(value, dict):
        return {key: _finite_or_none(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# What a finished run leaves in its directory (config.json and command.txt are rewritten at every start).
_RUN_OUTPUTS = ("best.keras", "encoder", "history.csv", "metrics.json", "model.keras")


def write_metrics(out_dir, metrics):
    """Write `out_dir/metrics.json`: strict JSON, every non-finite number written as null (never NaN)."""
    from vizoo.callbacks import _write_text_atomically

    text = json.dumps(_finite_or_none(metrics), indent=2, allow_nan=False)
    _write_text_atomically(os.path.join(out_dir, "metrics.json"), text)


def reliability_warning(metrics):
    """The summary's line when importance sampling was unreliable for some examples (Pareto k-hat), else None.

    Args:
        metrics: `vizoo.evaluate.log_likelihood`'s result (with its diagnostics).

    Returns:
        str or None.
    """
    exceeded = metrics.get("pareto_k_exceeded", 0)
    if not exceeded:
        return None
    return (
        f"importance sampling unreliable for {exceeded} of {metrics['num_examples']} examples "
        f"(Pareto k > {metrics['pareto_k_threshold']:.2g}): see metrics.json; consider AIS"
    )


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
