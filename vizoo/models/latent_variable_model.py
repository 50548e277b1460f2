"""Base class of vizoo's models: the Keras plumbing between a model's terms and a bound loss."""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from vizoo.losses.bound_loss import BoundLoss
from vizoo.utils import check_array, check_positive_int

# Marks vizoo's own in-pipeline input checks so that fit/evaluate/predict can
# turn them into a ValueError instead of a TensorFlow traceback.
_CHECK_MARK = "vizoo input check: "


class LatentVariableModel(keras.Model):
    """A latent-variable model whose `call(x)` returns log-density terms.

    Subclasses implement `encode(x)` (posterior parameters), `log_density_terms(
    x, encoding, eps)` and own a `posterior` layer (which draws base noise eps).
    `call(x)` returns a dict of per-sample terms shaped `[batch, k]`:
    `log_px_z`, `log_pz`, `log_qz` (and `kl`, `[batch, 1]`, where closed form).

    The number of samples k comes from the compiled loss
    (`model.compile(loss=IWAELoss(k=5))`), or from `num_samples=` in a direct
    call; with neither it is 1. `fit(x)` needs no targets: the loss reduces the
    terms itself (`fit(x, x)` works too, the targets are ignored).

    Data given to `fit`, `evaluate` and `predict` is checked before use:
    wrong feature size, non-finite values, or values outside [0, 1] for a
    Bernoulli likelihood raise a ValueError naming the argument and the value.
    """

    input_dim = None  # set by subclasses

    # ----------------------------------------------------------------- loss & k
    @property
    def num_samples(self):
        """Samples per example drawn in fit/evaluate/predict: the compiled loss's k, else 1."""
        loss = getattr(self, "loss", None)
        return loss.k if isinstance(loss, BoundLoss) else 1

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        if loss is not None and not isinstance(loss, BoundLoss):
            raise ValueError(
                f"{type(self).__name__} is trained with a vizoo bound, e.g. "
                "loss=vizoo.losses.IWAELoss(k=5) or ELBOLoss(). "
                f"Received: loss={loss!r}"
            )
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        # `compile` is overridden, so Keras's default would skip compiling on load.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built and getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Keras's default hands `y` to the compiled loss and fails for y=None;
        # the bounds are unsupervised, so the loss reduces the terms alone.
        if not isinstance(getattr(self, "loss", None), BoundLoss):
            raise ValueError(
                f"{type(self).__name__} has no bound to train on: call "
                "model.compile(optimizer=..., loss=IWAELoss(k=5)) first."
            )
        total = self.loss(None, y_pred, sample_weight)
        for extra in self.losses:
            total = total + self._aggregate_additional_loss(extra)
        return total

    # --------------------------------------------------------------- forward
    def call(self, inputs, training=None, num_samples=None, seed=None):
        """Log-density terms for `num_samples` (default: the loss's k) samples per example.

        Args:
            inputs: `[batch, input_dim]` data.
            num_samples: int, samples of z per example; default `self.num_samples`.
            seed: optional seed or `keras.random.SeedGenerator` for the noise;
                default the model's own generator.

        Returns:
            dict of `[batch, k]` tensors (`kl`: `[batch, 1]`).
        """
        k = self.num_samples if num_samples is None else check_positive_int(num_samples, "num_samples")
        x = self._check_input_shape(inputs)
        encoding = self.encode(x)
        eps = self.posterior.sample_noise(encoding, k, seed=self.seed_generator if seed is None else seed)
        return self.log_density_terms(x, encoding, eps)

    def _check_input_shape(self, inputs):
        x = ops.convert_to_tensor(inputs)
        self.check_input_shape(x.shape)
        return x

    def check_input_shape(self, shape):
        """Raise a ValueError unless `shape` is `(batch, input_dim)` (None entries allowed)."""
        shape = tuple(shape)
        if len(shape) != 2 or shape[-1] not in (None, self.input_dim):
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (batch, {self.input_dim}) "
                f"(input_dim={self.input_dim}). Received: inputs.shape={shape}"
            )

    # ------------------------------------------------------------ data checks
    @property
    def _needs_unit_interval(self):
        return getattr(self.likelihood, "requires_unit_interval", False)

    def check_data(self, data, name="x"):
        """Check data for this model; return it (numpy arrays as float32, datasets wrapped).

        Arrays are checked at once; a `tf.data.Dataset` of x, (x, y) or
        (x, y, sample_weight) is checked per batch as it streams, and its
        feature size at once. Other inputs (generators, PyDataset) pass as is.
        """
        if data is None:
            return None
        if isinstance(data, tf.data.Dataset):
            return _checked_dataset(data, name, self.input_dim, self._needs_unit_interval)
        if isinstance(data, tuple):  # Keras' (x,), (x, y) or (x, y, sample_weight)
            return (self.check_data(data[0], name),) + data[1:] if data else data
        if _is_numeric_leaf(data):
            return check_array(data, name, self.input_dim, self._needs_unit_interval)
        return data

    def fit(self, x=None, y=None, *args, **kwargs):
        x = self.check_data(x, "x")
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self.check_data(kwargs["validation_data"], "validation_data")
        with input_errors():
            return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x = self.check_data(x, "x")
        with input_errors():
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        x = self.check_data(x, "x")
        with input_errors():
            return super().predict(x, *args, **kwargs)


def _is_numeric_leaf(data):
    if isinstance(data, (np.ndarray, tf.Tensor)) or hasattr(data, "__array__"):
        return True
    if isinstance(data, list):
        try:
            return np.asarray(data).dtype != object
        except ValueError:
            return False
    return False


def _checked_dataset(dataset, name, num_features, unit_interval):
    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    if not isinstance(x_spec, tf.TensorSpec):
        return dataset
    shape = x_spec.shape
    if shape.rank is not None and (shape.rank != 2 or shape[-1] not in (None, num_features)):
        raise ValueError(
            f"{name} must yield batches of shape (batch, {num_features}). "
            f"Received: {name} with element shape {tuple(shape)}"
        )

    def check(x):
        x = tf.cast(x, tf.float32)
        asserts = [
            tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(x)),
                [f"{_CHECK_MARK}{name} must be finite. Received: a batch of {name} containing non-finite values"],
            )
        ]
        if unit_interval:
            low, high = tf.reduce_min(x), tf.reduce_max(x)
            asserts.append(
                tf.debugging.Assert(
                    tf.logical_and(low >= 0.0, high <= 1.0),
                    [
                        f"{_CHECK_MARK}{name} must lie in [0, 1] for the Bernoulli likelihood. "
                        f"Received: a batch of {name} with min=",
                        low,
                        ", max=",
                        high,
                    ],
                )
            )
        with tf.control_dependencies(asserts):
            return tf.identity(x)

    def check_element(*element):
        if len(element) == 1:
            return check(element[0])
        return (check(element[0]),) + element[1:]

    return dataset.map(check_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


@contextlib.contextmanager
def input_errors():
    """Turn a failed vizoo input check inside TensorFlow into a ValueError."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        text = str(error.message)
        if _CHECK_MARK not in text:
            raise
        # TensorFlow prints the assert's data as "[part] [part] ...": join the parts.
        text = text[text.index(_CHECK_MARK) + len(_CHECK_MARK) :].split("\n")[0]
        text = "".join(text.rstrip().removesuffix("]").split("] ["))
        raise ValueError(text.strip()) from None
