"""Export a trained encoder q(z|x) as a TensorFlow SavedModel that serves without vizoo."""

import os

import keras
import tensorflow as tf

from vizoo.utils import check_positive_int


def export_encoder(model, path, version=1):
    """Write the model's encoder q(z|x) to `<path>/<version>/` (TensorFlow Serving layout).

    Signatures (all float32):
    - `serving_default`: `x [batch, input_dim]` -> the posterior's
      `serving_outputs`, each `[batch, ...]`. Gaussians: `loc` and `log_scale`
      (mean and marginal log standard deviations; full covariance adds
      `scale_tril`). Flows (IAF, planar, radial): `loc` (the flow's image of
      the base mean), `base_loc` and `base_log_scale`. The SBN's Bernoulli
      posterior: `logits` and `probs` of q(h_1|x). Hierarchical: `loc` (the
      mean of q(z|psi, x) at psi = E[psi|x]), `psi_loc` and `psi_log_scale`.
    - `sample`: `x [batch, input_dim]`, `eps [batch, k, latent_dim]` (standard
      normal noise; uniform on [0, 1) for the SBN, whose z is its binary layers
      h_1..h_L concatenated) -> `z [batch, k, latent_dim]` (for flows, z_T) and
      `log_qz [batch, k]` (log q(z|x), exact for every posterior but the
      hierarchical one). The noise is an input, so the graph is deterministic
      and has no random ops (it can be converted to ONNX). A
      `HierarchicalPosterior`'s noise is one flat N(0, I) vector per sample,
      `eps [batch, k, aux_dim + latent_dim + K * aux_dim]` = [noise of psi_0,
      of z, of the K reverse samples psi_1..K], K being its
      `num_reverse_samples` at export (set that attribute first to serve
      another K); its `log_qz` is the IWHVI estimate log q^_K(z|x), an upper
      bound on log q(z|x) in expectation. A posterior with no density
      (`has_density` False, an implicit sampler) serves `z` alone. The
      outputs are the terms of `vizoo.terms` of those names, shaped as it declares.

    The export loads with `tf.saved_model.load` in a process that never imports
    vizoo; `saved_model_cli show --dir <path>/<version> --all` lists it.

    Args:
        model: a vizoo model (e.g. `VAE`).
        path: directory of the export; the version is a subdirectory.
        version: positive int, the TensorFlow Serving model version.

    Returns:
        The path of the written version directory.
    """
    if not model.exportable:
        raise ValueError(
            f"{type(model).__name__} declares exportable=False: its encoder cannot be written as a SavedModel. "
            f"Received: model={type(model).__name__}"
        )
    x_spec = tf.TensorSpec([None, model.input_dim], tf.float32, name="x")
    # The samples, and log q(z|x) where the posterior has a density (a sampler serves z alone).
    sample_terms = ("z", "log_qz") if model.posterior.has_density else ("z",)
    eps_spec = tf.TensorSpec([None, None, *model.posterior.noise_shape], tf.float32, name="eps")

    def serve(x):
        return model.posterior.serving_outputs(model.encode(x))

    def sample(x, eps):
        return model.sample_terms(x, noise=eps, terms=sample_terms)

    return write_saved_model(
        model, path, version, {"serving_default": (serve, [x_spec]), "sample": (sample, [x_spec, eps_spec])}
    )


def write_saved_model(model, path, version, endpoints):
    """Write `endpoints` (name -> (fn, input_signature)) of `model` to `<path>/<version>/`."""
    version = check_positive_int(version, "version")
    if not model.built:
        model.build((None, model.input_dim))
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, input_signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=input_signature)
    target = os.path.join(os.fspath(path), str(version))
    archive.write_out(target, verbose=False)
    return target
