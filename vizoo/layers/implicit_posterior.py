import warnings

import keras
from keras import ops

from vizoo.layers.posterior import Posterior
from vizoo.registry import Option, register_posterior
from vizoo.utils import check_activation, check_choice, check_hidden_units, check_positive_int

# The sampler's structures (see the class docstring).
STRUCTURES = ("concat", "inject", "adaptive_contrast")


def _check_structure(value, name="structure"):
    return check_choice(value, name, STRUCTURES)


@register_posterior("implicit")
@keras.saving.register_keras_serializable(package="vizoo")
class ImplicitPosterior(Posterior):
    """An implicit posterior: a sampler z = f(h, eps) with no density.

    Three structures (`structure`), h the encoder's features, eps ~ N(0, I):

    - `"concat"`: z = f([h, eps]), an MLP on the features and the noise
      concatenated (tanh hidden layers, linear output);
    - `"inject"`: the noise enters every layer: each hidden layer and the output
      layer read [h_l, eps] (h_0 = h);
    - `"adaptive_contrast"` (the paper's sampler for adaptive contrast):

          z = z0(h) + sum_{i=1..m} a_i(h) * v_i(eps_i),   eps = [eps_1, ..., eps_m],

      z0 and the a_i linear maps of an MLP of h (`hidden_units`), each v_i an MLP
      of its own noise eps_i alone (`basis_hidden_units`; `[]` makes it linear, and
      q Gaussian), * elementwise. Since the eps_i are independent and the v_i do
      not read x, the mean and variance of z given x follow from the v_i's:

          E[z | x] = z0 + sum_i a_i * E[v_i],   Var[z | x] = sum_i a_i^2 * Var[v_i],

      with E[v_i], Var[v_i] exact for linear v_i (bias; row sums of the squared
      kernel) and otherwise estimated over all the noise of the batch, as the paper
      does (`has_moments`: `moments(params, eps)`). AVB's adaptive contrast
      (`AVBLoss(adaptive_contrast=True)`) normalizes z with them.

    Samples are reparameterized, but q(z|x) has no closed form: `has_density` is
    False, so `transform` returns `(z, None)`, the model gives no `log_qz` term,
    and losses that read log q (`needs_density`: ELBO, IWAE, ...) are refused at
    `compile` with the reason. It trains with a loss that needs no density (AVB,
    `vizoo.losses.AVBLoss`, whose value is an estimate, not a bound).
    `vizoo.evaluate.log_likelihood` estimates log p(x) with a Gaussian proposal
    fitted to its samples (`result["proposal"] == "fitted_gaussian"`), and its
    exported encoder's `sample` signature gives z alone.

    Args:
        latent_dim: int, dimension of z.
        noise_dim: int, dimension of eps (of each eps_i for `"adaptive_contrast"`);
            default latent_dim.
        hidden_units: list of ints, hidden layers of f (of the trunk of z0 and the
            a_i for `"adaptive_contrast"`).
        activation: activation of those layers (and of the v_i's).
        structure: `"concat"` (default), `"inject"` or `"adaptive_contrast"`.
        num_bases: int m, number of noise bases v_i (`"adaptive_contrast"` only).
        basis_hidden_units: list of ints, hidden layers of each v_i
            (`"adaptive_contrast"` only; `[]`: linear v_i, a Gaussian q).

    Returns (of `call`):
        dict with `features`, `[batch, features]` (h, float32): f reads them per sample.

    Example:
        >>> model = VAE(784, 8, posterior=ImplicitPosterior(8, hidden_units=[64]), adversary=Adversary())
        >>> ImplicitPosterior(8, structure="adaptive_contrast", num_bases=4).noise_shape
        (32,)

    Reference:
        Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes", ICML 2017,
        https://arxiv.org/abs/1701.04722: section 3 (the sampler z = f(x, eps)),
        section 4 (adaptive contrast and its sampler, eq. 15-17).
    """

    has_density = False
    exact_density = False
    has_log_prob = False
    cli_options = {
        "structure": Option(
            "--sampler-structure",
            str,
            f"how the implicit sampler reads its noise, one of {list(STRUCTURES)} (default concat; "
            "adaptive_contrast gives the per-example moments AVB's --adaptive-contrast needs)",
            check=_check_structure,
        ),
        "noise_dim": Option("--noise-dim", int, "noise size (of each basis' noise; default latent_dim)",
                            check=check_positive_int),
        "hidden_units": Option(
            "--sampler-hidden-units", int, "hidden layers of the sampler's network (default 64)", nargs="*",
            check=check_hidden_units,
        ),
        "num_bases": Option("--num-bases", int, "adaptive_contrast sampler: number of noise bases v_i (default 4)",
                            check=check_positive_int, requires=("sampler_structure", "adaptive_contrast")),
        "basis_hidden_units": Option(
            "--basis-hidden-units", int,
            "adaptive_contrast sampler: hidden layers of each v_i (default 32; none: linear, a Gaussian q)",
            nargs="*", check=check_hidden_units, requires=("sampler_structure", "adaptive_contrast"),
        ),
    }

    def __init__(
        self,
        latent_dim,
        noise_dim=None,
        hidden_units=(64,),
        activation="tanh",
        structure="concat",
        num_bases=4,
        basis_hidden_units=(32,),
        **kwargs,
    ):
        super().__init__(latent_dim, **kwargs)
        self.noise_dim = self.latent_dim if noise_dim is None else check_positive_int(noise_dim, "noise_dim")
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        check_activation(activation)  # fails early on an unknown name
        self.structure = _check_structure(structure)
        self.num_bases = check_positive_int(num_bases, "num_bases")
        self.basis_hidden_units = check_hidden_units(basis_hidden_units, "basis_hidden_units")
        # Declared per instance: only the adaptive-contrast sampler knows its moments.
        self.has_moments = self.structure == "adaptive_contrast"
        noise_total = self.num_bases * self.noise_dim if self.has_moments else self.noise_dim
        if noise_total < self.latent_dim:
            warnings.warn(
                f"ImplicitPosterior draws {noise_total} noise dimensions for {self.latent_dim} latent dimensions: "
                f"q(z|x) lies on a surface of at most {noise_total} dimensions and has no density, so KL(q || p) is "
                "infinite and neither the adversary's estimate of it nor evaluation's Gaussian proposal fitted to q's "
                f"samples (too narrow across the surface) can be trusted. Received: noise_dim={noise_dim}"
                + (f", num_bases={num_bases}" if self.has_moments else ""),
                stacklevel=2,
            )
        # Full precision (like every probabilistic head): z enters log p(x|z) and log p(z).
        dtype = self.variable_dtype
        self.hidden_layers = [
            keras.layers.Dense(units, activation=activation, name=f"dense_{i}", dtype=dtype)
            for i, units in enumerate(self.hidden_units)
        ]
        self.output_layer = keras.layers.Dense(self.latent_dim, name="z", dtype=dtype)
        if self.has_moments:
            # a_1..a_m(h), [batch, m * latent_dim]; the v_i's: one MLP each, noise_dim -> latent_dim.
            self.scales_layer = keras.layers.Dense(self.num_bases * self.latent_dim, name="bases_scales", dtype=dtype)
            self.basis_layers = [
                [
                    keras.layers.Dense(units, activation=activation, name=f"basis_{i}_dense_{j}", dtype=dtype)
                    for j, units in enumerate(self.basis_hidden_units)
                ]
                + [keras.layers.Dense(self.latent_dim, name=f"basis_{i}", dtype=dtype)]
                for i in range(self.num_bases)
            ]
        self.feature_dim = None  # F, known at build

    def build(self, h_shape):
        self.feature_dim = int(h_shape[-1])
        inject = self.structure == "inject"
        width = self.feature_dim + (self.noise_dim if self.structure in STRUCTURES[:2] else 0)
        for layer in self.hidden_layers:
            layer.build((None, width))
            width = layer.units + (self.noise_dim if inject else 0)
        self.output_layer.build((None, width))
        if self.has_moments:
            self.scales_layer.build((None, width))
            for basis in self.basis_layers:
                shape = (None, self.noise_dim)
                for layer in basis:
                    layer.build(shape)
                    shape = (None, layer.units)

    def call(self, h):
        return {"features": ops.cast(h, self.variable_dtype)}

    @property
    def noise_shape(self):
        return (self.num_bases * self.noise_dim,) if self.has_moments else (self.noise_dim,)

    def sample_noise(self, params, k, seed=None):
        features = params["features"]
        return keras.random.normal((ops.shape(features)[0], k, *self.noise_shape), dtype=features.dtype, seed=seed)

    def _trunk(self, features):
        """The adaptive-contrast sampler's z0 and a_i: `[batch, latent_dim]`, `[batch, m, latent_dim]`."""
        h = features
        for layer in self.hidden_layers:
            h = layer(h)
        return self.output_layer(h), ops.reshape(self.scales_layer(h), (-1, self.num_bases, self.latent_dim))

    def _bases(self, eps):
        """v_i(eps_i) for eps `[batch, k, m * noise_dim]`: `[batch, k, m, latent_dim]`."""
        values = []
        for i, basis in enumerate(self.basis_layers):
            v = ops.reshape(eps[..., i * self.noise_dim : (i + 1) * self.noise_dim], (-1, self.noise_dim))
            for layer in basis:
                v = layer(v)
            values.append(v)
        return ops.reshape(ops.stack(values, axis=1), (ops.shape(eps)[0], ops.shape(eps)[1], self.num_bases, self.latent_dim))

    def _sampler(self, features, eps):
        """z `[batch, k, latent_dim]` from features `[batch, F]` and eps `[batch, k, *noise_shape]`."""
        eps = ops.cast(eps, features.dtype)
        if self.has_moments:
            z0, scales = self._trunk(features)
            return z0[:, None, :] + ops.sum(scales[:, None] * self._bases(eps), axis=2)
        batch, k = ops.shape(eps)[0], ops.shape(eps)[1]
        h = ops.broadcast_to(features[:, None, :], (batch, k, ops.shape(features)[1]))
        # On rows [batch * k, width]: a Dense on a 2-D input is one fused matmul.
        h = ops.reshape(h, (-1, self.feature_dim))
        rows = ops.reshape(eps, (-1, self.noise_dim))
        h = ops.concatenate([h, rows], axis=-1)
        for layer in self.hidden_layers:
            h = layer(h)
            if self.structure == "inject":
                h = ops.concatenate([h, rows], axis=-1)
        return ops.reshape(self.output_layer(h), (batch, k, self.latent_dim))

    def transform(self, params, eps):
        """`(z [batch, k, latent_dim], None)`: no density."""
        return self._sampler(params["features"], eps), None

    def _basis_moments(self, eps):
        """Mean and variance of each v_i, `[m, latent_dim]`: exact for linear v_i, else over all of eps's samples."""
        if not self.basis_hidden_units:
            means = ops.stack([ops.cast(basis[-1].bias, self.variable_dtype) for basis in self.basis_layers])  # [m, latent]
            variances = ops.stack([ops.sum(ops.square(basis[-1].kernel), axis=0) for basis in self.basis_layers])
            return means, variances
        values = ops.reshape(self._bases(ops.cast(eps, self.variable_dtype)), (-1, self.num_bases, self.latent_dim))
        means = ops.mean(values, axis=0)
        return means, ops.mean(ops.square(values - means), axis=0)

    def moments(self, params, eps):
        """`(mean, variance)` of z given x, `[batch, latent_dim]` each (see the class docstring)."""
        if not self.has_moments:
            return super().moments(params, eps)
        z0, scales = self._trunk(params["features"])
        basis_means, basis_variances = self._basis_moments(eps)
        return z0 + ops.sum(scales * basis_means, axis=1), ops.sum(ops.square(scales) * basis_variances, axis=1)

    def mean(self, params):
        """A location summary: E[z|x] for linear bases, else the image of the noise's mean f(h, 0)."""
        features = params["features"]
        zeros = ops.zeros((ops.shape(features)[0], 1, *self.noise_shape), features.dtype)
        if self.has_moments and not self.basis_hidden_units:
            return self.moments(params, zeros)[0]
        return self._sampler(features, zeros)[:, 0]

    def serving_outputs(self, params):
        return {"loc": self.mean(params)}

    def sample_elements(self, **sampler_options):
        widths = [self.latent_dim, *self.hidden_units]
        if self.has_moments:
            widths += [self.num_bases * self.latent_dim] + [self.num_bases * u for u in self.basis_hidden_units]
        else:
            widths += [self.noise_dim + (self.feature_dim or 0)] + [u + self.noise_dim for u in self.hidden_units]
        return max(widths)

    def get_config(self):
        config = super().get_config()
        config.update(
            noise_dim=self.noise_dim,
            hidden_units=list(self.hidden_units),
            activation=self.activation,
            structure=self.structure,
            num_bases=self.num_bases,
            basis_hidden_units=list(self.basis_hidden_units),
        )
        return config
