"""SavedModel export of trained encoders, for serving with no vizoo code."""

from vizoo.export.encoder_export import export_encoder

__all__ = ["export_encoder"]
