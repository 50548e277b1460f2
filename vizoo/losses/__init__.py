"""Bounds on log p(x) as Keras losses (negated, in nats per example).

`LOSSES` is the registry of the losses that the command line, the benchmarks
and configs name. A loss registers itself in its own file with
`@vizoo.registry.register_loss("name")`; this package imports every module it
holds, so a new loss is one new file here and nothing else.
"""

from vizoo.losses.bound_loss import GRADIENT_GROUPS, BoundLoss, logmeanexp
from vizoo.registry import LOSSES, import_package_modules, register_loss

_REGISTERED = import_package_modules(__name__, __path__)  # every module of the package: their classes register
globals().update(_REGISTERED)  # vizoo.losses.ELBOLoss, ..., and any new loss, by class name

__all__ = ["GRADIENT_GROUPS", "LOSSES", "BoundLoss", "logmeanexp", "register_loss", *sorted(_REGISTERED)]
