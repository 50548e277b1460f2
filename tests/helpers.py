"""Shared test helpers: every layer, loss and model goes through the same checks."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_serialization_test(obj):
    """get_config -> from_config -> get_config is the identity, also through keras.saving."""
    config = obj.get_config()
    json.dumps(config)  # must be plain JSON
    restored = type(obj).from_config(config)
    assert restored.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(revived) is type(obj)
    assert revived.get_config() == config
    return restored


def run_in_fresh_process(code, env=None, timeout=300):
    """Run Python `code` in a new interpreter (cwd = repo root); return its stdout."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"fresh process failed:\n{result.stderr[-4000:]}"
    return result.stdout


def assert_cli_error(argv, message, out_dir, capsys):
    """`train.py ARGV --out-dir OUT_DIR` exits with status 2 and one error line containing `message`."""
    from vizoo import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--out-dir", str(out_dir)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def digits_vae(steps_per_execution=10, loss=None, group_optimizers=None):
    """`(model, splits)`: a small VAE (64-16-4) compiled for the offline digits, as a new process would build it.

    The model of the resume tests; the default loss warms the KL up over 3 epochs.
    """
    import keras

    import vizoo
    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    keras.utils.set_random_seed(0)
    splits = vizoo.data.load("digits", batch_size=100, seed=0)
    model = VAE(64, 4, hidden_units=[16], seed=0)
    model.initialize_output_bias(splits.train_mean)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=loss or IWAELoss(k=2, kl_warmup_epochs=3),
        group_optimizers=group_optimizers,
        steps_per_execution=steps_per_execution,
    )
    return model, splits


def fit_straight_and_resumed(make, tmp_path, epochs=3, interrupted_after=2):
    """`(straight, resumed, result)`: `make()`'s model trained `epochs` epochs in one run (in tmp_path/a), and
    one trained `interrupted_after` epochs then resumed to `epochs` by a new model and pipeline (in
    tmp_path/b, as a restarted process would); `result` is the resumed `fit_run`'s."""
    from vizoo import runs

    straight, splits = make()
    runs.fit_run(straight, splits.train, os.path.join(tmp_path, "a"), epochs, splits.validation, verbose=0)
    first, splits = make()
    runs.fit_run(first, splits.train, os.path.join(tmp_path, "b"), interrupted_after, splits.validation, verbose=0)
    resumed, splits = make()
    result = runs.fit_run(resumed, splits.train, os.path.join(tmp_path, "b"), epochs, splits.validation, verbose=0)
    return straight, resumed, result


def build_from_flags(argv, input_dim=64):
    """(model, loss) that `train.py ARGV` builds for data of `input_dim` features, without data or training."""
    from vizoo import cli
    from vizoo import config as run_config

    args = run_config.parse_args(cli.build_parser(), argv)
    cli._check_args(args)
    return cli.build_model(args, input_dim), cli.build_loss(args)


def assert_terms_close(a, b, atol=1e-5):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=atol, err_msg=key)


# ------------------------------------------------------------------ components
# Every posterior, prior, bound loss and model goes through one of the run_*_test
# helpers below, so a check (serialization, .keras, XLA, mixed precision, samples
# consistent with the density) can't be forgotten by one component.

FEATURES = 4  # encoder features a posterior is built on in run_posterior_test


def _as64(value):
    return np.asarray(value, dtype="float64")


def _log_standard_normal(eps):
    return np.sum(-0.5 * _as64(eps) ** 2 - 0.5 * np.log(2 * np.pi), axis=-1)


def _assert_every_weight_has_a_gradient(target, layer, tape):
    gradients = tape.gradient(target, layer.trainable_weights)
    for weight, gradient in zip(layer.trainable_weights, gradients):
        assert gradient is not None and np.any(np.asarray(gradient) != 0), f"no gradient reaches {weight.path}"


