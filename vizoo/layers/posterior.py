import keras

from vizoo.utils import check_positive_int


class Posterior(keras.layers.Layer):
    """Neutral base of vizoo's amortized posteriors q(z|x): base noise -> z.

    A posterior turns encoder features into parameters, and parameters plus
    base noise into samples with their log-density. Nothing here assumes a
    Gaussian (see `GaussianPosterior` for the Gaussian defaults), so discrete
    and hierarchical posteriors implement the same interface:

    - `call(h)` -> dict of parameters from encoder features h `[batch, features]`;
    - `noise_shape` -> the shape of one sample's base noise (`(latent_dim,)`
      for Gaussians and flows); exported encoders take noise of shape
      `[batch, k, *noise_shape]` as an input;
    - `sample_noise(params, k, seed)` -> base noise `[batch, k, *noise_shape]`;
    - `transform(params, eps)` -> `(z, log_qz)`: a deterministic map from the
      noise to samples `[batch, k, latent_dim]` and their log-density `[batch, k]`;
    - `log_prob(z, params)` -> log q(z|x) at any z broadcastable against the
      parameters, where `has_log_prob` is True (value first, as for priors and
      likelihoods);
    - `mean(params)` -> E_q[z] (or a location summary), `[batch, latent_dim]`;
    - `serving_outputs(params)` -> the dict an exported encoder serves;
    - `has_analytic_kl(prior)` / `kl_divergence(params, prior)` -> closed-form
      KL(q || prior) `[batch]` where there is one.

    Capabilities, declared as class attributes (defaults below) and read
    directly by models, losses, evaluation and export:
    - `has_density` (True): `transform` gives log q(z|x) at its own samples
      (the model's `log_qz` term). False for a sampler only (an implicit
      posterior, z = f(h, eps)): `transform` returns `(z, None)`, the model
      gives no `log_qz`, losses that `needs_density` are refused at compile,
      and evaluation fits a Gaussian proposal to the samples;
    - `exact_density` (True): that log q is exact (False where it is an
      estimate, e.g. a hierarchical posterior's bound on log q);
    - `has_log_prob` (False): `log_prob(z, params)` works at arbitrary z (not
      only at the posterior's own samples): STL/DReG and the VampPrior need it;
    - `reparameterized` (True): z is a differentiable function of the
      parameters and the noise (False for discrete or score-function
      posteriors, which reparameterization-only losses refuse);
    - `factorized` (False): q factorizes over the latent dimensions and
      `kl_divergence_per_dim` gives the closed-form KL of each where
      `has_analytic_kl(prior)` (free bits need it);
    - `sample_elements(**sampler_options)`: floats of the largest per-sample
      tensor of `transform` (evaluation sizes its chunks by it);
    - `sampler_options`: names of the keyword options `sample_noise` and
      `transform` take (`()` here; `("num_reverse_samples",)` for
      `HierarchicalPosterior`); a loss asks for them through its own
      `sampler_options`, evaluation passes them explicitly;
    - `extra_terms`: names of terms (declared in `vizoo.terms`) besides z and
      log q that `transform_terms` can give;
    - `has_moments` (False): `moments(params, eps)` gives the per-example mean
      and variance of z (exactly, or estimated over the batch's noise), so a
      moment-matched Gaussian r(z|x) is known (AVB's adaptive contrast);
    - `fixed_noise_shape` (True): given noise must be exactly
      `[batch, k, *noise_shape]` (`sample_terms` refuses another shape by name);
      False where the noise's size carries an option (a hierarchical
      posterior reads K from it and checks the size itself).

    Args:
        latent_dim: int, dimension of z.
    """

    has_density = True
    exact_density = True
    has_log_prob = False
    reparameterized = True
    factorized = False
    # `moments(params, eps)` gives the per-example mean and variance of z (AVB's adaptive contrast).
    has_moments = False
    # Names of the keyword options `sample_noise` and `transform` take (e.g. a
    # hierarchical posterior's `num_reverse_samples`); `sample_terms` passes them on.
    sampler_options = ()
    # Names of per-sample terms besides z and log q that `transform_terms` can give
    # (a model passes them through to the losses that ask for them).
    extra_terms = ()
    # Given noise must be [batch, k, *noise_shape] (False: the size varies with a sampler option, checked by transform).
    fixed_noise_shape = True
    # Constructor arguments on the command line, `{argument: vizoo.registry.Option}` (vizoo/cli.py reads them).
    cli_options = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        from vizoo import terms

        unknown = [name for name in cls.extra_terms if name not in terms.TERMS]
        if unknown:
            raise ValueError(
                f"{cls.__name__}.extra_terms must be terms declared in vizoo.terms. Received: extra_terms={unknown}"
            )

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")

    @property
    def noise_shape(self):
        return (self.latent_dim,)

    @property
    def mean_dim(self):
        """Size of `mean(params)`'s last axis: `latent_dim` (a layered posterior may summarize its first layer)."""
        return self.latent_dim

    def initialize_from_data(self, dataset):
        """Data-dependent initialization before training, from a batched dataset of x; nothing by default."""

    def sample_noise(self, params, k, seed=None):
        raise NotImplementedError

    def transform(self, params, eps):
        raise NotImplementedError

    def mean(self, params):
        raise NotImplementedError

    def serving_outputs(self, params):
        raise NotImplementedError

    def moments(self, params, eps):
        """`(mean, variance)` of z given x, each `[batch, latent_dim]`, where `has_moments` (else an error).

        `eps` is the noise `[batch, k, *noise_shape]` the samples are drawn with; a posterior
        whose moments have no closed form may estimate them from it (over the whole batch).
        """
        raise NotImplementedError(
            f"{type(self).__name__} gives no per-example moments of z (has_moments is False)."
        )

    def has_analytic_kl(self, prior):
        return False

    def kl_divergence(self, params, prior):
        return None

    def kl_divergence_per_dim(self, params, prior):
        """Closed-form KL of each latent dimension `[batch, latent_dim]` where `factorized`; None here."""
        return None

    def transform_terms(self, params, eps, names=(), **sampler_options):
        """`(z, log_qz, {name: term})` for the requested `names` among `extra_terms`, in one pass."""
        z, log_qz = self.transform(params, eps, **sampler_options)
        return z, log_qz, {}

    def sample_elements(self, **sampler_options):
        """Floats of the largest per-sample tensor of `transform` (evaluation sizes its chunks by it)."""
        return self.latent_dim

    def gradient_groups(self):
        """`{group: [variables]}` of this posterior's variables; by default all are `inference`."""
        return {"inference": list(self.trainable_variables)}

    def log_prob(self, z, params):
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form log q(z|x) at arbitrary z (only at its own samples, "
            "through transform). Use a Gaussian posterior (diagonal or full_covariance) where one is needed."
        )

    def mixture_log_prob(self, z, params):
        """log q(z | params_j) of z `[..., latent_dim]` under each of J parameter sets `params` (each `[J, ...]`),
        `[..., J]`: a mixture of posteriors' components (the VampPrior's). By default `log_prob` broadcast."""
        return self.log_prob(z[..., None, :], params)

    def get_config(self):
        config = super().get_config()
        config["latent_dim"] = self.latent_dim
        return config
