"""Numerical precision of training and evaluation: float32, or mixed bfloat16 / float16.

Under a mixed policy the dense layers compute in 16 bits (the probabilistic heads' matmuls too)
while variables, the heads' outputs (cast to float32), every log-density and every log-sum-exp stay float32 (the model's inputs too: the
likelihood scores the data itself). On CPUs with AMX or AVX512-BF16 units bfloat16 matmuls run
several times the float32 rate; float16 is for GPUs (Keras adds loss scaling for it).

    model = VAE(784, 50, dtype="mixed_bfloat16")                 # train in bfloat16
    result = vizoo.evaluate.log_likelihood(model, x, precision="mixed_bfloat16")  # evaluate in it
"""

import keras

from vizoo.utils import check_choice

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def check_precision(precision, name="precision"):
    """Return `precision` if it is one of `PRECISIONS`, else raise a ValueError naming it."""
    return check_choice(precision, name, PRECISIONS)


def _replace_policy(config, old, new):
    """`config` with every serialized dtype policy named `old` renamed `new` (nested components too)."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and config.get("config", {}).get("name") == old:
            return dict(config, config=dict(config["config"], name=new))
        return {key: _replace_policy(value, old, new) for key, value in config.items()}
    if isinstance(config, list):
        return [_replace_policy(value, old, new) for value in config]
    return config


def with_precision(model, precision):
    """`model` itself if it computes in `precision`, else a copy that does, with the same weights.

    The copy shares no state with `model` (later training of one does not
    move the other); it is built and uncompiled, for evaluation or export.

    Args:
        model: a built vizoo model.
        precision: `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`.

    Returns:
        A model of the same class and configuration under the policy `precision`.
    """
    precision = check_precision(precision)
    current = model.dtype_policy.name
    if current == precision:
        return model
    if not model.built:
        model.build((None, model.input_dim))
    config = model.get_config()
    # A float32 model's components may carry the policy as a plain string.
    config = _replace_policy(config, current, precision)
    config["dtype"] = keras.dtype_policies.get(precision)
    copy = type(model).from_config(config)
    copy.build((None, model.input_dim))
    copy.set_weights(model.get_weights())
    return copy