def run_posterior_test(make, batch=5, k=3, mean_is_expectation=False, seed=0):
    """The checks every posterior q(z|x) passes; `make(**kwargs)` builds one (kwargs: dtype).

    - shapes: `call(h)` parameters, noise `[batch, k, *noise_shape]`, z
      `[batch, k, latent_dim]`, log q `[batch, k]`, `mean` `[batch, latent_dim]`;
    - samples consistent with the density (float64): for a reparameterized
      posterior with standard-normal noise of the latent size and an exact
      density, log q = log N(eps) - log|det dz/deps| of the autodiff Jacobian;
      where `has_log_prob`, `log_prob(z, params)` at the samples equals log q (a sampler, `has_density` False, returns no log q);
      with `mean_is_expectation`, `mean` is the sample mean within 5 standard
      errors;
    - each sample uses its own noise only (a slice of the noise gives the same
      sample), and every trainable weight gets a gradient;
    - serialization round trip (same samples with the same weights), XLA
      (`jit_compile=True`) equal to eager, and under mixed_float16 the samples
      and densities stay float32.

    Returns the float64 posterior and its parameters, for further checks.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    posterior = make(dtype="float64")
    posterior.build((None, FEATURES))
    h = tf.constant(rng.normal(size=(batch, FEATURES)))
    params = posterior(h)
    eps = posterior.sample_noise(params, k, seed=seed)
    assert tuple(eps.shape) == (batch, k, *posterior.noise_shape), eps.shape
    z, log_qz = posterior.transform(params, eps)
    latent_dim = posterior.latent_dim
    assert tuple(z.shape) == (batch, k, latent_dim) and z.dtype == tf.float64
    if not posterior.has_density:  # a sampler: no log q at all
        assert log_qz is None, "a posterior with has_density False returns (z, None)"
        log_qz = np.zeros((batch, k))  # compared below only where there is a density
    assert tuple(log_qz.shape) == (batch, k) and log_qz.dtype == tf.float64
    assert np.all(np.isfinite(log_qz))
    assert tuple(posterior.mean(params).shape) == (batch, posterior.mean_dim) and posterior.mean_dim <= latent_dim

    # Samples and density agree.
    if (
        posterior.has_density
        and posterior.reparameterized
        and posterior.exact_density
        and tuple(posterior.noise_shape) == (latent_dim,)
    ):
        eps0 = tf.constant(rng.normal(size=(batch, latent_dim)))
        with tf.GradientTape() as tape:
            tape.watch(eps0)
            z0, log_q0 = posterior.transform(params, eps0[:, None, :])
            z0 = z0[:, 0, :]
        jacobian = tape.batch_jacobian(z0, eps0).numpy()
        expected = _log_standard_normal(eps0) - np.linalg.slogdet(jacobian)[1]
        np.testing.assert_allclose(_as64(log_q0)[:, 0], expected, atol=1e-6, rtol=0, err_msg="change of variables")
    if posterior.has_log_prob:
        per_sample = {key: value[:, None] for key, value in params.items()}
        np.testing.assert_allclose(_as64(posterior.log_prob(z, per_sample)), _as64(log_qz), atol=1e-6, rtol=0)
    if mean_is_expectation:
        many = posterior.transform(params, posterior.sample_noise(params, 20000, seed=seed + 1))[0]
        standard_error = np.std(many, axis=1) / np.sqrt(many.shape[1])
        assert np.all(np.abs(np.mean(many, axis=1) - _as64(posterior.mean(params))) < 5 * standard_error + 1e-9)

    # One sample, one noise slice.
    for j in (0, k - 1):
        z_j, log_qz_j = posterior.transform(params, eps[:, j : j + 1])
        np.testing.assert_allclose(_as64(z_j)[:, 0], _as64(z)[:, j], atol=1e-10)
        if posterior.has_density:
            np.testing.assert_allclose(_as64(log_qz_j)[:, 0], _as64(log_qz)[:, j], atol=1e-10)

    if posterior.reparameterized:
        with tf.GradientTape() as tape:
            z_g, log_qz_g = posterior.transform(posterior(h), eps)
            target = tf.reduce_sum(tf.square(z_g)) + (tf.reduce_sum(log_qz_g) if posterior.has_density else 0.0)
        _assert_every_weight_has_a_gradient(target, posterior, tape)

    # Serialization, XLA, mixed precision (float32 instances).
    float32 = make(dtype="float32")
    float32.build((None, FEATURES))
    restored = run_serialization_test(float32)
    restored.build((None, FEATURES))
    restored.set_weights(float32.get_weights())
    h32 = tf.cast(h, "float32")
    eps32 = tf.cast(eps, "float32")
    outputs = 2 if posterior.has_density else 1  # (z, log q), or z alone
    expected = float32.transform(float32(h32), eps32)[:outputs]
    for actual, wanted in zip(restored.transform(restored(h32), eps32)[:outputs], expected):
        np.testing.assert_allclose(actual, wanted, atol=1e-6, err_msg="restored from config")
    compiled = tf.function(lambda h_, eps_: float32.transform(float32(h_), eps_)[:outputs], jit_compile=True)
    for actual, wanted in zip(compiled(h32, eps32), expected):
        np.testing.assert_allclose(actual, wanted, atol=1e-4, rtol=1e-4, err_msg="XLA")
    mixed = make(dtype="mixed_float16")
    mixed.build((None, FEATURES))
    values = mixed.transform(mixed(tf.cast(h, "float16")), eps32)[:outputs]
    assert [value.dtype for value in values] == [tf.float32] * outputs, "densities leave float32 under mixed precision"
    return posterior, params


def grid_expectations(log_prob, dim, half_width=12.0, points=801):
    """(integral of p, E_p[z], E_p[z^2]) over [-half_width, half_width]^dim (dim 1 or 2), trapezoid rule."""
    axis = np.linspace(-half_width, half_width, points)
    mesh = np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), axis=-1)
    flat = mesh.reshape(-1, dim)
    chunks = np.array_split(flat.astype("float32"), max(1, len(flat) // 65536))  # bounded memory: 641,601 points
    density = np.exp(np.concatenate([_as64(log_prob(chunk)) for chunk in chunks]))

    def integrate(values):
        values = values.reshape(mesh.shape[:-1])
        for _ in range(dim):
            values = np.trapezoid(values, axis, axis=0)
        return values

    mass = integrate(density)
    first = np.array([integrate(density * flat[:, i]) for i in range(dim)])
    second = np.array([integrate(density * flat[:, i] ** 2) for i in range(dim)])
    return mass, first, second


def run_prior_test(prior, num_samples=20000, half_width=12.0, points=801, seed=0):
    """The checks every prior p(z) passes; `prior` is built (and bound to its model, if it needs one).

    - `log_prob` maps z `[..., latent_dim]` to `[...]` in float32;
      `sample(n)` gives `[n, latent_dim]`, finite;
    - samples consistent with `log_prob` (latent_dim 1 or 2): the density
      integrates to 1 within 1e-3 on a grid, and the sample mean and second
      moment match the grid's within 5 standard errors;
    - `log_prob` under XLA equals eager; serialization round trip.
    """
    import tensorflow as tf

    dim = prior.latent_dim
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, 4, dim)).astype("float32")
    log_pz = prior.log_prob(z)
    assert tuple(log_pz.shape) == (3, 4) and log_pz.dtype == tf.float32
    samples = _as64(prior.sample(num_samples, seed=seed))
    assert samples.shape == (num_samples, dim) and np.all(np.isfinite(samples))
    if dim <= 2:
        mass, first, second = grid_expectations(prior.log_prob, dim, half_width, points)
        assert abs(mass - 1.0) < 1e-3, f"the density integrates to {mass}"
        for moment, values in ((first, samples), (second, samples**2)):
            standard_error = values.std(axis=0) / np.sqrt(num_samples)
            assert np.all(np.abs(values.mean(axis=0) - moment / mass) < 5 * standard_error), (values.mean(0), moment)
    compiled = tf.function(prior.log_prob, jit_compile=True)
    np.testing.assert_allclose(compiled(z), log_pz, atol=1e-4, rtol=1e-5, err_msg="XLA")
    run_serialization_test(prior)
    return samples


def run_likelihood_test(make, support, batch=3, k=2, seed=0):
    """The checks every likelihood p(x|z) passes; `make(**kwargs)` builds one (kwargs: dtype).

    `support` is `"binary"` (x in {0, 1}^D, enumerated: D <= 10) or `"real"` (x in R^D, D 1
    or 2, integrated on a grid).

    - `call(h)` parameters from features `[batch, k, FEATURES]`; `log_prob(x, params)` is
      `[batch, k]` in float32;
    - normalized: for every parameter setting, p(x|z) sums (binary) or integrates (real) to
      1 over x, and `mean(params)` is its expectation (float64); `sample(params)` draws x with
      that mean;
    - every trainable weight gets a gradient from log p(x|z);
    - serialization round trip (same log p with the same weights), XLA equal to eager, and
      float32 log-densities under mixed_float16.
    """
    import itertools

    import tensorflow as tf

    rng = np.random.default_rng(seed)
    likelihood = make(dtype="float64")
    likelihood.build((None, k, FEATURES))
    dim = likelihood.output_dim
    h = rng.normal(size=(batch, k, FEATURES))
    params = likelihood(tf.constant(h))
    x = rng.random((batch, dim)) < 0.5 if support == "binary" else rng.normal(size=(batch, dim))
    log_p = likelihood.log_prob(tf.constant(x, "float64"), params)
    assert tuple(log_p.shape) == (batch, k) and np.all(np.isfinite(log_p)), log_p.shape

    # Normalized, with `mean` its expectation: x over its support, for each of the batch * k settings.
    flat = {key: tf.reshape(value, (1, batch * k, *value.shape[2:])) for key, value in params.items()}
    if support == "binary":
        assert dim <= 10, "enumeration needs D <= 10"
        points = np.array(list(itertools.product([0.0, 1.0], repeat=dim)))
        weights = np.ones(len(points))
    else:
        assert dim <= 2, "the grid needs D <= 2"
        mean = _as64(likelihood.mean(flat))[0]
        half_width = 12.0 * float(np.max(np.abs(mean))) + 40.0
        axis = np.linspace(-half_width, half_width, 2001 if dim == 1 else 401)
        points = np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), axis=-1).reshape(-1, dim)
        step = axis[1] - axis[0]
        weights = np.full(len(points), step**dim)  # a Riemann sum: the density is ~0 at the edges
    tiled = {key: tf.repeat(value, len(points), axis=0) for key, value in flat.items()}
    density = np.exp(_as64(likelihood.log_prob(tf.constant(points), tiled)))  # [points, batch * k]
    np.testing.assert_allclose(weights @ density, 1.0, atol=1e-6 if support == "binary" else 2e-4, err_msg="mass")
    expectation = np.einsum("p,pn,pd->nd", weights, density, points)
    np.testing.assert_allclose(expectation, _as64(likelihood.mean(flat))[0], atol=1e-6 if support == "binary" else 1e-3)
    # sample(params) draws x ~ p(x|z) (simulated data, vizoo.ais): its average is mean(params), within 5 sd.
    draws = 4000
    repeated = {key: tf.repeat(value, draws, axis=0) for key, value in flat.items()}
    samples = _as64(likelihood.sample(repeated, seed=seed))  # [draws, batch * k, D]
    assert samples.shape == (draws, batch * k, dim), samples.shape
    spread = np.sqrt(np.einsum("p,pn,pnd->nd", weights, density, (points[:, None, :] - expectation[None]) ** 2))
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - expectation), 5 * spread / np.sqrt(draws) + 1e-6)

    with tf.GradientTape() as tape:
        target = tf.reduce_sum(likelihood.log_prob(tf.constant(x, "float64"), likelihood(tf.constant(h))))
    _assert_every_weight_has_a_gradient(target, likelihood, tape)

    float32 = make(dtype="float32")
    float32.build((None, k, FEATURES))
    restored = run_serialization_test(float32)
    restored.build((None, k, FEATURES))
    restored.set_weights(float32.get_weights())
    h32, x32 = tf.constant(h, "float32"), tf.constant(x, "float32")
    expected = float32.log_prob(x32, float32(h32))
    np.testing.assert_allclose(restored.log_prob(x32, restored(h32)), expected, atol=1e-6, err_msg="restored")
    compiled = tf.function(lambda h_, x_: float32.log_prob(x_, float32(h_)), jit_compile=True)
    np.testing.assert_allclose(compiled(h32, x32), expected, atol=1e-4, rtol=1e-5, err_msg="XLA")
    mixed = make(dtype="mixed_float16")
    mixed.build((None, k, FEATURES))
    mixed_params = mixed(tf.cast(h32, "float16"))
    assert {value.dtype for value in mixed_params.values()} == {tf.float32}
    assert mixed.log_prob(x32, mixed_params).dtype == tf.float32
    return likelihood


def random_terms(loss, batch=7, k=None, scale=30.0, seed=0, latent_dim=3, num_reverse_samples=3):
    """Random terms for every term `loss` needs, each shaped and typed as `vizoo.terms` declares it.

    Values respect the spec's `bounds` (a KL >= 0, `kl_weight` in [0, 1], ...); `log_px_z` is
    -scale * U(0, 1); a detached term equals the term it copies (same value, other gradient).
    Sizes: `k` (default the loss's), `latent_dim`, `num_reverse_samples` (K).
    """
    from vizoo import terms as term_specs

    rng = np.random.default_rng(seed)
    sizes = dict(batch=batch, k=loss.k if k is None else k, latent_dim=latent_dim, K=num_reverse_samples)
    terms = {}
    for name in loss.required_terms:
        spec = term_specs.spec(name)
        shape = term_specs.expected_shape(name, **sizes)
        low, high = spec.bounds
        if name == "log_px_z":
            value = -scale * rng.random(shape)
        elif low is not None and high is not None:
            value = low + (high - low) * rng.random(shape)
        elif low is not None:
            value = low + 5.0 * rng.random(shape)
        else:
            value = rng.normal(size=shape) - 2.0
        terms[name] = value.astype(spec.dtype)
    for name in loss.required_terms:
        source = term_specs.spec(name).detaches
        if source in terms and terms[source].shape == terms[name].shape:
            terms[name] = terms[source]
    return terms


def run_bound_loss_test(loss, reference_bound, terms=None):
    """The checks every bound loss passes.

    `reference_bound(terms64)` computes the exact bound per example `[batch]`
    in float64 numpy from the terms (a dict of float64 arrays).

    - the value is `-mean(reference_bound)` (also for log-weights around -1e4,
      far below float32's exp range), `sample_weight` weights examples as
      Keras's sum_over_batch_size, `y_true` is ignored;
    - per-group surrogates (if any) name known groups and leave the value alone;
    - a missing term is a named error; serialization round trip (same value).
    """
    from vizoo.losses import GRADIENT_GROUPS

    def expected(terms_):
        return -np.mean(reference_bound({key: _as64(value) for key, value in terms_.items()}))

    terms = random_terms(loss) if terms is None else terms
    value = float(loss(None, terms))
    assert value == pytest.approx(expected(terms), abs=1e-4, rel=1e-6)
    extreme = {key: value_ * (1e4 / 30.0) if key == "log_px_z" else value_ for key, value_ in terms.items()}
    assert np.isfinite(float(loss(None, extreme)))
    assert float(loss(None, extreme)) == pytest.approx(expected(extreme), rel=1e-6)

    batch = next(iter(terms.values())).shape[0]
    weights = np.linspace(0.0, 2.0, batch).astype("float32")
    per_example = -reference_bound({key: _as64(v) for key, v in terms.items()})
    weighted = float(loss(None, terms, sample_weight=weights))
    assert weighted == pytest.approx(np.sum(per_example * weights) / batch, abs=1e-4, rel=1e-6)
    assert float(loss(np.zeros((batch, 3)), terms)) == value, "y_true must be ignored"

    objectives = loss.objectives(terms)
    if objectives is not None:
        assert set(objectives) <= set(GRADIENT_GROUPS), sorted(objectives)
        for group, surrogate in objectives.items():
            assert tuple(surrogate.shape) == (batch,), (group, surrogate.shape)
        assert set(loss.group_losses(terms)) == set(objectives)

    for name in loss.required_terms:
        partial = {key: v for key, v in terms.items() if key != name}
        try:
            loss(None, partial)
        except ValueError as error:
            assert f"missing ['{name}']" in str(error), error
        else:
            raise AssertionError(f"{type(loss).__name__} accepted terms without {name!r}")

    restored = run_serialization_test(loss)
    assert restored.k == loss.k and float(restored(None, terms)) == value
    return value


def standard_normal_noise(model, batch, k, seed=0):
    """Noise `[batch, k, *posterior.noise_shape]` for a model whose posterior draws N(0, I)."""
    shape = (batch, k, *model.posterior.noise_shape)
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def move_from_initialisation(model, seed, scale=0.1):
    """Add `scale` times standard normal noise to every trainable weight of the built `model`; return it.

    A check on initial weights can pass vacuously (zero last layers make flows identities); moved by
    noise, as training would move them, the weights are generic, without training's cost.
    """
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(variable + scale * rng.standard_normal(variable.shape).astype(variable.dtype))
    return model


def _checked_term_names(loss):
    # Terms at the model's own contrast draws (AVB's adversary at z' ~ p(z)) are not fixed by the noise given.
    from vizoo import terms as term_specs

    return tuple(name for name in loss.required_terms if not term_specs.spec(name).contrast)


def run_model_test(make, x, loss, tmp_path, make_noise=standard_normal_noise):
    """The checks every model passes; `make(**kwargs)` builds one (kwargs: dtype).

    - `model(x)` returns the loss's terms, each shaped and typed as `vizoo.terms` declares it, finite;
      with given noise `sample_terms` is deterministic and each sample uses
      its own noise only (terms at the model's own contrast draws, `contrast`
      in the spec, aside); the reported loss is the loss of the terms;
    - it trains (`fit(x)` with no targets, finite and decreasing) with Keras's default step;
    - serialization round trip (same terms with the same weights and noise) and a
      `.keras` round trip (same terms, the loss and k compiled again, training
      continues);
    - `evaluate.log_likelihood` is finite with log p(x) >= ELBO on the same samples.

    XLA and mixed precision are `run_compiled_model_test`'s: each costs compilations, so a family
    runs them for one configuration (marked slow) instead of this battery.

    Returns the trained model.
    """
    import keras

    import vizoo

    from vizoo import terms as term_specs

    batch, k = 4, loss.k
    model = make()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    terms = model(x[:batch])
    assert set(terms) >= set(loss.required_terms), sorted(terms)
    sizes = dict(batch=batch, k=k, latent_dim=model.posterior.latent_dim, K=loss.sampler_options.get("num_reverse_samples"))
    for name, value in terms.items():
        term_specs.check_term(name, value, **sizes)  # shape rule and dtype from the spec
        assert np.all(np.isfinite(value)), name

    names = _checked_term_names(loss)
    noise = make_noise(model, batch, k)
    first = model.sample_terms(x[:batch], noise=noise, terms=names)
    assert_terms_close(first, model.sample_terms(x[:batch], noise=noise, terms=names), atol=0)
    last = model.sample_terms(x[:batch], noise=noise[:, -1:], terms=names)
    for name in names:
        if "k" in term_specs.spec(name).shape:
            np.testing.assert_allclose(np.asarray(last[name])[:, 0], np.asarray(first[name])[:, -1], atol=1e-5, err_msg=name)
    every = model.sample_terms(x[:batch], noise=noise, terms=tuple(loss.required_terms))
    np.testing.assert_allclose(
        float(model.compute_loss(y_pred=every)), float(loss(None, every)), rtol=1e-6, err_msg="compute_loss"
    )

    before = float(model.evaluate(x, verbose=0, return_dict=True)["loss"])
    history = model.fit(x, batch_size=32, epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert float(model.evaluate(x, verbose=0, return_dict=True)["loss"]) < before, "training did not improve the bound"

    restored = run_serialization_test(model)
    restored.build((None, model.input_dim))
    restored.set_weights(model.get_weights())
    assert_terms_close(restored.sample_terms(x[:batch], noise=noise, terms=names), model.sample_terms(x[:batch], noise=noise, terms=names))

    path = os.path.join(os.fspath(tmp_path), f"{model.name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.loss) is type(loss) and loaded.loss.get_config() == loss.get_config()
    assert_terms_close(loaded.sample_terms(x[:batch], noise=noise, terms=names), model.sample_terms(x[:batch], noise=noise, terms=names))
    assert np.isfinite(loaded.fit(x, epochs=1, verbose=0).history["loss"][0])

    result = vizoo.evaluate.log_likelihood(model, x[:8], k=2 * k, batch_size=4, seed=0, **(
        {} if model.posterior.has_density else {"proposal_samples": 50}))
    assert np.isfinite(result["nll"]) and result["log_likelihood"] >= result["elbo"] - 1e-4
    return model


def run_compiled_model_test(make, x, loss, make_noise=standard_normal_noise, jit_compile=True, mixed_precision=True):
    """A model under XLA and under mixed precision; `make(**kwargs)` builds one (kwargs: dtype).

    - with `jit_compile`, its XLA-compiled terms equal the eager ones for the same weights and noise,
      and it trains under XLA (`compile(jit_compile=True)`);
    - with `mixed_precision`, the same weights computed under mixed_float16 give float32 terms close to
      float32's, and the mixed model trains (under XLA too when `jit_compile`: the combination GPUs run,
      and one XLA training compilation instead of two).

    The rest of a model's checks are `run_model_test`'s, for another configuration of the family.
    """
    import tensorflow as tf

    batch, k = 4, loss.k
    model = make()
    model.compile(optimizer="adam", loss=loss)  # (the loss sets k and the sampler's options)
    if not model.built:
        model.build((None, model.input_dim))
    move_from_initialisation(model, seed=0)
    names = _checked_term_names(loss)
    noise = make_noise(model, batch, k)
    eager = model.sample_terms(x[:batch], noise=noise, terms=names)
    if jit_compile:
        compiled = tf.function(lambda x_, noise_: model.sample_terms(x_, noise=noise_, terms=names), jit_compile=True)
        assert_terms_close(compiled(x[:batch], noise), eager, atol=1e-3)
        if not mixed_precision:  # (with mixed_precision, the mixed model below trains under XLA instead)
            model.compile(optimizer="adam", loss=loss, jit_compile=True)
            assert np.all(np.isfinite(model.fit(x, batch_size=32, epochs=1, verbose=0).history["loss"]))
    if mixed_precision:
        mixed = make(dtype="mixed_float16")
        if not mixed.built:
            mixed.build((None, model.input_dim))
        mixed.set_weights(model.get_weights())  # the same model computed in float16: terms close to float32's
        rounded = mixed.sample_terms(x[:batch], noise=noise, terms=names)
        assert {value.dtype.name for value in rounded.values()} == {"float32"}
        for name in names:
            np.testing.assert_allclose(rounded[name], eager[name], rtol=0.02, atol=0.3, err_msg=f"mixed_float16 {name}")
        mixed.compile(optimizer="adam", loss=loss, jit_compile=jit_compile)
        assert np.all(np.isfinite(mixed.fit(x, batch_size=32, epochs=1, verbose=0).history["loss"]))


def assert_reloaded_model_continues_bit_for_bit(model, loaded, x, group, iterations):
    """`loaded` (a .keras file of the trained `model`) has the same main and `group` optimizer state
    (`iterations` steps, every slot equal), and one more epoch of each gives the same weights.

    .keras files leave out the noise state (TrainingCheckpoint keeps it): it is copied first.
    """
    from vizoo.callbacks import _seed_states

    pairs = ((loaded.group_optimizers[group], model.group_optimizers[group]), (loaded.optimizer, model.optimizer))
    for optimizer, original in pairs:
        assert int(optimizer.iterations) == iterations
        assert len(optimizer.variables) == len(original.variables)
        for a, b in zip(optimizer.variables, original.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    states = _seed_states(loaded)
    for path, variable in _seed_states(model).items():
        states[path].assign(variable.numpy())
    for m in (model, loaded):
        m.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
