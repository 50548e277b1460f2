import keras
from keras import ops

from vizoo.layers.prior import Prior
from vizoo.registry import register_prior
from vizoo.utils import HALF_LOG_2PI


@register_prior("standard_normal")
@keras.saving.register_keras_serializable(package="vizoo")
class StandardNormalPrior(Prior):
    """The prior p(z) = N(0, I); no weights. The interface is `Prior`'s."""

    is_standard_normal = True

    def log_prob(self, z):
        return ops.sum(-0.5 * ops.square(z) - HALF_LOG_2PI, axis=-1)

    def sample(self, num_examples, seed=None):
        num_examples = self.checked_num_examples(num_examples)
        return keras.random.normal((num_examples, self.latent_dim), dtype=self.variable_dtype, seed=seed)
