import math
import weakref

import keras
import numpy as np
from keras import ops

from vizoo.layers.mixture_of_gaussians_prior import MixtureOfGaussiansPrior
from vizoo.layers.prior import Prior
from vizoo.registry import register_prior
from vizoo.utils import check_array, check_positive_int, draw_seed


@register_prior("vamp")
@keras.saving.register_keras_serializable(package="vizoo")
class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): the aggregate posterior of K learned pseudo-inputs.

        p(z) = 1/K sum_k q(z | u_k),

    where q is the model's own encoder and posterior and the pseudo-inputs
    u_k (`[K, input_dim]`) are trained with the model. The model binds
    itself to the prior (`bind`), so the prior has no encoder of its own and
    follows the encoder as it trains. The posterior must have a closed-form
    density at any z (diagonal or full-covariance Gaussian); a flow posterior
    can't be a VampPrior component. Initialize the pseudo-inputs from training
    examples with `initialize_pseudo_inputs(x)` (train.py does).

    Args:
        num_components: int K, number of pseudo-inputs (500 in the paper).
        input_dim: int, size of a pseudo-input; by default the model's (set
            when the model binds the prior).
        pseudo_inputs_initializer: initializer of the pseudo-inputs
            (default uniform on [0, 1]).

    Example:
        >>> model = VAE(784, 40, prior=VampPrior(num_components=500))
        >>> model.prior.initialize_pseudo_inputs(x_train[:500])

    Reference:
        Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018.
    """

    shares_inference_variables = True  # its components are the model's own encoder

    # Constructor arguments on the command line (vizoo/cli.py; see vizoo.registry.Option).
    cli_options = {"num_components": MixtureOfGaussiansPrior.cli_options["num_components"]}

    def __init__(self, num_components=500, input_dim=None, pseudo_inputs_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_components = check_positive_int(num_components, "num_components")
        self.input_dim = None if input_dim is None else check_positive_int(input_dim, "input_dim")
        try:
            self.pseudo_inputs_initializer = keras.initializers.get(
                pseudo_inputs_initializer or keras.initializers.RandomUniform(0.0, 1.0)
            )
        except ValueError:
            raise ValueError(
                "pseudo_inputs_initializer must be a Keras initializer or its name (e.g. 'random_uniform'). "
                f"Received: pseudo_inputs_initializer={pseudo_inputs_initializer!r}"
            ) from None
        self._model = None

    def bind(self, model):
        if not model.posterior.has_log_prob:
            raise ValueError(
                "VampPrior needs a posterior with a closed-form density at any z (diagonal or full_covariance). "
                f"Received: posterior={type(model.posterior).__name__}"
            )
        if self.input_dim is not None and self.input_dim != model.input_dim:
            raise ValueError(
                f"VampPrior's input_dim must be the model's ({model.input_dim}). Received: input_dim={self.input_dim}"
            )
        self.input_dim = model.input_dim
        self._model = weakref.ref(model)  # a weak reference: the model owns the prior, not the reverse

    def _owner(self):
        model = self._model() if self._model is not None else None
        if model is None:
            raise ValueError("VampPrior is used through a model: pass it as VAE(..., prior=VampPrior(...)).")
        return model

    def build(self, z_shape):
        super().build(z_shape)
        if self.input_dim is None:
            self._owner()  # explains how to use it
        self.pseudo_inputs = self.add_weight(
            name="pseudo_inputs", shape=(self.num_components, self.input_dim), initializer=self.pseudo_inputs_initializer
        )

    def initialize_pseudo_inputs(self, x):
        """Set the pseudo-inputs to K examples `[K, input_dim]` (e.g. a random draw of training data).

        Works on a model that is not built yet: the model is built first.
        """
        x = check_array(x, "x", num_features=self.input_dim)
        if not self.built:
            model = self._owner()
            model.build((None, model.input_dim))  # builds this prior too
        if len(x) != self.num_components:
            raise ValueError(
                f"x must have num_components={self.num_components} rows. Received: x.shape={x.shape}"
            )
        self.pseudo_inputs.assign(x)

    def initialize_from_data(self, dataset):
        """Pseudo-inputs start as the first `num_components` examples of a batched dataset of x (or (x, ...))."""
        batches, count = [], 0
        for batch in dataset:
            x = batch[0] if isinstance(batch, tuple) else batch
            batches.append(np.asarray(x))
            count += len(batches[-1])
            if count >= self.num_components:
                break
        x = np.concatenate(batches)
        if len(x) < self.num_components:
            raise ValueError(
                f"VampPrior's num_components must not exceed the training examples ({len(x)}). "
                f"Received: num_components={self.num_components}"
            )
        self.initialize_pseudo_inputs(x[: self.num_components])

    def components(self):
        """The posterior parameters of the K components, q(z | u_k)."""
        return self._owner().encode(self.pseudo_inputs)

    def log_prob(self, z):
        model = self._owner()
        # z [..., d] against each component's [K, d]: log q(z | u_k), [..., K].
        component = model.posterior.mixture_log_prob(ops.cast(z, self.variable_dtype), self.components())
        return ops.logsumexp(component, axis=-1) - math.log(self.num_components)

    def sample(self, num_examples, seed=None):
        num_examples = self.checked_num_examples(num_examples)
        posterior = self._owner().posterior
        chosen = keras.random.randint((num_examples,), 0, self.num_components, seed=draw_seed(seed, 1))
        params = {key: ops.take(value, chosen, axis=0) for key, value in self.components().items()}
        eps = posterior.sample_noise(params, 1, seed=draw_seed(seed, 2))
        return posterior.transform(params, eps)[0][:, 0, :]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_components=self.num_components,
            input_dim=self.input_dim,
            pseudo_inputs_initializer=keras.initializers.serialize(self.pseudo_inputs_initializer),
        )
        return config
