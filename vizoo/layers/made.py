"""MADE: a masked autoencoder whose outputs are autoregressive in its inputs (Germain et al. 2015)."""

import keras
import numpy as np
from keras import ops

from vizoo.utils import check_activation, check_choice, check_hidden_units, check_non_negative_int, check_positive_int

INPUT_ORDERS = ("natural", "reversed", "random")


def input_degrees(dim, order="natural", seed=None):
    """Degrees 1..dim of the inputs: output j may depend on inputs of smaller degree only.

    `order` is "natural" (1, 2, ..., dim), "reversed", "random" (a permutation
    drawn with `seed`), or an explicit sequence that is a permutation of 1..dim.
    """
    if isinstance(order, str):
        check_choice(order, "input_order", INPUT_ORDERS)
        if order == "natural":
            return np.arange(1, dim + 1)
        if order == "reversed":
            return np.arange(dim, 0, -1)
        return np.random.default_rng(seed).permutation(dim) + 1
    degrees = np.asarray(order)
    if sorted(degrees.tolist()) != list(range(1, dim + 1)):
        raise ValueError(f"input_order must be a permutation of 1..{dim}. Received: input_order={list(order)}")
    return degrees


def hidden_degrees(dim, units, previous):
    """Degrees of a hidden layer, spread evenly over [min(previous), dim - 1] (deterministic).

    With dim = 1 there is nothing to condition on: degree 0 sees no input.
    """
    if dim == 1:
        return np.zeros(units, dtype=int)
    low = min(int(np.min(previous)), dim - 1)
    return low + (np.arange(units) * (dim - low)) // units


def made_masks(degrees_in, hidden_units):
    """Masks `[fan_in, fan_out]`, one per layer, from input degrees and hidden sizes.

    A hidden unit of degree m sees inputs (or units) of degree <= m; an output of
    degree d sees hidden units of degree < d. So output d depends only on inputs
    of degree < d.
    """
    dim = len(degrees_in)
    masks, previous = [], np.asarray(degrees_in)
    for units in hidden_units:
        current = hidden_degrees(dim, units, previous)
        masks.append((current[None, :] >= previous[:, None]).astype("float32"))
        previous = current
    masks.append((np.asarray(degrees_in)[None, :] > previous[:, None]).astype("float32"))
    return masks


@keras.saving.register_keras_serializable(package="vizoo")
class MADE(keras.layers.Layer):
    """Masked autoencoder for distribution estimation (Germain et al. 2015), as a Keras 3 layer.

    Outputs `params` numbers per input dimension; output `[..., j, :]` depends
    only on inputs whose degree is smaller than input j's (the autoregressive
    property), whatever the weights: masks multiply the kernels on every call.
    An optional context h (the encoder's features in IAF, Kingma et al. 2016)
    enters the first hidden layer unmasked.

    Args:
        params: int, numbers per dimension (2 for a shift and a log-scale).
        hidden_units: list of ints, hidden layer sizes.
        activation: hidden activation.
        input_order: "natural", "reversed", "random" or a permutation of 1..D.
        seed: int, seed of the "random" order. None draws one from NumPy's
            global generator (`keras.utils.set_random_seed` seeds it) when the
            layer is made; the config keeps it, so a saved MADE keeps its
            order, which its weights need.
        kernel_initializer: initializer of the kernels.

    Call arguments:
        inputs: `[..., D]`.
        context: optional `[..., C]`, broadcast against inputs' leading axes.

    Returns:
        `[..., D, params]`.

    Example:
        >>> made = MADE(params=2, hidden_units=[32, 32])
        >>> shift_and_log_scale = made(z, context=h)   # [..., D, 2]

    Reference:
        Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for
        Distribution Estimation", ICML 2015.
    """

    def __init__(
        self,
        params,
        hidden_units=(64, 64),
        activation="relu",
        input_order="natural",
        seed=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.params = check_positive_int(params, "params")
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = check_activation(activation)
        self._activation_name = activation
        if isinstance(input_order, str):
            check_choice(input_order, "input_order", INPUT_ORDERS)
        elif not isinstance(input_order, (list, tuple, np.ndarray)):
            raise ValueError(
                f"input_order must be 'natural', 'reversed', 'random' or a permutation of 1..D (a list). "
                f"Received: input_order={input_order!r}"
            )
        self.input_order = input_order if isinstance(input_order, str) else [int(v) for v in input_order]
        if seed is not None:
            check_non_negative_int(seed, "seed")
        elif self.input_order == "random":
            seed = int(np.random.randint(2**31 - 1))
        self.seed = seed
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, inputs_shape, context_shape=None):
        dim = int(inputs_shape[-1])
        self.degrees = input_degrees(dim, self.input_order, self.seed)
        masks = made_masks(self.degrees, self.hidden_units)
        # Output masks repeat per parameter: output column j * params + p belongs to dimension j.
        masks[-1] = np.repeat(masks[-1], self.params, axis=1)
        self._masks = masks
        sizes = [dim] + self.hidden_units + [dim * self.params]
        self.kernels, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.kernels.append(self.add_weight(name=f"kernel_{i}", shape=(fan_in, fan_out), initializer=self.kernel_initializer))
            self.biases.append(self.add_weight(name=f"bias_{i}", shape=(fan_out,), initializer="zeros"))
        self.context_kernel = None
        if context_shape is not None:
            self.context_kernel = self.add_weight(
                name="context_kernel", shape=(int(context_shape[-1]), sizes[1]), initializer=self.kernel_initializer
            )

    def call(self, inputs, context=None):
        if (context is None) != (self.context_kernel is None):
            raise ValueError(
                "MADE was built " + ("with" if self.context_kernel is not None else "without")
                + " a context input and must be called the same way. Received: context="
                + ("None" if context is None else f"tensor of shape {tuple(context.shape)}")
            )
        h = inputs
        last = len(self.kernels) - 1
        for i, (kernel, bias, mask) in enumerate(zip(self.kernels, self.biases, self._masks)):
            h = ops.matmul(h, kernel * ops.cast(mask, kernel.dtype)) + bias
            if i == 0 and context is not None:
                h = h + ops.matmul(context, self.context_kernel)
            if i < last:
                h = self.activation(h)
        return ops.reshape(h, tuple(ops.shape(inputs)) + (self.params,))

    def get_config(self):
        config = super().get_config()
        config.update(
            params=self.params,
            hidden_units=list(self.hidden_units),
            activation=self._activation_name,
            input_order=self.input_order,
            seed=self.seed,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
