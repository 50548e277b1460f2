import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import run_serialization_test
from vizoo.layers import MADE
from vizoo.layers.made import input_degrees, made_masks


def test_masks_of_a_small_case_by_hand():
    hidden, output = made_masks(np.array([1, 2, 3]), [4])
    # Hidden degrees 1, 1, 2, 2: a unit of degree m sees inputs of degree <= m.
    np.testing.assert_array_equal(hidden.T, [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]])
    # Output of degree d sees hidden units of degree < d: output 1 sees nothing.
    np.testing.assert_array_equal(output.T, [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])


def test_input_orders():
    np.testing.assert_array_equal(input_degrees(4, "natural"), [1, 2, 3, 4])
    np.testing.assert_array_equal(input_degrees(4, "reversed"), [4, 3, 2, 1])
    random = input_degrees(6, "random", seed=3)
    assert sorted(random) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(random, input_degrees(6, "random", seed=3))
    np.testing.assert_array_equal(input_degrees(3, [2, 3, 1]), [2, 3, 1])
    with pytest.raises(ValueError, match=r"Received: input_order=\[1, 1, 2\]"):
        input_degrees(3, [1, 1, 2])
    with pytest.raises(ValueError, match="Received: input_order='sideways'"):
        MADE(2, input_order="sideways")
    with pytest.raises(ValueError, match="a permutation of 1..D \\(a list\\). Received: input_order=5"):
        MADE(2, [4], input_order=5)


@pytest.mark.parametrize("order", ["natural", "reversed", "random"])
@pytest.mark.parametrize("with_context", [False, True])
def test_autoregressive_by_perturbation(order, with_context):
    dim, rng = 6, np.random.default_rng(0)
    made = MADE(params=2, hidden_units=[16, 16], input_order=order, seed=7, activation="tanh")
    context = rng.normal(size=(4, 3)).astype("float32") if with_context else None
    x = rng.normal(size=(4, dim)).astype("float32")
    base = np.asarray(made(x, context=context))
    degrees = made.degrees
    for i in range(dim):
        moved = x.copy()
        moved[:, i] += 1.0
        changed = np.any(np.abs(np.asarray(made(moved, context=context)) - base) > 1e-6, axis=(0, 2))
        for j in range(dim):
            if degrees[j] <= degrees[i]:
                assert not changed[j], f"output {j} (degree {degrees[j]}) moved with input {i} (degree {degrees[i]})"
    # And the property is not vacuous: the last output depends on the first input.
    first, last = np.argmin(degrees), np.argmax(degrees)
    moved = x.copy()
    moved[:, first] += 1.0
    assert np.abs(np.asarray(made(moved, context=context))[:, last] - base[:, last]).max() > 1e-4


def test_jacobian_is_triangular_in_degree_order():
    made = MADE(params=1, hidden_units=[32], input_order="random", seed=1, activation="tanh")
    x = tf.random.normal([3, 5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = made(x)[..., 0]
    jacobian = np.abs(tape.batch_jacobian(y, x).numpy()).max(axis=0)  # [out j, in i]
    order = np.argsort(made.degrees)
    assert np.all(np.triu(jacobian[np.ix_(order, order)]) == 0)  # depends only on earlier degrees
    assert np.all(np.tril(jacobian[np.ix_(order, order)], k=-1)[1:].sum(axis=1) > 0)


def test_parameter_count_and_context_changes_outputs():
    made = MADE(params=3, hidden_units=[10, 8])
    made.build((None, 4), context_shape=(None, 5))
    expected = (4 * 10 + 10) + (10 * 8 + 8) + (8 * 12 + 12) + 5 * 10
    assert made.count_params() == expected
    x = np.ones((2, 4), "float32")
    a = made(x, context=np.zeros((2, 5), "float32"))
    b = made(x, context=np.ones((2, 5), "float32"))
    assert a.shape == (2, 4, 3) and not np.allclose(a, b)


def test_masks_apply_on_every_call_even_after_weights_are_overwritten():
    made = MADE(params=1, hidden_units=[8], activation="tanh")
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    made(x)
    for kernel in made.kernels:
        kernel.assign(np.ones(kernel.shape, "float32"))
    moved = x.copy()
    moved[:, 2] += 5.0
    np.testing.assert_allclose(np.asarray(made(moved))[:, :2], np.asarray(made(x))[:, :2])


def test_rank_3_inputs_keep_their_leading_axes():
    made = MADE(params=2, hidden_units=[8])
    assert made(np.zeros((2, 5, 3), "float32"), context=None).shape == (2, 5, 3, 2)


def test_context_must_match_how_it_was_built():
    made = MADE(params=2, hidden_units=[8])
    made(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="built without a context"):
        made(np.zeros((2, 3), "float32"), context=np.zeros((2, 4), "float32"))


def test_serialization_rebuilds_masks_and_outputs(tmp_path):
    made = MADE(params=2, hidden_units=[8, 8], input_order="random", seed=5, activation="tanh", name="made")
    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    expected = np.asarray(made(x))
    restored = run_serialization_test(made)
    restored.build((None, 4))
    restored.set_weights(made.get_weights())
    np.testing.assert_array_equal(restored.degrees, made.degrees)
    np.testing.assert_allclose(np.asarray(restored(x)), expected, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"params": 0}, {"params": 2, "hidden_units": [0]}, {"params": 2, "hidden_units": 5}])
def test_bad_arguments_are_named(kwargs):
    with pytest.raises(ValueError, match="Received: "):
        MADE(**kwargs)


def test_a_random_order_without_a_seed_survives_a_round_trip():
    made = MADE(params=1, hidden_units=[8], input_order="random")
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    made(x)
    restored = run_serialization_test(made)  # the config holds the seed drawn when the layer was made
    restored(x)
    np.testing.assert_array_equal(restored.degrees, made.degrees)
    with pytest.raises(ValueError, match="Received: seed=-1"):
        MADE(params=1, input_order="random", seed=-1)
