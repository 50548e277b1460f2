import keras

from vizoo.layers import LIKELIHOODS, POSTERIORS, PRIORS, Adversary
from vizoo.models.latent_variable_model import LatentVariableModel
from vizoo.registry import Option, register_model
from vizoo.utils import check_choice, check_hidden_units, check_positive_int


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
        decoder_hidden_units: list of ints, the decoder's hidden layer
            sizes, when they differ from `hidden_units` reversed (None). E.g.
            `hidden_units=[]` with `decoder_hidden_units=[200, 200]` and a
            `HierarchicalPosterior(hidden_units=[200, 200])`: x goes straight
            to the posterior, so psi enters every layer of q(z|psi, x) that
            x does (Sobolev & Vetrov's encoder).
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
        adversary: None, or AVB's adversary T(x, z) (a `vizoo.layers.Adversary`
            or its config), owned by the model: its variables are the
            `adversary` gradient group, trained by `vizoo.losses.AVBLoss` (the
            only kind of loss a model with an adversary compiles with).

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
        "decoder_hidden_units": Option(
            "--decoder-hidden-units",
            int,
            "the decoder's hidden layer sizes, when not --hidden-units reversed",
            nargs="*",
            check=check_hidden_units,
        ),
        "activation": Option("--activation", str, "hidden activation", default="tanh"),
    }
    # Constructor arguments that take a registered component (a registry name or a layer).
    components = ("likelihood", "posterior", "prior")
    takes_adversary = True
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
        adversary=None,
        decoder_hidden_units=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_options(input_dim, hidden_units, activation, seed)
        self.decoder_hidden_units = (
            self.hidden_units[::-1]
            if decoder_hidden_units is None
            else check_hidden_units(decoder_hidden_units, "decoder_hidden_units")
        )
        if isinstance(adversary, dict):
            adversary = keras.saving.deserialize_keras_object(adversary)
        if adversary is not None and not isinstance(adversary, Adversary):
            raise ValueError(f"adversary must be None or a vizoo.layers.Adversary. Received: adversary={adversary!r}")
        self.adversary = adversary
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.encoder_layers = self._dense_stack(self.hidden_units, "encoder")
        self.decoder_layers = self._dense_stack(self.decoder_hidden_units, "decoder")
        policy = self.dtype_policy
        self.posterior = _component(posterior, "posterior", POSTERIORS, self.latent_dim, dtype=policy)
        self.prior = _component(prior, "prior", PRIORS, dtype=policy)
        self.likelihood = _component(likelihood, "likelihood", LIKELIHOODS, self.input_dim, dtype=policy)
        if self.posterior.latent_dim != self.latent_dim:
            raise ValueError(
                f"The posterior's latent_dim must be the model's ({self.latent_dim}). "
                f"Received: posterior.latent_dim={self.posterior.latent_dim}"
            )
        if self.likelihood.output_dim != self.input_dim:
            raise ValueError(
                f"The likelihood's output_dim must be the model's input_dim ({self.input_dim}). "
                f"Received: likelihood.output_dim={self.likelihood.output_dim}"
            )
        self.prior.bind(self)
        self._init_seed_generator()

    def build(self, input_shape=None):
        if input_shape is not None:
            self.check_input_shape(input_shape)
        self._build_stack(self.encoder_layers, self.posterior, (None, self.input_dim))
        self._build_stack(self.decoder_layers, self.likelihood, (None, self.latent_dim))
        if not self.prior.built:
            self.prior.build((None, self.latent_dim))
        if self.adversary is not None and not self.adversary.built:
            self.adversary.build((None, self.input_dim), (None, None, self.latent_dim))
        self.built = True

    def log_prior(self, z):
        return self.prior(z)  # through __call__: the prior reads its variables in float32

    def sample_prior(self, num_examples, seed):
        return self.prior.sample(num_examples, seed=seed)

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

    def gradient_groups(self):
        def variables(layers):
            return [v for layer in layers for v in layer.trainable_variables]

        groups = {
            "generative": variables(self.decoder_layers + [self.likelihood, self.prior]),
            "inference": variables(self.encoder_layers),
        }
        for group, members in self.posterior.gradient_groups().items():  # e.g. a reverse model's are `control`
            groups[group] = groups.get(group, []) + list(members)
        if self.adversary is not None:
            groups["adversary"] = list(self.adversary.trainable_variables)
        return groups

    def get_config(self):
        config = super().get_config()
        config.update(
            latent_dim=self.latent_dim,
            decoder_hidden_units=list(self.decoder_hidden_units),  # (configs without the key: hidden_units reversed)
            likelihood=keras.saving.serialize_keras_object(self.likelihood),
            posterior=keras.saving.serialize_keras_object(self.posterior),
            prior=keras.saving.serialize_keras_object(self.prior),
        )
        if self.adversary is not None:  # (configs without the key load with none)
            config["adversary"] = keras.saving.serialize_keras_object(self.adversary)
        return config
