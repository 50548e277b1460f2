"""SavedModel export of trained encoders and priors, for serving with no vizoo code."""

from vizoo.export.encoder_export import export_encoder
from vizoo.export.prior_export import export_prior

__all__ = ["export_encoder", "export_prior"]
