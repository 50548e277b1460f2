"""Export a trained model's prior density log p(z) as a TensorFlow SavedModel."""

import os

import keras
import tensorflow as tf

from vizoo.utils import check_positive_int


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
    version = check_positive_int(version, "version")
    if not model.built:
        model.build((None, model.input_dim))

    def log_prob(z):
        return {"log_pz": model.prior.log_prob(z)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", log_prob, input_signature=[tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")]
    )
    target = os.path.join(os.fspath(path), str(version))
    archive.write_out(target, verbose=False)
    return target
