import keras
from keras import ops

from vizoo.layers import LIKELIHOODS, POSTERIORS, PRIORS, BernoulliLikelihood
from vizoo.models.latent_variable_model import LatentVariableModel
from vizoo.registry import Option, register_model
from vizoo.utils import check_choice, check_hidden_units, check_positive_int


def _stopped_per_sample(params):
    """Posterior parameters `[batch, ...]` with their gradient stopped, broadcastable over k: `[batch, 1, ...]`."""
    return {key: ops.expand_dims(ops.stop_gradient(value), axis=1) for key, value in params.items()}


def _component(value, name, registry, *args, dtype=None):
    """A layer from a registry name (built with the model's dtype policy), a serialized config, or an instance."""
    if isinstance(value, str):
        return registry[check_choice(value, name, registry)](*args, name=name, dtype=dtype)
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if not isinstance(value, keras.layers.Layer):
        raise ValueError(
            f"{name} must be one of {sorted(registry)} or a vizoo layer. Received: {name}={value!r}"
        )
    return value


@register_model("vae")
@keras.saving.register_keras_serializable(package="vizoo")
class VAE(LatentVariableModel):
    """Variational autoencoder with MLP encoder and decoder (Kingma & Welling 2014).

    Generative model p(z) p(x|z), amortized posterior q(z|x). Trained with
    any vizoo bound: `ELBOLoss` gives the VAE, `IWAELoss(k)` the IWAE of
    Burda et al. (same model, tighter bound). The defaults are the IWAE
    paper's MNIST architecture: tanh MLPs, diagonal Gaussian q, N(0, I)
    prior, Bernoulli p(x|z) on logits.

    Args:
        input_dim: int, data dimension D (784 for MNIST).
        latent_dim: int, dimension of z.
        hidden_units: list of ints, the encoder's hidden layer sizes; the
            decoder uses them reversed. `[]` gives linear maps (with a
            Gaussian likelihood, probabilistic PCA).
        activation: activation of the hidden layers (tanh, as in Burda et al.).
        likelihood: `"bernoulli"` (binary or [0, 1] data), `"gaussian"`
            (learned isotropic scale) or a likelihood layer instance.
        posterior: `"diagonal"`, `"full_covariance"`, `"iaf"`, `"planar"`,
            `"radial"` (each with its defaults) or a posterior layer instance,
            e.g. `IAFPosterior(latent_dim, num_steps=2, hidden_units=[320, 320])`.
        prior: `"standard_normal"`, `"mixture"`, `"vamp"`, `"maf"` or a prior
            layer instance, e.g. `VampPrior(num_components=500)`.
        seed: optional int seed of the model's sampling noise. (The noise
            generator's state is not saved in `.keras` files.)

    Call arguments:
        inputs: `[batch, input_dim]`.
        num_samples: optional int k; default the compiled loss's k, else 1.
        seed: optional seed for this call's noise.

    Returns:
        dict of log-density terms: `log_px_z`, `log_pz`, `log_qz`, each
        `[batch, k]`, plus what the compiled loss asks for: `kl` (`[batch, 1]`,
        closed-form KL(q || p), for Gaussian posteriors with the N(0, I) prior)
        or `log_qz_detached` (STL/DReG). See `LatentVariableModel` for the
        contract (`sample_terms`, `gradient_groups`).

    Example:
        >>> model = VAE(input_dim=784, latent_dim=50, hidden_units=[200, 200])
        >>> model.compile(optimizer="adam", loss=IWAELoss(k=5))
        >>> model.fit(train_ds, validation_data=val_ds, epochs=3)

    References:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
        Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    """

    # Constructor arguments on the command line (vizoo/cli.py; see vizoo.registry.Option).
    cli_options = {
        "latent_dim": Option("--latent-dim", int, "dimension of z", default=50, check=check_positive_int),
        "hidden_units": Option(
            "--hidden-units",
            int,
            "MLP hidden layer sizes (default the model's own: vae 200 200; sbn none, the papers' linear SBN)",
            nargs="*",
            check=check_hidden_units,
        ),
        "activation": Option("--activation", str, "hidden activation", default="tanh"),
    }
    # Constructor arguments that take a registered component (a registry name or a layer).
    components = ("likelihood", "posterior", "prior")
    decodes = True
    generates = True

    def __init__(
        self,
        input_dim,
        latent_dim,
        hidden_units=(200, 200),
        activation="tanh",
        likelihood="bernoulli",
        posterior="diagonal",
        prior="standard_normal",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.hidden_units = check_hidden_units(hidden_units)
        self.activation = activation
        keras.activations.get(activation)  # fails early on an unknown name
        self.seed = seed

        def dense_stack(units, prefix):
            return [
                keras.layers.Dense(u, activation=activation, name=f"{prefix}_dense_{i}", dtype=self.dtype_policy)
                for i, u in enumerate(units)
            ]

        self.encoder_layers = dense_stack(self.hidden_units, "encoder")
        self.decoder_layers = dense_stack(self.hidden_units[::-1], "decoder")
        policy = self.dtype_policy
        self.posterior = _component(posterior, "posterior", POSTERIORS, self.latent_dim, dtype=policy)
        self.prior = _component(prior, "prior", PRIORS, dtype=policy)
        self.likelihood = _component(likelihood, "likelihood", LIKELIHOODS, self.input_dim, dtype=policy)
        if self.posterior.latent_dim != self.latent_dim:
            raise ValueError(
                f"The posterior's latent_dim must be the model's ({self.latent_dim}). "
                f"Received: posterior.latent_dim={self.posterior.latent_dim}"
            )
        self.prior.bind(self)
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")

    def build(self, input_shape=None):
        if input_shape is not None:
            self.check_input_shape(input_shape)
        # Components deserialized from a config may arrive built already.
        def build_stack(layers, head, shape):
            for layer in layers:
                if not layer.built:
                    layer.build(shape)
                shape = (None, layer.units)
            if not head.built:
                head.build(shape)

        build_stack(self.encoder_layers, self.posterior, (None, self.input_dim))
        build_stack(self.decoder_layers, self.likelihood, (None, self.latent_dim))
        if not self.prior.built:
            self.prior.build((None, self.latent_dim))
        self.built = True

    def encode(self, x):
        """Posterior parameters for x `[batch, input_dim]` (for the default, `loc` and `log_scale`)."""
        h = x
        for layer in self.encoder_layers:
            h = layer(h)
        return self.posterior(h)

    def decode(self, z):
        """Likelihood parameters for z `[..., latent_dim]` (for Bernoulli, `logits`)."""
        # The MLP runs on rows [n, latent_dim]: a Dense on a 2-D input is one fused matmul + bias +
        # activation (oneDNN), where on [batch, k, latent_dim] it becomes a tensordot with the bias
        # and activation as separate passes (benchmarks/step_variants.py: within noise either way).
        batch_shape = ops.shape(z)[:-1]
        h = ops.reshape(z, (-1, self.latent_dim))
        for layer in self.decoder_layers:
            h = layer(h)
        params = self.likelihood(h)
        return {
            name: ops.reshape(value, tuple(batch_shape) + tuple(value.shape[-1:])) for name, value in params.items()
        }

    def joint_terms(self, x, z):
        return {"log_px_z": self.likelihood.log_prob(x, self.decode(z)), "log_pz": self.prior(z)}

    def _sample_terms(self, x, num_samples, seed, terms, encoding, noise, **sampler_options):
        encoding = self.encode(x) if encoding is None else encoding
        eps = self.posterior.sample_noise(encoding, num_samples, seed=seed, **sampler_options) if noise is None else noise
        extra = [name for name in terms if name in self.posterior.extra_terms]
        # z [batch, k, latent_dim], log_qz [batch, k] (an estimate where not posterior.exact_density)
        z, log_qz, extras = self.posterior.transform_terms(encoding, eps, extra, **sampler_options)
        values = {"z": lambda: z, "log_qz": lambda: log_qz}
        values.update({name: (lambda value=value: value) for name, value in extras.items()})
        values["log_px_z"] = lambda: self.likelihood.log_prob(x, self.decode(z))
        values["log_pz"] = lambda: self.prior(z)  # through __call__: the prior reads its variables in float32
        # log q at the same z with q's parameters stopped (z still carries their gradient): STL/DReG.
        values["log_qz_detached"] = lambda: self.posterior.log_prob(z, _stopped_per_sample(encoding))
        values["kl"] = lambda: ops.expand_dims(self.posterior.kl_divergence(encoding, self.prior), axis=-1)
        # [batch, latent_dim]: closed-form KL per latent dimension (free bits).
        values["kl_per_dim"] = lambda: self.posterior.kl_divergence_per_dim(encoding, self.prior)
        return {name: values[name]() for name in terms}

    def term_support(self, name):
        # Terms whose support depends on the components' declared capabilities; the rest as every model.
        if name in ("kl", "kl_per_dim", "log_qz_detached") and not self.posterior.has_density:
            return f"{type(self.posterior).__name__} is a sampler with no density (has_density is False)."
        if name == "kl" and not self.posterior.has_analytic_kl(self.prior):
            return (
                f"KL({type(self.posterior).__name__} || {type(self.prior).__name__}) has no closed form "
                "(it needs a Gaussian posterior and the standard normal prior)."
            )
        if name == "log_qz_detached":
            if not self.posterior.has_log_prob:
                return (
                    f"{type(self.posterior).__name__} knows log q(z|x) only at its own samples, not at z with "
                    "its parameters stopped; use a Gaussian posterior (diagonal or full_covariance)."
                )
            if self.prior.shares_inference_variables:
                return (
                    f"{type(self.prior).__name__} is defined through the encoder, so the encoder's gradient has "
                    "a prior part that STL/DReG do not estimate; use another prior."
                )
        if name == "kl_per_dim" and not (self.posterior.factorized and self.posterior.has_analytic_kl(self.prior)):
            return (
                f"the KL per latent dimension needs a factorized posterior with a closed-form KL against the "
                f"prior (the diagonal Gaussian and the standard normal prior). Received: "
                f"posterior={type(self.posterior).__name__}, prior={type(self.prior).__name__}"
            )
        if name in ("kl", "kl_per_dim", "log_qz_detached"):
            return None
        return super().term_support(name)

    def posterior_mean(self, x):
        return self.posterior.mean(self.encode(x))

    def gradient_groups(self):
        def variables(layers):
            return [v for layer in layers for v in layer.trainable_variables]

        groups = {
            "generative": variables(self.decoder_layers + [self.likelihood, self.prior]),
            "inference": variables(self.encoder_layers),
        }
        for group, members in self.posterior.gradient_groups().items():  # e.g. a reverse model's are `control`
            groups[group] = groups.get(group, []) + list(members)
        return groups

    def generate(self, num_examples, seed=None):
        """Mean of p(x|z) for `num_examples` draws z ~ p(z), `[num_examples, input_dim]`."""
        num_examples = check_positive_int(num_examples, "num_examples")
        if not self.built:
            self.build((None, self.input_dim))
        z = self.prior.sample(num_examples, seed=self.seed_generator if seed is None else seed)
        return self.likelihood.mean(self.decode(z))

    def initialize_output_bias(self, data_mean):
        """Start the Bernoulli decoder's logits at logit(data mean) (Burda et al.)."""
        if not isinstance(self.likelihood, BernoulliLikelihood):
            raise ValueError(
                "initialize_output_bias needs the Bernoulli likelihood. "
                f"Received: likelihood={type(self.likelihood).__name__}"
            )
        if not self.built:
            self.build((None, self.input_dim))
        self.likelihood.set_bias_from_mean(data_mean)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            latent_dim=self.latent_dim,
            hidden_units=list(self.hidden_units),
            activation=self.activation,
            likelihood=keras.saving.serialize_keras_object(self.likelihood),
            posterior=keras.saving.serialize_keras_object(self.posterior),
            prior=keras.saving.serialize_keras_object(self.prior),
            seed=self.seed,
        )
        return config
