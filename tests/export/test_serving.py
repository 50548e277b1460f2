"""Every exported SavedModel serves in a fresh interpreter with plain TensorFlow: no vizoo, no TFP.

The module exports each kind once (the diagonal encoder, the flow encoders: IAF from TFP bijectors,
planar and radial; the hierarchical encoder with all its noise as input; every prior's density),
then ONE fresh interpreter loads them all, calls their signatures on saved inputs and writes what
they return (an interpreter start costs seconds, so the kinds share it). Each test compares one
kind's outputs with what the vizoo model computed on the same inputs and noise.
"""

import json

import numpy as np
import pytest

from tests.helpers import move_from_initialisation, run_in_fresh_process
from vizoo.export import export_encoder, export_prior
from vizoo.layers import HierarchicalPosterior
from vizoo.models import VAE

pytestmark = pytest.mark.slow  # a fresh interpreter

FLOWS = ["iaf", "planar", "radial"]
PRIORS = ["standard_normal", "mixture", "vamp", "maf"]

SERVER = """
import json, sys
import numpy as np
import tensorflow as tf
manifest = json.load(open(MANIFEST))
report = {}
for name, entry in manifest.items():
    loaded = tf.saved_model.load(entry["path"])
    data = np.load(entry["inputs"])
    outputs, item = {}, {"signatures": sorted(loaded.signatures)}
    if entry["kind"] == "encoder":
        served = loaded.signatures["serving_default"](x=tf.constant(data["x"]))
        sampled = loaded.signatures["sample"](x=tf.constant(data["x"]), eps=tf.constant(data["eps"]))
        outputs.update({f"served/{k}": v.numpy() for k, v in served.items()})
        outputs.update({f"sampled/{k}": v.numpy() for k, v in sampled.items()})
        item["eps_shape"] = str(loaded.signatures["sample"].structured_input_signature[1]["eps"].shape)
    else:
        outputs["log_pz"] = loaded.signatures["serving_default"](z=tf.constant(data["z"]))["log_pz"].numpy()
    np.savez(entry["outputs"], **outputs)
    report[name] = item
report["imported"] = sorted({m.split(".")[0] for m in sys.modules} & {"vizoo", "tensorflow_probability"})
print(json.dumps(report))
"""


def _x(rows):
    return (np.random.default_rng(0).random((rows, 64)) < 0.3).astype("float32")


def _away_from_initialisation(model):
    # Exported weights must be the model's current ones, not its initial ones.
    model.build((None, 64))
    return move_from_initialisation(model, seed=2)


def _encoder_entry(model, directory, name, eps):
    """Export `model`'s encoder; save its inputs and what vizoo computes on them."""
    x = _x(eps.shape[0])
    encoding = model.encode(x)
    z, log_qz = model.posterior.transform(encoding, eps)
    expected = {**{f"served/{k}": np.asarray(v) for k, v in model.posterior.serving_outputs(encoding).items()},
                "sampled/z": np.asarray(z), "sampled/log_qz": np.asarray(log_qz)}
    np.savez(directory / f"{name}-in.npz", x=x, eps=eps)
    path = export_encoder(model, directory / name)
    return {"kind": "encoder", "path": str(path), "inputs": str(directory / f"{name}-in.npz")}, expected


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`(report, {name: (expected, served)})`: every kind exported, served in one fresh interpreter."""
    directory = tmp_path_factory.mktemp("serving")
    entries, expected = {}, {}

    diagonal = _away_from_initialisation(VAE(input_dim=64, latent_dim=4, hidden_units=[16, 16], seed=0))
    eps = np.random.default_rng(1).normal(size=(5, 7, 4)).astype("float32")
    entries["diagonal"], expected["diagonal"] = _encoder_entry(diagonal, directory, "diagonal", eps)

    eps = np.random.default_rng(1).normal(size=(4, 3, 4)).astype("float32")
    for name in FLOWS:
        model = _away_from_initialisation(VAE(input_dim=64, latent_dim=4, hidden_units=[8], posterior=name, seed=0))
        entries[name], expected[name] = _encoder_entry(model, directory, name, eps)

    posterior = HierarchicalPosterior(4, aux_dim=3, hidden_units=[8], reverse_hidden_units=[8], num_reverse_samples=5)
    hierarchical = _away_from_initialisation(VAE(input_dim=64, latent_dim=4, hidden_units=[16], posterior=posterior, seed=0))
    assert posterior.noise_shape == (3 + 4 + 5 * 3,)  # psi_0, z and the 5 reverse samples of psi
    eps = np.random.default_rng(1).normal(size=(4, 6, 22)).astype("float32")
    entries["hierarchical"], expected["hierarchical"] = _encoder_entry(hierarchical, directory, "hierarchical", eps)

    z = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    np.savez(directory / "z.npz", z=z)
    for name in PRIORS:
        model = _away_from_initialisation(VAE(input_dim=64, latent_dim=3, hidden_units=[8], prior=name, seed=0))
        path = export_prior(model, directory / f"prior-{name}")
        entries[f"prior-{name}"] = {"kind": "prior", "path": str(path), "inputs": str(directory / "z.npz")}
        expected[f"prior-{name}"] = {"log_pz": np.asarray(model.prior.log_prob(z))}

    for name, entry in entries.items():
        entry["outputs"] = str(directory / f"{name}-out.npz")
    with open(directory / "manifest.json", "w") as f:
        json.dump(entries, f)
    output = run_in_fresh_process(f"MANIFEST = {str(directory / 'manifest.json')!r}\n" + SERVER)
    report = json.loads(output.strip().splitlines()[-1])
    outputs = {name: dict(np.load(entry["outputs"])) for name, entry in entries.items()}
    return report, {name: (expected[name], outputs[name]) for name in entries}


def _assert_same(pair):
    expected, served = pair
    assert sorted(served) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(served[key], value, atol=1e-5, rtol=1e-5, err_msg=key)


def test_nothing_of_vizoo_or_tfp_is_imported_to_serve(served):
    report, _ = served
    assert report["imported"] == []


def test_diagonal_encoder_serves_its_moments_and_samples(served):
    report, pairs = served
    assert report["diagonal"]["signatures"] == ["sample", "serving_default"]
    assert sorted(k for k in pairs["diagonal"][1] if k.startswith("served/")) == ["served/loc", "served/log_scale"]
    _assert_same(pairs["diagonal"])


@pytest.mark.parametrize("name", FLOWS)
def test_flow_encoders_serve_z_t_and_log_q(served, name):
    """IAF (TFP bijectors), planar and radial flows export as plain TensorFlow graphs."""
    _, pairs = served
    assert sorted(pairs[name][1]) == ["sampled/log_qz", "sampled/z", "served/base_loc", "served/base_log_scale",
                                      "served/loc"]
    _assert_same(pairs[name])


def test_hierarchical_encoder_serves_z_and_log_q_with_all_its_noise_as_input(served):
    report, pairs = served
    assert report["hierarchical"]["eps_shape"] == "(None, None, 22)"
    assert sorted(pairs["hierarchical"][1]) == ["sampled/log_qz", "sampled/z", "served/loc", "served/psi_loc",
                                                "served/psi_log_scale"]
    _assert_same(pairs["hierarchical"])


@pytest.mark.parametrize("name", PRIORS)
def test_every_prior_serves_its_trained_density(served, name):
    _, pairs = served
    assert pairs[f"prior-{name}"][1]["log_pz"].shape == (6,)
    _assert_same(pairs[f"prior-{name}"])
