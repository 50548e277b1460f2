"""Export a trained model's prior density log p(z) as a TensorFlow SavedModel."""

import tensorflow as tf

from vizoo.export.encoder_export import write_saved_model


def export_prior(model, path, version=1):
    """Write the model's prior log-density to `<path>/<version>/` (TensorFlow Serving layout).

    Signature `serving_default` (float32): `z [batch, latent_dim]` -> `log_pz [batch]`.
    Learned priors (mixture, VampPrior through the model's encoder, MAF) are
    exported with their trained weights; the export loads with
    `tf.saved_model.load` and no vizoo.

    Args:
        model: a vizoo model (e.g. `VAE`).
        path: directory of the export; the version is a subdirectory.
        version: positive int, the TensorFlow Serving model version.

    Returns:
        The path of the written version directory.
    """
    z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")

    def log_prob(z):
        return {"log_pz": model.prior(z)}

    return write_saved_model(model, path, version, {"serving_default": (log_prob, [z_spec])})
