"""Registries of vizoo's named pieces, filled by decorators in each piece's own file.

    @register_loss("renyi")
    @keras.saving.register_keras_serializable(package="vizoo")
    class RenyiLoss(BoundLoss): ...

puts `RenyiLoss` in `vizoo.losses.LOSSES` under "renyi" as soon as its module is
imported, and `vizoo.losses` (like `vizoo.layers` and `vizoo.models`) imports every
module of its package (`import_package_modules`), so a new file is all a new loss,
posterior, prior, likelihood or model family needs: the command line
(`vizoo/cli.py`), configs and `benchmarks/benchmark.py` read the registries and the
classes' declarations (`cli_options`, capability attributes), never a list of names.

A class declares the command-line options its constructor takes in `cli_options`,
`{argument: Option(flag, type, help, ...)}`; `declared_options(cls)` merges those of
its bases (a flow posterior's `--flow-steps` serves every flow).
"""

import importlib
import pkgutil
from typing import Any, Callable, NamedTuple, Optional


class Option(NamedTuple):
    """A constructor argument exposed on the command line.

    Attributes:
        flag: the flag, e.g. `"--alpha"`; its argparse dest (`alpha`) names the option in configs.
        type: callable converting one value (`int`, `float`, `str`), or `bool` for a switch
            (`--analytic-kl`, given or not).
        help: what it does (the classes that take it are added to the help text).
        nargs: argparse's nargs for lists (`"+"`, `"*"`), else None.
        default: the value when the flag is not given; None means "the class's own default"
            (the argument is then not passed). A value given on the command line, 0 and
            False included, is passed as given.
        check: optional `check(value, dest) -> value` run on a given value before the class
            sees it (e.g. `vizoo.utils.check_positive_int`), so errors name the flag's dest.
        requires: optional `(dest, value)`: the option applies only when the flag of that dest
            is given that value (e.g. the adaptive-contrast sampler's options, with
            `("sampler_structure", "adaptive_contrast")`); given otherwise, it is refused.
    """

    flag: str
    type: Any
    help: str
    nargs: Optional[str] = None
    default: Any = None
    check: Optional[Callable] = None
    requires: Optional[tuple] = None

    @property
    def dest(self):
        return self.flag.lstrip("-").replace("-", "_")


class Registry(dict):
    """`{name: class}` of one kind of piece; `register(name)` is the decorator that fills it.

    Args:
        kind: what it holds, in messages (e.g. `"loss"`).
    """

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def register(self, name):
        """Class decorator: register the class under `name` (a class re-imported under the same path replaces itself)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} is registered under a non-empty string. Received: name={name!r}")

        def decorator(cls):
            previous = self.get(name)
            if previous is not None and (previous.__module__, previous.__qualname__) != (cls.__module__, cls.__qualname__):
                raise ValueError(
                    f"The {self.kind} name {name!r} is taken by {previous.__module__}.{previous.__qualname__}. "
                    f"Received: name={name!r} for {cls.__module__}.{cls.__qualname__}"
                )
            self[name] = cls
            cls.registered_name = name
            return cls

        return decorator

    def name_of(self, cls):
        """The name `cls` (or the class of an instance) is registered under, or None."""
        cls = cls if isinstance(cls, type) else type(cls)
        return next((name for name, registered in self.items() if registered is cls), None)


LOSSES = Registry("loss")
POSTERIORS = Registry("posterior")
PRIORS = Registry("prior")
LIKELIHOODS = Registry("likelihood")
MODELS = Registry("model")

register_loss = LOSSES.register
register_posterior = POSTERIORS.register
register_prior = PRIORS.register
register_likelihood = LIKELIHOODS.register
register_model = MODELS.register


def declared_options(cls):
    """`{argument: Option}` that `cls` and its bases declare in `cli_options` (subclasses override bases)."""
    options = {}
    for base in reversed(cls.__mro__):
        options.update(base.__dict__.get("cli_options", {}))
    return options


def import_package_modules(package_name, package_path):
    """Import every module of a package (so their decorators register them); return `{class name: class}` of what they registered.

    Called at the end of a package's `__init__`: a new module in the package is picked
    up with no list to edit.
    """
    for module in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package_name}.{module.name}")
    return {
        cls.__name__: cls
        for registry in (LOSSES, POSTERIORS, PRIORS, LIKELIHOODS, MODELS)
        for cls in registry.values()
        if cls.__module__.startswith(package_name + ".")
    }
