"""Export a trained model's prior density log p(z) as a TensorFlow SavedModel."""

import tensorflow as tf

from vizoo.export.encoder_export import checked_rows, write_saved_model
from vizoo.layers.prior import Prior
from vizoo.utils import check_vizoo_model


def export_prior(model, path, version=1, overwrite=False):
    """Write the model's prior log-density to `<path>/<version>/` (TensorFlow Serving layout).

    Signature `serving_default` (float32): `z [batch, latent_dim]` -> `log_pz [batch]`; a z of
    another shape, or not finite, is refused with an error that names it.
    Learned priors (mixture, VampPrior through the model's encoder, MAF) are
    exported with their trained weights; the export loads with
    `tf.saved_model.load` and no vizoo.

    Args:
        model: a vizoo model (e.g. `VAE`).
        path: directory of the export; the version is a subdirectory.
        version: positive int, the TensorFlow Serving model version.
        overwrite: bool, replace an existing `<path>/<version>/` (refused otherwise, as
            `export_encoder` does).

    Returns:
        The path of the written version directory.

    Raises:
        ValueError: `model` is not a vizoo model or has no continuous prior p(z)
            (a sigmoid belief network), or the version directory exists and `overwrite` is False.
    """
    check_vizoo_model(model, "export_prior")
    if not isinstance(getattr(model, "prior", None), Prior) or getattr(model, "latent_dim", None) is None:
        raise ValueError(
            "export_prior exports a continuous prior p(z) over one latent vector (a VAE's, IWAE's, ...); "
            f"{type(model).__name__} has none. Received: model={type(model).__name__}"
        )
    z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")

    latent_dim = int(model.latent_dim)

    def log_prob(z):
        return {"log_pz": model.prior(checked_rows(z, "z", latent_dim))}

    return write_saved_model(model, path, version, {"serving_default": (log_prob, [z_spec])}, overwrite=overwrite)
