import numbers

import keras

from vizoo.utils import check_positive_int


class Prior(keras.layers.Layer):
    """Base of vizoo's priors p(z).

    The interface models rely on:
    - `log_prob(z)`: z `[..., latent_dim]` -> `[...]` (summed over the latent
      dimensions); `call(z)` is the same. Models call the layer, `prior(z)`:
      a prior computes in float32 under a mixed policy, and calling it as a
      layer resets the float16 autocast of the model around it (a direct
      `log_prob` call inside a float16 layer's call would read its variables
      in float16);
    - `sample(num_examples, seed)` -> z `[num_examples, latent_dim]`;
    - `bind(model)`: called by the model that owns the prior, for priors that
      are defined through the model (VampPrior uses its encoder);
    - `is_standard_normal`: True only for N(0, I), where posteriors may use a
      closed-form KL;
    - `shares_inference_variables`: True where log p(z) depends on the
      encoder's variables (VampPrior), which encoder-only gradient estimators
      (STL, DReG) do not account for.

    The latent dimension comes from `build((None, latent_dim))`.
    """

    is_standard_normal = False
    shares_inference_variables = False
    # Constructor arguments on the command line, `{argument: vizoo.registry.Option}` (vizoo/cli.py reads them).
    cli_options = {}

    def __init__(self, **kwargs):
        # A density computes in full precision: under a mixed policy a prior takes the
        # policy's variable dtype (float32) as its own, so it reads its variables in float32
        # inside a float16 model's call as well as outside one (evaluation, export).
        policy = keras.dtype_policies.get(kwargs.get("dtype") or keras.config.dtype_policy())
        kwargs["dtype"] = policy.variable_dtype
        super().__init__(**kwargs)

    def build(self, z_shape):
        self.latent_dim = int(z_shape[-1])

    def bind(self, model):
        pass

    def initialize_from_data(self, dataset):
        """Data-dependent initialization before training, from a batched dataset of x; nothing by default."""

    def log_prob(self, z):
        raise NotImplementedError

    def sample(self, num_examples, seed=None):
        raise NotImplementedError

    def checked_num_examples(self, num_examples):
        """`sample`'s `num_examples`, checked (a Python int >= 1; a traced size passes) on a built prior."""
        if not hasattr(self, "latent_dim"):
            raise ValueError(
                f"{type(self).__name__} must be built before it samples (by its model, or build((None, latent_dim))). "
                f"Received: an unbuilt {type(self).__name__}"
            )
        if isinstance(num_examples, numbers.Number):  # (bools too: refused by name)
            return check_positive_int(num_examples, "num_examples")
        return num_examples

    def call(self, z):
        return self.log_prob(z)

    def get_config(self):
        # Explicit: Keras' automatic config cannot serialize a dtype policy object.
        return super().get_config()
