"""The contract every model family shares: one sampling entry, terms on request, gradient groups, checks."""

import keras
import numpy as np
import pytest

from vizoo.layers import DiagonalGaussianPosterior
from vizoo.losses import ELBOLoss, IWAELoss
from vizoo.models import VAE


def small_vae(**kwargs):
    return VAE(**{"input_dim": 64, "latent_dim": 4, "hidden_units": [16], "seed": 0, **kwargs})


def test_terms_are_computed_only_when_the_loss_asks(binary_data):
    model = small_vae()
    assert set(model(binary_data[:3])) == {"log_px_z", "log_pz", "log_qz", "kl"}  # no loss: every cheap term
    model.compile(optimizer="adam", loss=IWAELoss(k=2))
    assert set(model(binary_data[:3])) == {"log_px_z", "log_pz", "log_qz"}
    model.compile(optimizer="adam", loss=ELBOLoss(k=2, analytic_kl=True))
    assert set(model(binary_data[:3])) == {"log_px_z", "log_pz", "log_qz", "kl"}
    model.compile(optimizer="adam", loss=IWAELoss(k=2, gradient_estimator="dreg"))
    terms = model(binary_data[:3])
    assert set(terms) == {"log_px_z", "log_pz", "log_qz", "log_qz_detached"}
    np.testing.assert_allclose(terms["log_qz_detached"], terms["log_qz"], atol=1e-5)  # same value, other gradient


def test_sample_terms_with_given_noise_is_deterministic_and_matches_the_posterior(binary_data):
    model = small_vae()
    eps = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
    first = model.sample_terms(binary_data[:3], noise=eps, terms=("z", "log_qz", "log_px_z"))
    second = model.sample_terms(binary_data[:3], 5, noise=eps, terms=("z", "log_qz", "log_px_z"))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    z, log_qz = model.posterior.transform(model.encode(binary_data[:3]), eps)
    np.testing.assert_allclose(first["z"], z, atol=1e-6)
    np.testing.assert_allclose(first["log_qz"], log_qz, atol=1e-5)
    np.testing.assert_allclose(model.posterior_mean(binary_data[:3]), model.encode(binary_data[:3])["loc"])
    with pytest.raises(ValueError, match="Received: num_samples=4"):
        model.sample_terms(binary_data[:3], 4, noise=eps)


def test_unavailable_terms_are_named(binary_data):
    model = small_vae(posterior="planar")
    assert model.available_terms == ("log_px_z", "log_pz", "log_qz")
    with pytest.raises(ValueError, match="Cannot compute the term 'kl'.*has no closed form.*Received: terms=\\['kl'\\]"):
        model.sample_terms(binary_data[:2], 1, terms=["kl"])
    with pytest.raises(ValueError, match="needs the term 'kl'"):
        model.compile(optimizer="adam", loss=ELBOLoss(analytic_kl=True))
    with pytest.raises(ValueError, match="no term 'entropy'"):
        model.sample_terms(binary_data[:2], 1, terms=["entropy"])


@pytest.mark.parametrize("posterior, prior", [("diagonal", "standard_normal"), ("iaf", "maf"), ("full_covariance", "vamp")])
def test_gradient_groups_partition_the_trainable_variables(posterior, prior, binary_data):
    model = small_vae(posterior=posterior, prior=prior)
    model(binary_data[:2])
    groups = model.gradient_groups()
    flat = [v.path for variables in groups.values() for v in variables]
    assert sorted(flat) == sorted(v.path for v in model.trainable_variables) and len(set(flat)) == len(flat)
    def is_encoder(variable):
        return variable.path.split("/")[1].startswith(("encoder", "posterior"))

    assert all(is_encoder(v) for v in groups["inference"])
    assert not any(is_encoder(v) for v in groups["generative"])


@pytest.mark.parametrize(
    "value, message",
    [(np.nan, r"inputs must be finite. Received: inputs\[1, 3\]=nan"), (2.0, r"inputs must lie in \[0, 1\].*max=2")],
)
def test_direct_calls_check_their_inputs(value, message, binary_data):
    x = binary_data[:3].copy()
    x[1, 3] = value
    with pytest.raises(ValueError, match=message):
        small_vae()(x)


class ScoreFunctionPosterior(DiagonalGaussianPosterior):
    """A posterior that declares its samples non-differentiable (as discrete ones are)."""

    reparameterized = False


