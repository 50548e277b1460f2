"""DReG and STL: the value is the IWAE bound; only the encoder's gradient changes, without bias."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import ppca
from vizoo.losses import IWAELoss
from vizoo.models import VAE

TERMS = ("log_px_z", "log_pz", "log_qz", "log_qz_detached")


@pytest.fixture(scope="module")
def reference():
    weights, bias = ppca.ppca_parameters()
    return weights, bias, ppca.sample_data(4, weights, bias)


def encoder_gradients(model, loss, x, seed):
    """(plain IWAE encoder gradient, the loss's encoder gradient), from the same draws, flattened."""
    variables = model.gradient_groups()["inference"]
    with tf.GradientTape(persistent=True) as tape:
        terms = model.sample_terms(x, loss.k, seed=seed, terms=TERMS)
        plain = -tf.reduce_mean(loss.bound(terms))
        surrogate = loss.group_losses(terms)["inference"]
    flat = [tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(value, variables)], 0) for value in (plain, surrogate)]
    return [np.asarray(g, "float64") for g in flat]


def test_loss_value_is_the_iwae_bound_exactly():
    rng = np.random.default_rng(0)
    terms = {name: rng.normal(size=(6, 5)).astype("float32") * 30 for name in ("log_px_z", "log_pz", "log_qz")}
    terms["log_qz_detached"] = terms["log_qz"]
    plain = float(IWAELoss(k=5)(None, terms))
    for estimator in ("dreg", "stl"):
        assert float(IWAELoss(k=5, gradient_estimator=estimator)(None, terms)) == plain


def bias_z_scores(reference, estimator, k):
    """|mean(estimator - plain IWAE)| / its standard error, per encoder parameter, over 30 x 2,000 draws."""
    weights, bias, x = reference
    model = ppca.ppca_vae(weights, bias, loc_offset=0.4, log_scale_offset=-0.3)  # q is not the posterior
    loss = IWAELoss(k=k, gradient_estimator=estimator)
    copies = np.repeat(x, 500, axis=0)  # every row draws its own samples: a batch mean is a mean over draws
    seed = keras.random.SeedGenerator(0)
    plain, other = zip(*(encoder_gradients(model, loss, copies, seed) for _ in range(30)))
    plain, other = np.array(plain), np.array(other)
    assert np.max(np.abs(plain.mean(axis=0))) > 0.5  # a gradient worth comparing
    difference = other - plain  # paired: both from the same draws
    assert np.max(np.abs(difference)) > 1e-3  # the estimator is not the plain one in disguise
    standard_error = difference.std(axis=0, ddof=1) / np.sqrt(len(difference))
    return np.abs(difference.mean(axis=0)) / (standard_error + 1e-6)


@pytest.mark.slow  # statistical: 30 x 2,000 gradient draws
@pytest.mark.parametrize("estimator, k", [("dreg", 5), ("dreg", 1), ("stl", 1)])
def test_encoder_gradient_is_unbiased(reference, estimator, k):
    assert np.max(bias_z_scores(reference, estimator, k)) < 5


@pytest.mark.slow  # statistical: the power of the test above
def test_stl_is_biased_for_iwae_with_several_samples(reference):
    # Tucker et al. (2019): the path derivative alone is biased for k > 1, which the test above detects.
    assert np.max(bias_z_scores(reference, "stl", 5)) > 20


@pytest.mark.parametrize("estimator", ["dreg", "stl"])
def test_encoder_gradient_is_zero_at_the_exact_posterior(reference, estimator):
    weights, bias, x = reference
    model = ppca.ppca_vae(weights, bias)  # q(z|x) = p(z|x) exactly
    plain, other = encoder_gradients(model, IWAELoss(k=5, gradient_estimator=estimator), x, seed=3)
    assert np.max(np.abs(plain)) > 1e-2  # the plain estimator is noisy even here
    np.testing.assert_allclose(other, 0.0, atol=2e-5)


def small_vae(seed=0):
    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16], seed=seed)
    model.build((None, 64))
    return model


def one_sgd_step(model, loss, x):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    history = model.fit(x, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][0]


def test_decoder_step_is_the_iwae_step_and_encoder_step_differs(binary_data):
    plain, dreg = small_vae(), small_vae()
    dreg.set_weights(plain.get_weights())
    loss_plain = one_sgd_step(plain, IWAELoss(k=5), binary_data)
    loss_dreg = one_sgd_step(dreg, IWAELoss(k=5, gradient_estimator="dreg"), binary_data)
    assert loss_dreg == loss_plain  # the reported value is the bound, computed before the step
    for group, same in (("generative", True), ("inference", False)):
        for a, b in zip(plain.gradient_groups()[group], dreg.gradient_groups()[group]):
            if same:
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, err_msg=a.path)
        moved = [np.max(np.abs(np.asarray(a) - np.asarray(b))) for a, b in zip(plain.gradient_groups()[group], dreg.gradient_groups()[group])]
        assert (max(moved) > 1e-4) != same, group


class KerasStepVAE(VAE):
    """The same model trained by Keras's own train_step (the reference for one gradient group)."""

    def train_step(self, data):
        return super(VAE.__mro__[1], self).train_step(data)  # skip LatentVariableModel's step

    @property
    def metrics(self):  # Keras's own list: its step reports the loss through Keras's tracker, not vizoo's
        return [m for m in keras.Model.metrics.fget(self) if m is not self.loss_tracker]


def test_one_group_step_equals_keras_default_step(binary_data):
    ours, keras_step = small_vae(), KerasStepVAE(input_dim=64, latent_dim=4, hidden_units=[16], seed=0)
    keras_step.build((None, 64))
    keras_step.set_weights(ours.get_weights())
    histories = []
    for model in (ours, keras_step):
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=IWAELoss(k=3))
        histories.append(model.fit(binary_data, batch_size=32, epochs=3, shuffle=False, verbose=0).history["loss"])
    np.testing.assert_allclose(histories[0], histories[1], atol=1e-6)
    for a, b in zip(ours.weights, keras_step.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, err_msg=a.path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"posterior": "iaf"}, "IAFPosterior knows log q\\(z\\|x\\) only at its own samples"),
        ({"prior": "vamp"}, "VampPrior is defined through the encoder"),
    ],
)
def test_undefined_combinations_are_refused_at_compile(kwargs, message):
    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16], **kwargs)
    with pytest.raises(ValueError, match="IWAELoss\\(k=5, gradient_estimator='dreg'\\) needs the term 'log_qz_detached'.*" + message):
        model.compile(optimizer="adam", loss=IWAELoss(k=5, gradient_estimator="dreg"))


def test_unknown_estimator_is_named():
    with pytest.raises(ValueError, match="Received: gradient_estimator='reinforce'"):
        IWAELoss(gradient_estimator="reinforce")


@pytest.mark.slow  # training; DReG's step is run_model_test's diagonal_dreg
def test_full_covariance_posterior_trains_with_dreg(binary_data):
    model = VAE(input_dim=64, latent_dim=3, hidden_units=[16], posterior="full_covariance", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=IWAELoss(k=4, gradient_estimator="dreg"))
    before = float(model.evaluate(binary_data, verbose=0))
    history = model.fit(binary_data, batch_size=32, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert float(model.evaluate(binary_data, verbose=0)) < before
