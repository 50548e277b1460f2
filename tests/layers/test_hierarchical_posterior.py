"""HierarchicalPosterior against a tractable hierarchical q (closed-form log q(z)) and the model contract."""

import keras
import numpy as np
import pytest

from tests import hierarchical_reference as ref
from tests.helpers import run_serialization_test
from vizoo.layers import POSTERIORS, ConditionalGaussian, HierarchicalPosterior
from vizoo.losses import HVMLoss, IWAELoss, IWHVILoss
from vizoo.models import VAE

NUM_FEATURES = 4


@pytest.fixture(scope="module")
def a_matrix():
    return ref.mixing_matrix()


def nested_noise(num_examples, num_samples, max_reverse, seed=0):
    """One draw of [e_psi, e_z, e_1..e_K]; `noise(K)` keeps its first K reverse samples (paired across K)."""
    size = ref.AUX_DIM + ref.LATENT_DIM + max_reverse * ref.AUX_DIM
    eps = np.random.default_rng(seed).normal(size=(num_examples, num_samples, size)).astype("float32")
    return lambda K: eps[..., : ref.AUX_DIM + ref.LATENT_DIM + K * ref.AUX_DIM]


def estimates(posterior, eps, chunk=20):
    """(z [n, d], log q^_K(z) [n]) flattened over examples and samples (`chunk` examples at a time: bounded memory)."""
    z, log_qz = [], []
    for start in range(0, eps.shape[0], chunk):
        part = eps[start : start + chunk]
        params = posterior(np.zeros((part.shape[0], NUM_FEATURES), "float32"))
        z_part, log_qz_part = posterior.transform(params, part)
        z.append(np.asarray(z_part, "float64").reshape(-1, ref.LATENT_DIM))
        log_qz.append(np.asarray(log_qz_part, "float64").reshape(-1))
    return np.concatenate(z), np.concatenate(log_qz)


def mean_and_standard_error(values):
    return values.mean(), values.std(ddof=1) / np.sqrt(len(values))


def test_exact_reverse_model_makes_the_estimate_exact_for_every_k(a_matrix):
    posterior = ref.tractable_posterior(a_matrix, NUM_FEATURES)
    noise = nested_noise(50, 20, 10)
    for K in (0, 1, 10):
        z, log_qz = estimates(posterior, noise(K))
        # q(z|psi) q(psi) / q(psi|z) = q(z) at every psi: every log-weight is log q(z).
        np.testing.assert_allclose(log_qz, ref.exact_log_q(z, a_matrix), atol=2e-4, err_msg=f"K={K}")


@pytest.mark.slow  # statistical: 10,000 z with up to 1,000 reverse samples each
def test_iwhvi_upper_bound_decreases_in_k_to_the_exact_log_q(a_matrix):
    posterior = ref.tractable_posterior(a_matrix, NUM_FEATURES, loc_offset=0.5, log_scale_offset=0.3)
    noise = nested_noise(200, 50, 1000)  # 10,000 z, each with its own reverse samples
    gaps = {}
    for K in (0, 1, 10, 100, 1000):
        z, log_qz = estimates(posterior, noise(K))
        gaps[K] = log_qz - ref.exact_log_q(z, a_matrix)  # same z for every K
    for K, gap in gaps.items():
        mean, standard_error = mean_and_standard_error(gap)
        assert mean > -3 * standard_error, (K, mean, standard_error)  # an upper bound in expectation
    for smaller, larger in ((0, 1), (1, 10), (10, 100), (100, 1000)):
        mean, standard_error = mean_and_standard_error(gaps[smaller] - gaps[larger])
        assert mean > 5 * standard_error, (smaller, larger, mean, standard_error)
    assert gaps[0].mean() > 0.1  # the perturbed tau is a real approximation
    assert abs(gaps[1000].mean()) < 0.01


def test_hvm_gap_is_the_closed_form_reverse_kl(a_matrix):
    """log q^_0 - log q(z) = log q(psi_0|z) - log tau(psi_0|z), whose mean is KL(q(psi|z) || tau(psi|z))."""
    loc_offset, log_scale_offset = np.array([0.5, -0.2]), 0.3
    posterior = ref.tractable_posterior(a_matrix, NUM_FEATURES, loc_offset=loc_offset, log_scale_offset=log_scale_offset)
    z, log_qz = estimates(posterior, nested_noise(200, 50, 0)(0))
    gap = log_qz - ref.exact_log_q(z, a_matrix)
    difference = gap - ref.reverse_kl(z, a_matrix, loc_offset, log_scale_offset)
    mean, standard_error = mean_and_standard_error(difference)
    assert abs(mean) < 4 * standard_error, (mean, standard_error)
    assert gap.mean() > 10 * mean_and_standard_error(gap)[1]


