import keras
from keras import ops

from vizoo.utils import HALF_LOG_2PI


@keras.saving.register_keras_serializable(package="vizoo")
class StandardNormalPrior(keras.layers.Layer):
    """The prior p(z) = N(0, I); no weights.

    Every prior in vizoo offers `log_prob(z)`: z `[..., latent_dim]` ->
    `[...]`, summed over the latent dimensions.
    """

    is_standard_normal = True

    def log_prob(self, z):
        return ops.sum(-0.5 * ops.square(z) - HALF_LOG_2PI, axis=-1)

    def call(self, z):
        return self.log_prob(z)

    def get_config(self):
        # Explicit: Keras' automatic config cannot serialize a dtype policy object.
        return super().get_config()
