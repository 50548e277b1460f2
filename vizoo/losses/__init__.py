"""Bounds on log p(x) as Keras losses (negated, in nats per example)."""

from vizoo.losses.bound_loss import BoundLoss, logmeanexp
from vizoo.losses.elbo_loss import ELBOLoss
from vizoo.losses.iwae_loss import IWAELoss

__all__ = ["BoundLoss", "ELBOLoss", "IWAELoss", "logmeanexp"]
