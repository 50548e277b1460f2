import keras
from keras import ops

from vizoo.layers.diagonal_gaussian_posterior import DiagonalGaussianPosterior
from vizoo.layers.posterior import Posterior
from vizoo.registry import Option
from vizoo.utils import check_non_negative_int, check_positive_int


class FlowPosterior(Posterior):
    """Base of normalizing-flow posteriors: a diagonal Gaussian pushed through T invertible steps.

        z_0 = mu(x) + sigma(x) * eps,   z_T = f_T(... f_1(z_0)),
        log q(z_T|x) = log q(z_0|x) - sum_t log |det df_t / dz_{t-1}|.

    The flow composes its base Gaussian (`self.base`, a
    `DiagonalGaussianPosterior` named "base") rather than being one: the
    encoder's features h give the base's `loc` and `log_scale` and, per
    example, whatever the steps are conditioned on. Subclasses implement
    `flow(params, z) -> (z_T, log_det)` with z `[batch, k, latent_dim]` and
    log_det `[batch, k]`. With `num_steps=0` the posterior is the diagonal
    Gaussian. log q is known at the flow's own samples only (`has_log_prob`
    is False).

    Args:
        latent_dim: int, dimension of z.
        num_steps: int >= 0, number of flow steps T.
    """

    # Constructor arguments on the command line, for every flow (vizoo/cli.py; see vizoo.registry.Option).
    cli_options = {
        "num_steps": Option(
            "--flow-steps", int, "steps of a flow posterior (default the posterior's own)", check=check_positive_int
        ),
    }

    def __init__(self, latent_dim, num_steps, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_steps = check_non_negative_int(num_steps, "num_steps")
        self.base = DiagonalGaussianPosterior(self.latent_dim, name="base", dtype=self.dtype_policy)

    def build(self, h_shape):
        self.base.build(h_shape)

    def call(self, h):
        return dict(self.base(h))

    def flow(self, params, z):
        raise NotImplementedError

    def sample_noise(self, params, k, seed=None):
        return self.base.sample_noise(params, k, seed=seed)

    def transform(self, params, eps):
        z_0, log_q0 = self.base.transform(params, eps)
        z, log_det = self.flow(params, z_0)
        return z, log_q0 - log_det

    def mean(self, params):
        """The flow's image of the base mean: a location summary (E_q[z] has no closed form)."""
        return self.flow(params, params["loc"][:, None, :])[0][:, 0, :]

    def serving_outputs(self, params):
        return {"loc": self.mean(params), "base_loc": params["loc"], "base_log_scale": params["log_scale"]}

    def _zero_log_det(self, z):
        return ops.zeros_like(z[..., 0])

    def get_config(self):
        config = super().get_config()
        config["num_steps"] = self.num_steps
        return config


class AmortizedFlowPosterior(FlowPosterior):
    """Base of flows whose every step's parameters the encoder emits per example (planar, radial).

    Subclasses set `params_per_step(latent_dim)` and implement
    `step(z, step_params) -> (z, log_det)` with z `[batch, k, latent_dim]`,
    step_params `[batch, 1, params_per_step]` and log_det `[batch, k]`.

    Returns (of `call`):
        dict with `loc`, `log_scale` (`[batch, latent_dim]`, the base Gaussian)
        and `flow` (`[batch, num_steps, params_per_step]`).
    """

    @staticmethod
    def params_per_step(latent_dim):
        raise NotImplementedError

    def step(self, z, step_params):
        raise NotImplementedError

    def __init__(self, latent_dim, num_steps=4, **kwargs):
        super().__init__(latent_dim, num_steps, **kwargs)
        self._step_size = self.params_per_step(self.latent_dim)
        # One head for all steps (at least one unit, so that num_steps=0 still builds).
        self.flow_layer = keras.layers.Dense(max(1, self.num_steps * self._step_size), name="flow", dtype=self.dtype_policy)

    def build(self, h_shape):
        super().build(h_shape)
        self.flow_layer.build(h_shape)

    def call(self, h):
        params = super().call(h)
        flow = ops.cast(self.flow_layer(h), self.variable_dtype)[:, : self.num_steps * self._step_size]
        params["flow"] = ops.reshape(flow, (-1, self.num_steps, self._step_size))
        return params

    def flow(self, params, z):
        log_det = self._zero_log_det(z)
        for t in range(self.num_steps):
            # [batch, 1, params_per_step]: one example's parameters for all its k samples.
            z, step_log_det = self.step(z, params["flow"][:, None, t, :])
            log_det = log_det + step_log_det
        return z, log_det
