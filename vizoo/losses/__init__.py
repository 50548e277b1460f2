"""Bounds on log p(x) as Keras losses (negated, in nats per example).

`LOSSES` is the registry of the losses that the command line, the benchmarks
and configs name: a new family registers here and nowhere else.
"""

from vizoo.losses.bound_loss import GRADIENT_GROUPS, BoundLoss, logmeanexp
from vizoo.losses.elbo_loss import ELBOLoss
from vizoo.losses.iwae_loss import IWAELoss

LOSSES = {"elbo": ELBOLoss, "iwae": IWAELoss}

__all__ = ["GRADIENT_GROUPS", "LOSSES", "BoundLoss", "ELBOLoss", "IWAELoss", "logmeanexp"]
