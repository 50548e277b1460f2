"""Export a trained encoder q(z|x) as a TensorFlow SavedModel that serves without vizoo."""

import math
import os
import shutil

import keras
import tensorflow as tf

from vizoo.utils import check_bool, check_positive_int, check_vizoo_model


def export_encoder(model, path, version=1, overwrite=False):
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

    The served functions check their inputs (`tf.debugging` asserts, so a
    bad request fails with `tf.errors.InvalidArgumentError` whose message
    names the input and the expected shape): x's width is `input_dim`, x is
    finite, and `sample`'s eps has x's batch size and the posterior's noise
    size, and is finite.

    The export loads with `tf.saved_model.load` in a process that never imports
    vizoo; `saved_model_cli show --dir <path>/<version> --all` lists it.

    An existing version directory is never overwritten silently: it is refused
    unless `overwrite=True` (TF Serving serves the highest version, so pass the
    next `version` to publish a new model beside the old). With `overwrite=True`
    the new export is written beside the old one and replaces it only once complete.

    Args:
        model: a vizoo model (e.g. `VAE`).
        path: directory of the export; the version is a subdirectory.
        version: positive int, the TensorFlow Serving model version.
        overwrite: bool, replace an existing `<path>/<version>/`.

    Returns:
        The path of the written version directory.

    Raises:
        ValueError: `model` is not a vizoo model or not exportable, or the
            version directory exists and `overwrite` is False.
    """
    check_vizoo_model(model, "export_encoder")
    if not model.exportable:
        raise ValueError(
            f"{type(model).__name__} declares exportable=False: its encoder cannot be written as a SavedModel. "
            f"Received: model={type(model).__name__}"
        )
    x_spec = tf.TensorSpec([None, model.input_dim], tf.float32, name="x")
    # The samples, and log q(z|x) where the posterior has a density (a sampler serves z alone).
    sample_terms = ("z", "log_qz") if model.posterior.has_density else ("z",)
    eps_spec = tf.TensorSpec([None, None, *model.posterior.noise_shape], tf.float32, name="eps")

    input_dim = int(model.input_dim)
    noise_shape = [int(n) for n in model.posterior.noise_shape]

    def checked_x(x):
        return checked_rows(x, "x", input_dim)

    def serve(x):
        return model.posterior.serving_outputs(model.encode(checked_x(x)))

    def sample(x, eps):
        x = checked_x(x)
        expected = f"[batch, k, {', '.join(map(str, noise_shape))}] with the batch of x"
        leading = _leading_dims(eps, 2)
        asserts = [
            _size_check(eps, leading, math.prod(noise_shape), f"eps must have shape {expected}; received another shape"),
            tf.debugging.assert_equal(
                leading[0], tf.shape(x)[0], message=f"eps must have shape {expected}; its batch differs from that of x"
            ),
            tf.debugging.assert_equal(
                tf.shape(eps)[2:], tf.constant(noise_shape, tf.int32),
                message=f"eps must have shape {expected}; its noise size differs",
            ),
            tf.debugging.assert_all_finite(eps, message=f"eps must be finite (shape {expected})"),
        ]
        with tf.control_dependencies(asserts):
            eps = tf.identity(eps)
        return model.sample_terms(x, noise=eps, terms=sample_terms)

    return write_saved_model(
        model,
        path,
        version,
        {"serving_default": (serve, [x_spec]), "sample": (sample, [x_spec, eps_spec])},
        overwrite=overwrite,
    )


def _leading_dims(values, count):
    """The first `count` dimensions of `values`' runtime shape (1 for each it lacks), `[count]` int32."""
    return tf.pad(tf.shape(values), [[0, count]], constant_values=1)[:count]


def _size_check(values, leading, trailing_size, message):
    # The rank cannot be checked in a served signature: it runs the graph traced for its spec's rank, where
    # tf.rank is a constant whatever the input. A tensor of the expected shape is the one whose size is
    # its leading dimensions times the known trailing size: another rank (or width) breaks that equality.
    size = tf.cast(tf.reduce_prod(leading), tf.int64) * trailing_size
    return tf.debugging.assert_equal(tf.size(values, out_type=tf.int64), size, message=message)


def checked_rows(values, name, width):
    """`values` once it is checked to be finite, of shape `[batch, width]`; else a served error naming `name`."""
    message = f"{name} must have shape [batch, {width}]; received another shape"
    asserts = [
        # The size catches another rank, the dimensions after the batch (compared at run time) size-1 axes.
        _size_check(values, _leading_dims(values, 1), width, message),
        tf.debugging.assert_equal(tf.shape(values)[1:], tf.constant([width], tf.int32), message=message),
        tf.debugging.assert_all_finite(values, message=f"{name} must be finite (shape [batch, {width}])"),
    ]
    with tf.control_dependencies(asserts):
        return tf.identity(values)


def write_saved_model(model, path, version, endpoints, overwrite=False):
    """Write `endpoints` (name -> (fn, input_signature)) of `model` to `<path>/<version>/`.

    An existing version directory is refused (ValueError naming it) unless `overwrite`; the
    export is written to a temporary sibling first and moved into place when complete.
    """
    version = check_positive_int(version, "version")
    overwrite = check_bool(overwrite, "overwrite")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a directory path (a str or os.PathLike). Received: path={path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"path must be a directory (the export's versions go inside it); it is a file. Received: "
            f"path={os.fspath(path)!r}"
        )
    target = os.path.join(os.fspath(path), str(version))
    if os.path.exists(target) and not overwrite:
        raise ValueError(
            f"the export's version directory {target} exists: pass overwrite=True to replace it, or another version "
            f"(TF Serving serves the highest). Received: path={os.fspath(path)!r}, version={version}"
        )
    if not model.built:
        model.build((None, model.input_dim))
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, input_signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=input_signature)
    os.makedirs(os.fspath(path), exist_ok=True)
    tmp = os.path.join(os.fspath(path), f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(tmp, verbose=False)
        if overwrite and os.path.exists(target):
            old = f"{tmp}-old"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        elif os.path.exists(target):  # written by someone else meanwhile: never replaced without overwrite
            raise ValueError(
                f"the export's version directory {target} appeared while the export was written: pass "
                f"overwrite=True to replace it, or another version. Received: path={os.fspath(path)!r}, "
                f"version={version}"
            )
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
