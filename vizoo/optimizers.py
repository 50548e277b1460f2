"""Adam with one fused kernel per variable on the TensorFlow backend.

Keras 3's Adam updates each variable with about fifteen separate operations (the moment
updates, the bias corrections, the step); on the IWAE paper's model on a 2-core CPU a training
step took 1.10-1.14x as long with it (`benchmarks/step_variants.py`). `vizoo.optimizers.Adam`
computes the same Adam update, with the same arguments, variables and saved state, through
TensorFlow's `ResourceApplyAdam` kernel: one operation per variable. It falls back to Keras's own update for what that kernel does not do
(`amsgrad`, other backends). `LatentVariableModel.compile(optimizer="adam")` uses it.

    model.compile(optimizer=vizoo.optimizers.Adam(1e-3), loss=IWAELoss(k=5))
"""

import keras


@keras.saving.register_keras_serializable(package="vizoo")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam`, updating each variable with one fused TensorFlow kernel.

    Takes the arguments of `keras.optimizers.Adam` and computes its update:
    m <- m + (1 - beta_1)(g - m), v <- v + (1 - beta_2)(g^2 - v),
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon).
    """

    def update_step(self, gradient, variable, learning_rate):
        handle = getattr(variable, "handle", None)
        if self.amsgrad or keras.backend.backend() != "tensorflow" or handle is None:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        # Python floats straight to the variable's dtype (tf.cast would round them through float32).
        beta_1 = tf.constant(self.beta_1, dtype)
        beta_2 = tf.constant(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, local_step),
            beta2_power=tf.pow(beta_2, local_step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.constant(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )
