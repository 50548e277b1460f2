"""vizoo.terms declares every term once; models, losses, export and the test helpers read it."""

import os
import re

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, random_terms
from vizoo import terms
from vizoo.layers import POSTERIORS
from vizoo.losses import LOSSES, ELBOLoss, IWAELoss, IWHVILoss, NVILLoss
from vizoo.models import MODELS, VAE, SigmoidBeliefNetwork


def test_every_spec_is_well_formed():
    for name, spec in terms.TERMS.items():
        assert spec.name == name and spec.kind in terms.KINDS and spec.dtype == "float32"
        assert spec.shape[0] == "batch", name  # batch axis first: Keras batching, predict, sample_weight
        assert spec.detaches is None or spec.detaches in terms.TERMS
        assert spec.default in (None, "always", "free")
    assert terms.expected_shape("reverse_log_weights_detached", batch=2, k=3, K=4) == (2, 3, 5)
    assert terms.expected_shape("z", batch=2, k=3) == (2, 3, None)
    with pytest.raises(ValueError, match="Received: name='entropy'"):
        terms.spec("entropy")


def test_check_term_names_shape_and_dtype():
    terms.check_term("kl", np.zeros((4, 1), "float32"), batch=4)
    with pytest.raises(ValueError, match=r"Term 'kl' must be shaped \[batch, 1\] = \[4, 1\]. Received: shape=\[4, 3\]"):
        terms.check_term("kl", np.zeros((4, 3), "float32"), batch=4)
    with pytest.raises(ValueError, match="must be float32. Received: dtype=float64"):
        terms.check_term("log_pz", np.zeros((4, 3)), batch=4, k=3)


def test_every_declared_term_name_is_in_the_table():
    for cls in list(POSTERIORS.values()) + list(MODELS.values()):
        assert set(cls.extra_terms) <= set(terms.TERMS), cls
    losses = [cls() for cls in LOSSES.values()] + [
        ELBOLoss(analytic_kl=True, kl_warmup_epochs=2),
        ELBOLoss(free_bits=0.5),
        IWAELoss(gradient_estimator="dreg"),
        IWHVILoss(gradient_estimator="dreg"),
        NVILLoss(),
    ]
    for loss in losses:
        assert set(loss.required_terms) <= set(terms.TERMS), loss
        for name, value in random_terms(loss, batch=2).items():  # built from the spec
            terms.check_term(name, value, batch=2, k=loss.k)


def test_a_term_outside_the_table_is_refused_where_declared():
    from vizoo.layers import DiagonalGaussianPosterior
    from vizoo.models import LatentVariableModel

    with pytest.raises(ValueError, match=r"extra_terms must be terms declared in vizoo.terms. Received: extra_terms=\['entropy'\]"):

        class EntropyPosterior(DiagonalGaussianPosterior):
            extra_terms = ("entropy",)

    with pytest.raises(ValueError, match="Received: extra_terms=\\['entropy'\\]"):

        class EntropyModel(LatentVariableModel):
            extra_terms = ("entropy",)


def test_models_return_every_available_term_as_declared(binary_data):
    x = binary_data[:3]
    from vizoo.layers import Adversary, HierarchicalPosterior, ImplicitPosterior

    vae = VAE(input_dim=64, latent_dim=4, hidden_units=[8], seed=0)
    sbn = SigmoidBeliefNetwork(input_dim=64, latent_dims=[5, 3], baseline_hidden_units=[4], seed=0)
    # The adversary's and adaptive contrast's terms, and the hierarchical posterior's [batch, k, K+1] ones.
    avb = VAE(64, 4, hidden_units=[8], seed=0, adversary=Adversary(hidden_units=[4], feature_dim=2),
              posterior=ImplicitPosterior(4, hidden_units=[8], structure="adaptive_contrast", num_bases=2))
    hierarchical = VAE(64, 4, hidden_units=[8], seed=0, posterior=HierarchicalPosterior(
        4, aux_dim=2, hidden_units=[4], reverse_hidden_units=[4], num_reverse_samples=3))
    for model, latent_dim in ((vae, 4), (sbn, 8), (avb, 4), (hierarchical, 4)):
        model.build((None, 64))
        names = model.available_terms + ("z", "kl_weight")
        assert len(names) > 3, model.available_terms
        values = model.sample_terms(x, 2, terms=names)
        assert set(values) == set(names)
        for name, value in values.items():
            terms.check_term(name, value, batch=3, k=2, latent_dim=latent_dim, K=3)


def test_design_doc_term_table_matches_the_specs():
    with open(os.path.join(REPO_ROOT, "docs", "design.md")) as f:
        text = f.read()
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `(\w+)` \| `(\[[^`]*\])` \| (\w+) \| (\w+) \|", line)
        if match:
            rows[match.group(1)] = match.groups()[1:]
    assert set(rows) == set(terms.TERMS), "docs/design.md's terms table must list exactly vizoo.terms.TERMS"
    for name, (shape, dtype, kind) in rows.items():
        spec = terms.TERMS[name]
        assert shape == "[" + ", ".join(map(str, spec.shape)) + "]", name
        assert (dtype, kind) == (spec.dtype, spec.kind), name
    assert terms.markdown_table() in text, "regenerate the table with vizoo.terms.markdown_table()"
