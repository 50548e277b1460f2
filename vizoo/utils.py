"""Argument checks shared across vizoo: errors name the argument and the value received."""

import math
import numbers
from collections.abc import Hashable, Iterable

import numpy as np

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def as_seed_generator(seed):
    """A `keras.random.SeedGenerator` from an int, None or a generator (returned as is)."""
    import keras

    return seed if isinstance(seed, keras.random.SeedGenerator) else keras.random.SeedGenerator(seed)


def draw_seed(seed, index):
    """The seed of draw `index` (1, 2, ...) of a computation given one `seed`, independent of its other draws.

    A `keras.random.SeedGenerator` (or None: Keras's global one) moves on by itself from draw to draw and is
    returned as is. An int seed does not: every draw made with it reads the same stream (the same shape
    gives the same values), so each draw gets its own int, derived from (seed, index). Plain Python: works
    where the computation is traced too.
    """
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(np.random.SeedSequence([int(seed) % 2**63, index]).generate_state(1)[0] >> 1)
    return seed


def _check_int(value, name, minimum, kind):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a {kind} integer. Received: {name}={value!r}")
    return int(value)


def check_positive_int(value, name):
    """Return `value` as an int if it is an integer >= 1, else raise ValueError."""
    return _check_int(value, name, 1, "positive")


def check_non_negative_int(value, name):
    """Return `value` as an int if it is an integer >= 0, else raise ValueError."""
    return _check_int(value, name, 0, "non-negative")


def check_hidden_units(value, name="hidden_units"):
    """Return `value` as a list of ints if it is a sequence of positive integers, else raise."""
    if isinstance(value, (int, str)) or not isinstance(value, Iterable) or not all(
        isinstance(u, numbers.Integral) and not isinstance(u, bool) and u > 0 for u in value
    ):
        raise ValueError(f"{name} must be a list of positive integers. Received: {name}={value!r}")
    return [int(u) for u in value]


def check_bool(value, name):
    """Return `value` as a bool if it is True or False (numpy's too), else raise a ValueError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")
    return bool(value)


def is_finite_real(value):
    """Whether `value` is a finite real number (Python's or numpy's), not a bool."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real) and math.isfinite(value)


def check_finite_float(value, name):
    """Return `value` as a float if it is a finite real number (not a bool), else raise a ValueError naming it."""
    if not is_finite_real(value):
        raise ValueError(f"{name} must be a finite number. Received: {name}={value!r}")
    return float(value)


def check_activation(value, name="activation"):
    """Return Keras's activation function for `value` (a name or a callable), else raise a ValueError naming it."""
    import keras

    try:
        return keras.activations.get(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"{name} must be a Keras activation: a name such as 'tanh' or 'relu', or a callable. Received: {name}={value!r}"
        ) from None


def check_choice(value, name, choices):
    """Return `value` if it is one of `choices` (a registry's names, say), else raise ValueError."""
    if not isinstance(value, Hashable) or value not in choices:  # (an array would compare elementwise)
        raise ValueError(f"Unknown {name}. Expected one of {sorted(choices, key=str)}. Received: {name}={value!r}")
    return value


def check_array(x, name, num_features=None, unit_interval=False):
    """Check a numpy-convertible data array eagerly; return it as float32 numpy.

    Raises ValueError for a wrong feature size, non-finite values or, with
    `unit_interval`, values outside [0, 1] (Bernoulli likelihood).
    """
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{name} must be a numeric array. Received: {name} with dtype={x.dtype}")
    if num_features is not None and (x.ndim != 2 or x.shape[1] != num_features):
        raise ValueError(
            f"{name} must have shape (num_examples, {num_features}). Received: {name}.shape={x.shape}"
        )
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{name} must be finite. Received: {name}[{', '.join(map(str, index))}]={x[index]}"
        )
    if unit_interval and x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{name} must lie in [0, 1] for the Bernoulli likelihood. "
            f"Received: {name} with min={x.min():g}, max={x.max():g}"
        )
    return x


def check_vizoo_model(model, function):
    """Raise a ValueError unless `model` is a vizoo `LatentVariableModel`; `function` names the caller."""
    from vizoo.models.latent_variable_model import LatentVariableModel

    if not isinstance(model, LatentVariableModel):
        kind = type(model).__name__
        raise ValueError(
            f"{function} expects a vizoo LatentVariableModel (e.g. vizoo.models.VAE); received {kind}. "
            f"Received: model={kind}"
        )
    return model