def test_sivi_is_iwhvi_with_tau_equal_to_q_psi(a_matrix):
    sivi = ref.tractable_posterior(a_matrix, NUM_FEATURES, reverse_model="sivi")
    learned = ref.tractable_posterior(a_matrix, NUM_FEATURES)
    mapping, _ = ref.exact_reverse(a_matrix)
    # tau = N(0, I) = q(psi|x): the learned reverse model made to ignore z.
    learned.reverse.feature_layers[0].set_weights([np.zeros((NUM_FEATURES, 4)), np.zeros(4)])
    learned.reverse.condition_layers[0].set_weights([np.zeros((ref.LATENT_DIM, 4))])
    eps = nested_noise(10, 5, 7)(7)
    for a, b in zip(estimates(sivi, eps), estimates(learned, eps)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert sivi.reverse is None and sivi.gradient_groups()["control"] == []


def test_residual_tau_starts_as_q_psi_so_the_estimate_starts_as_sivis():
    """At initialisation the residual tau is q(psi|x): every log-weight equals SIVI's, for a twin built with SIVI too."""
    keras.utils.set_random_seed(0)
    learned = HierarchicalPosterior(3, aux_dim=2, hidden_units=[8], reverse_hidden_units=[8])
    sivi = HierarchicalPosterior(3, aux_dim=2, hidden_units=[8], reverse_model="sivi")
    h = np.random.default_rng(0).normal(size=(5, NUM_FEATURES)).astype("float32")
    params = learned(h)
    sivi(h)
    for name in ("auxiliary", "conditional"):
        getattr(sivi, name).set_weights(getattr(learned, name).get_weights())
    eps = nested_noise(5, 4, 3)(3)
    z, log_v = learned.reverse_log_weights(params, eps)
    assert np.std(np.asarray(log_v)) > 0.1  # log-weights that differ: the comparison below means something
    tau = learned.reverse_params(params, z)
    np.testing.assert_allclose(tau["loc"], np.broadcast_to(params["psi_loc"][:, None], tau["loc"].shape), atol=1e-6)
    np.testing.assert_allclose(tau["log_scale"], np.broadcast_to(params["psi_log_scale"][:, None], (5, 4, 2)), atol=1e-6)
    for other in (learned.reverse_log_weights(params, eps, reverse_model="sivi")[1], sivi.reverse_log_weights(params, eps)[1]):
        np.testing.assert_allclose(other, log_v, atol=1e-5)
    # The direct parameterization (before #25): tau is the network's output itself, unrelated to q(psi|x).
    direct = HierarchicalPosterior(3, aux_dim=2, hidden_units=[8], reverse_hidden_units=[8], reverse_residual=False)
    direct(h)
    direct.reverse.set_weights([np.random.default_rng(1).normal(size=w.shape) for w in direct.reverse.get_weights()])
    learned.reverse.set_weights(direct.reverse.get_weights())
    # Residual: tau's parameters are q(psi|x)'s plus the network's output, which is the direct tau's.
    residual_tau, direct_tau = learned.reverse_params(params, z), direct.reverse_params(params, z)
    np.testing.assert_allclose(residual_tau["loc"], direct_tau["loc"] + np.asarray(params["psi_loc"])[:, None], atol=1e-5)
    np.testing.assert_allclose(
        residual_tau["log_scale"], direct_tau["log_scale"] + np.asarray(params["psi_log_scale"])[:, None], atol=1e-5
    )
    with pytest.raises(ValueError, match="built with reverse_model='sivi', does not have. Received: reverse_model='learned'"):
        sivi.transform(params, eps, reverse_model="learned")
    with pytest.raises(ValueError, match="Received: reverse_model='exact'"):
        learned.transform(params, eps, reverse_model="exact")


def test_configs_saved_before_the_residual_tau_load_with_the_direct_one():
    config = HierarchicalPosterior(4, aux_dim=3).get_config()
    assert config["reverse_residual"] is True
    assert HierarchicalPosterior.from_config(config).reverse_residual is True
    old = {key: value for key, value in config.items() if key != "reverse_residual"}
    assert HierarchicalPosterior.from_config(old).reverse_residual is False  # its tau's weights keep their meaning
    restored = run_serialization_test(HierarchicalPosterior(4, aux_dim=3, reverse_residual=False))
    assert restored.reverse_residual is False
    assert HierarchicalPosterior(4, aux_dim=3, reverse_residual=np.bool_(False)).reverse_residual is False
    with pytest.raises(ValueError, match="reverse_residual must be True or False. Received: reverse_residual='no'"):
        HierarchicalPosterior(4, aux_dim=3, reverse_residual="no")


def test_noise_layout_and_k_read_from_the_noise(a_matrix):
    posterior = ref.tractable_posterior(a_matrix, NUM_FEATURES, num_reverse_samples=4)
    assert posterior.noise_shape == (ref.AUX_DIM + ref.LATENT_DIM + 4 * ref.AUX_DIM,)
    params = posterior(np.zeros((3, NUM_FEATURES), "float32"))
    assert posterior.sample_noise(params, 6).shape == (3, 6, 13)
    assert posterior.sample_noise(params, 6, num_reverse_samples=0).shape == (3, 6, 5)
    eps = nested_noise(3, 6, 2)(2)
    z, log_v = posterior.reverse_log_weights(params, eps)
    assert z.shape == (3, 6, ref.LATENT_DIM) and log_v.shape == (3, 6, 3)
    # z comes from psi_0 and e_z alone: the reverse samples change log q^, not z.
    z_0, _ = posterior.transform(params, eps[..., :5])
    np.testing.assert_allclose(z, z_0, atol=1e-6)
    with pytest.raises(ValueError, match="\\(K reverse samples\\). Received: noise.shape=\\(3, 6, 6\\)"):
        posterior.transform(params, eps[..., :6])
    with pytest.raises(ValueError, match="holds K=2 reverse samples. Received: num_reverse_samples=3"):
        posterior.transform(params, eps, num_reverse_samples=3)


def test_detached_log_weights_have_the_same_values(a_matrix):
    posterior = ref.tractable_posterior(a_matrix, NUM_FEATURES, loc_offset=0.5)
    params = posterior(np.zeros((3, NUM_FEATURES), "float32"))
    eps = nested_noise(3, 4, 5)(5)
    z, log_v, detached = posterior.reverse_log_weights(params, eps, detached=True)
    np.testing.assert_allclose(detached, log_v, atol=1e-5)
    _, log_qz, extra = posterior.transform_terms(params, eps, ["reverse_log_weights_detached"])
    np.testing.assert_allclose(log_qz, posterior.transform(params, eps)[1], atol=1e-6)
    assert list(extra) == ["reverse_log_weights_detached"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_reverse_samples": -1}, "Received: num_reverse_samples=-1"),
        ({"aux_dim": 0}, "Received: aux_dim=0"),
        ({"reverse_model": "exact"}, "Received: reverse_model='exact'"),
        ({"reverse_hidden_units": [0]}, "Received: reverse_hidden_units=\\[0\\]"),
        ({"reverse_residual": "yes"}, "Received: reverse_residual='yes'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HierarchicalPosterior(4, **kwargs)


def test_a_bad_head_initializer_is_named():
    with pytest.raises(ValueError, match="Received: head_initializer='nope'"):
        ConditionalGaussian(3, hidden_units=[4], head_initializer="nope")


def test_layers_serialize():
    posterior = HierarchicalPosterior(
        4, aux_dim=3, hidden_units=[8, 8], reverse_hidden_units=[5], activation="relu", num_reverse_samples=7
    )
    restored = run_serialization_test(posterior)
    assert restored.num_reverse_samples == 7 and restored.aux_dim == 3
    run_serialization_test(HierarchicalPosterior(4, reverse_model="sivi"))
    run_serialization_test(ConditionalGaussian(3, hidden_units=[4], activation="elu"))
    assert POSTERIORS["hierarchical"] is HierarchicalPosterior
    assert HierarchicalPosterior(4).aux_dim == 4  # default: latent_dim


def test_conditional_gaussian_shapes_and_condition_in_every_hidden_layer():
    layer = ConditionalGaussian(3, hidden_units=[6, 5])
    params = layer(np.ones((2, 4), "float32"), np.ones((2, 7, 9, 2), "float32"))
    assert params["loc"].shape == (2, 7, 9, 3) and params["log_scale"].shape == (2, 7, 9, 3)
    assert [l.units for l in layer.condition_layers] == [6, 5]
    assert ConditionalGaussian.log_prob(np.zeros((2, 7, 9, 3), "float32"), params).shape == (2, 7, 9)


def small_model(**kwargs):
    posterior = HierarchicalPosterior(4, aux_dim=3, hidden_units=[8], reverse_hidden_units=[8], **kwargs)
    return VAE(input_dim=64, latent_dim=4, hidden_units=[16], posterior=posterior, seed=0)


def test_compiled_loss_decides_k_and_the_number_of_reverse_samples(binary_data):
    model = small_model(num_reverse_samples=3)
    eps_size = lambda K: 3 + 4 + 3 * K  # noqa: E731
    assert model.sampler_options == {}
    model.compile(optimizer="adam", loss=IWHVILoss(k=2, num_reverse_samples=6))
    assert model.sampler_options == {"num_reverse_samples": 6} and model.num_samples == 2
    calls = []
    original = model.posterior.sample_noise
    model.posterior.sample_noise = lambda *args, **kw: calls.append(original(*args, **kw).shape) or original(*args, **kw)
    model(binary_data[:5])
    model.compile(optimizer="adam", loss=HVMLoss(k=3))
    model(binary_data[:5])
    model.compile(optimizer="adam", loss=IWAELoss(k=4))  # allowed: log q is the posterior's estimate at its K
    model(binary_data[:5])
    assert [tuple(shape) for shape in calls] == [(5, 2, eps_size(6)), (5, 3, eps_size(0)), (5, 4, eps_size(3))]


def test_hierarchical_losses_refuse_posteriors_without_an_auxiliary_variable():
    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16])
    for loss in (HVMLoss(), IWHVILoss(k=2, num_reverse_samples=3)):
        with pytest.raises(ValueError, match="does not take.*Received: posterior=DiagonalGaussianPosterior"):
            model.compile(optimizer="adam", loss=loss)
    with pytest.raises(ValueError, match="takes the sampler options \\[\\]. Received: \\['num_reverse_samples'\\]"):
        model.sample_terms(np.zeros((2, 64), "float32"), 1, num_reverse_samples=3)


def test_unsupported_terms_are_refused(binary_data):
    model = small_model()
    with pytest.raises(ValueError, match="needs the term 'log_qz_detached'"):
        model.compile(optimizer="adam", loss=IWAELoss(k=2, gradient_estimator="dreg"))
    with pytest.raises(ValueError, match="needs the term 'kl'"):
        model.compile(optimizer="adam", loss=__import__("vizoo").losses.ELBOLoss(analytic_kl=True))


def test_reverse_model_is_the_control_group(binary_data):
    model = small_model()
    model(binary_data[:2])
    groups = model.gradient_groups()
    assert sorted(v.path for v in groups["control"]) == sorted(v.path for v in model.posterior.reverse.trainable_variables)
    flat = [v.path for variables in groups.values() for v in variables]
    assert sorted(flat) == sorted(v.path for v in model.trainable_variables) and len(set(flat)) == len(flat)


@pytest.mark.parametrize(
    "loss", [pytest.param(HVMLoss(), marks=pytest.mark.slow), IWHVILoss(k=3, num_reverse_samples=4, gradient_estimator="dreg")]
)
def test_every_group_moves_in_training(binary_data, loss):
    # (Training under XLA is run_compiled_model_test, in test_passes_the_shared_model_checks below.)
    model = small_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    model(binary_data[:2])
    before = [np.array(v) for v in model.trainable_variables]
    history = model.fit(binary_data, batch_size=32, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for group, variables in model.gradient_groups().items():
        moved = [np.max(np.abs(np.asarray(v) - b)) for v, b in zip(model.trainable_variables, before) if any(v is w for w in variables)]
        assert max(moved) > 1e-4, group


@pytest.mark.slow  # beyond run_model_test's .keras check: IWHVI-DReG's sampler options and extra terms
def test_keras_file_round_trip(binary_data, tmp_path):
    model = small_model(num_reverse_samples=2)
    model.compile(optimizer="adam", loss=IWHVILoss(k=3, num_reverse_samples=5, gradient_estimator="dreg"))
    model.fit(binary_data, batch_size=32, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.posterior, HierarchicalPosterior)
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.sampler_options == {"num_reverse_samples": 5}
    eps = np.random.default_rng(0).normal(size=(6, 3, 3 + 4 + 3 * 5)).astype("float32")
    terms = ("z", "log_qz", "log_px_z", "log_pz")
    for key in terms:
        np.testing.assert_allclose(
            loaded.sample_terms(binary_data[:6], noise=eps, terms=terms)[key],
            model.sample_terms(binary_data[:6], noise=eps, terms=terms)[key],
            atol=1e-5,
            err_msg=key,
        )
    loaded.fit(binary_data, batch_size=32, epochs=1, verbose=0)  # the optimizer state loads


def test_mixed_precision_keeps_the_heads_and_log_densities_in_float32(binary_data):
    model = small_model(dtype="mixed_float16")
    terms = model(binary_data[:3], num_samples=2)
    assert all(value.dtype == "float32" for value in terms.values())
    assert model.posterior.conditional.dtype_policy.name == "mixed_float16"
    assert np.all(np.isfinite(terms["log_qz"]))


# The residual tau (the default) starts with a zero head, so at initialisation no gradient reaches its hidden
# layers, which the shared checks require: they run on the direct tau, whose computation the residual one
# shares (test_residual_tau_starts_as_q_psi_so_the_estimate_starts_as_sivis checks the difference exactly).
@pytest.mark.parametrize("reverse_model", ["learned", "sivi"])
def test_passes_the_shared_posterior_checks(reverse_model):
    from tests.helpers import run_posterior_test

    def make(**kwargs):
        return HierarchicalPosterior(
            3, aux_dim=2, hidden_units=[4], reverse_hidden_units=[4], reverse_model=reverse_model, num_reverse_samples=3,
            reverse_residual=False, **kwargs
        )

    run_posterior_test(make)


@pytest.mark.parametrize(
    "loss, compiled_variants",
    [(HVMLoss(k=2), False),
     pytest.param(IWHVILoss(k=3, num_reverse_samples=4, gradient_estimator="dreg"), True, marks=pytest.mark.slow)],
    ids=["hvm", "iwhvi_dreg_xla_mixed"],
)
def test_passes_the_shared_model_checks(loss, compiled_variants, binary_data, tmp_path):
    from tests.helpers import run_compiled_model_test, run_model_test

    def make(**kwargs):
        posterior = HierarchicalPosterior(4, aux_dim=3, hidden_units=[8], reverse_hidden_units=[8], name="posterior", **kwargs)
        return VAE(input_dim=64, latent_dim=4, hidden_units=[16], posterior=posterior, seed=0, **kwargs)

    if compiled_variants:
        run_compiled_model_test(make, binary_data, loss)
    else:
        model = run_model_test(make, binary_data, loss, tmp_path)
        assert model.sampler_options == loss.sampler_options


def test_a_model_saved_before_the_residual_tau_loads_with_its_meaning(binary_data, tmp_path):
    """A .keras file whose posterior config has no `reverse_residual` (saved before #25) keeps its direct tau."""
    import json
    import zipfile

    model = small_model(reverse_residual=False)
    model.compile(optimizer="adam", loss=IWHVILoss(k=2, num_reverse_samples=3, gradient_estimator=None))
    model(binary_data[:2])
    model.posterior.reverse.set_weights([w + 0.3 for w in model.posterior.reverse.get_weights()])
    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as source, zipfile.ZipFile(tmp_path / "old.keras", "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                posterior = config["config"]["posterior"]["config"]
                del posterior["reverse_residual"]
                config["compile_config"]["loss"]["config"]["gradient_estimator"] = None  # as saved before "auto"
                data = json.dumps(config).encode()
            target.writestr(item, data)
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert loaded.posterior.reverse_residual is False and loaded.loss.gradient_estimator == "plain"
    eps = np.random.default_rng(0).normal(size=(4, 2, 3 + 4 + 3 * 3)).astype("float32")
    np.testing.assert_allclose(
        loaded.sample_terms(binary_data[:4], noise=eps, terms=("log_qz",))["log_qz"],
        model.sample_terms(binary_data[:4], noise=eps, terms=("log_qz",))["log_qz"],
        atol=1e-5,
    )