def test_reparameterization_losses_refuse_a_score_function_posterior():
    model = small_vae(posterior=ScoreFunctionPosterior(4, name="posterior"))
    for loss in (ELBOLoss(), IWAELoss(k=3)):
        with pytest.raises(ValueError, match="is not reparameterized.*Received: loss=.*posterior=ScoreFunctionPosterior"):
            model.compile(optimizer="adam", loss=loss)


def test_a_loss_that_names_an_unknown_group_is_refused(binary_data):
    class Odd(IWAELoss):
        def objectives(self, terms):
            return {"decoder": self.bound(terms)}

    model = small_vae()
    model.compile(optimizer="adam", loss=Odd(k=2))
    with pytest.raises(ValueError, match="groups among.*Received: groups \\['decoder'\\]"):
        model.fit(binary_data, epochs=1, verbose=0)


def test_regularizers_reach_every_group_with_a_split_step(binary_data):
    model = small_vae()
    model.encoder_layers[0].kernel_regularizer = keras.regularizers.L2(10.0)  # before build: Dense adds it then
    model.decoder_layers[0].kernel_regularizer = keras.regularizers.L2(10.0)
    model.build((None, 64))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=IWAELoss(k=2, gradient_estimator="dreg"))
    before = [np.linalg.norm(layer.kernel) for layer in (model.encoder_layers[0], model.decoder_layers[0])]
    model.fit(binary_data, epochs=2, verbose=0)
    after = [np.linalg.norm(layer.kernel) for layer in (model.encoder_layers[0], model.decoder_layers[0])]
    assert after[0] < 0.8 * before[0] and after[1] < 0.8 * before[1]  # weight decay acted on both groups


def test_files_from_before_kl_warmup_load_with_beta_one():
    # A .keras file written before the model owned kl_weight lists no variable of the model itself.
    model = small_vae()
    model.kl_weight.assign(0.25)
    model.load_own_variables({})
    assert float(model.kl_weight) == 1.0
    model.kl_weight.assign(0.25)
    model.load_own_variables({"0": np.float32(0.5)})  # a current file: its value
    assert float(model.kl_weight) == 0.5


@pytest.mark.parametrize("family", ["vae", "vae_group_optimizer", "sbn"])
def test_a_fresh_model_traces_each_step_once(family, binary_data, monkeypatch):
    """The model and its optimizers are built before Keras traces a step: a tf.function that creates
    variables on its first call is traced twice, and tracing is most of a small model's first epoch."""
    from vizoo.losses import NVILLoss
    from vizoo.models import SigmoidBeliefNetwork
    from vizoo.models.latent_variable_model import LatentVariableModel

    traces = {"train_step": 0, "test_step": 0, "predict_step": 0}
    for name in traces:
        original = getattr(LatentVariableModel, name)

        def counted(self, data, _original=original, _name=name):
            traces[_name] += 1  # a Python call of a step is a trace
            return _original(self, data)

        monkeypatch.setattr(LatentVariableModel, name, counted)

    def make():
        if family == "sbn":
            model = SigmoidBeliefNetwork(input_dim=64, latent_dims=[4, 3], seed=0)
            model.compile(optimizer="adam", loss=NVILLoss(k=2))
        else:
            model = small_vae()
            groups = {"inference": keras.optimizers.Adam(1e-3)} if family == "vae_group_optimizer" else None
            model.compile(optimizer="adam", loss=IWAELoss(k=2), group_optimizers=groups)
        return model

    model = make()
    assert not model.built
    model.fit(binary_data, batch_size=32, epochs=2, verbose=0)
    model.evaluate(binary_data, batch_size=32, verbose=0)
    assert traces == {"train_step": 1, "test_step": 1, "predict_step": 0}
    for method in ("evaluate", "predict"):  # a fresh model's first call of each
        getattr(make(), method)(binary_data, batch_size=32, verbose=0)
    assert traces == {"train_step": 1, "test_step": 2, "predict_step": 1}


@pytest.mark.parametrize("group_optimizers", [None, {"inference": "adam"}])
def test_a_compiled_untrained_model_saves_and_loads_without_warnings(group_optimizers, tmp_path):
    import warnings

    model = small_vae()
    model.compile(optimizer="adam", loss=IWAELoss(k=2), group_optimizers=group_optimizers)
    model.build((None, 64))
    model.save(tmp_path / "untrained.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (Keras warned that the saved optimizer's variables were skipped)
        loaded = keras.models.load_model(tmp_path / "untrained.keras")
    assert int(loaded.optimizer.iterations) == 0
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
