import keras

from vizoo.utils import check_positive_int


class Likelihood(keras.layers.Layer):
    """Base of vizoo's likelihoods p(x|z): decoder features -> parameters -> log-density.

    The interface models rely on:
    - `call(h)` -> dict of parameters from decoder features h `[..., features]`
      (kept in float32 under mixed precision);
    - `log_prob(x, params)`: x `[batch, D]`, params from features
      `[batch, k, features]` -> `[batch, k]` (value first, as for priors and
      posteriors);
    - `mean(params)` -> E[x|z], `[..., D]`;
    - `sample(params, seed)` -> x ~ p(x|z), `[..., D]` (simulated data: `vizoo.ais.simulate`);
    - `requires_unit_interval`: data must lie in [0, 1] (checked by models).

    Args:
        output_dim: int, data dimension D.
    """

    requires_unit_interval = False
    # Constructor arguments on the command line, `{argument: vizoo.registry.Option}` (vizoo/cli.py reads them).
    cli_options = {}

    def __init__(self, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = check_positive_int(output_dim, "output_dim")

    def initialize_from_data(self, dataset):
        """Data-dependent initialization before training, from a batched dataset of x; nothing by default."""

    def set_bias_from_mean(self, data_mean):
        """Start the output at the data mean (Burda et al.); only likelihoods with an output bias can."""
        raise ValueError(
            "initialize_output_bias needs a likelihood with an output bias, e.g. the Bernoulli likelihood. "
            f"Received: likelihood={type(self).__name__}"
        )

    def log_prob(self, x, params):
        raise NotImplementedError

    def mean(self, params):
        raise NotImplementedError

    def sample(self, params, seed=None):
        raise NotImplementedError(f"{type(self).__name__} cannot sample x ~ p(x|z) (no sample method).")

    def get_config(self):
        config = super().get_config()
        config["output_dim"] = self.output_dim
        return config
