"""Bounds on log p(x) as Keras losses (negated, in nats per example).

`LOSSES` is the registry of the losses that the command line, the benchmarks
and configs name: a new family registers here and nowhere else.
"""

from vizoo.losses.bound_loss import GRADIENT_GROUPS, BoundLoss, logmeanexp
from vizoo.losses.elbo_loss import ELBOLoss
from vizoo.losses.hvm_loss import HVMLoss
from vizoo.losses.iwae_loss import IWAELoss
from vizoo.losses.iwhvi_loss import IWHVILoss
from vizoo.losses.nvil_loss import NVILLoss
from vizoo.losses.vimco_loss import VIMCOLoss

LOSSES = {"elbo": ELBOLoss, "iwae": IWAELoss, "hvm": HVMLoss, "iwhvi": IWHVILoss, "vimco": VIMCOLoss, "nvil": NVILLoss}

__all__ = ["GRADIENT_GROUPS", "LOSSES", "BoundLoss", "ELBOLoss", "HVMLoss", "IWAELoss", "IWHVILoss", "NVILLoss", "VIMCOLoss", "logmeanexp"]
