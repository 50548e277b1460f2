"""Both likelihoods through the shared checks: normalized over x, gradients, serialization, XLA, precision."""

import pytest

from tests.helpers import run_likelihood_test
from vizoo.layers import LIKELIHOODS, BernoulliLikelihood, GaussianLikelihood


@pytest.mark.parametrize(
    "make, support",
    [
        (lambda **kwargs: BernoulliLikelihood(4, **kwargs), "binary"),
        (lambda **kwargs: GaussianLikelihood(1, **kwargs), "real"),  # learned scale
        (lambda **kwargs: GaussianLikelihood(2, scale=0.7, **kwargs), "real"),  # fixed scale
    ],
    ids=["bernoulli", "gaussian_learned_scale_1d", "gaussian_fixed_scale_2d"],
)
def test_every_likelihood_passes_the_shared_checks(make, support):
    run_likelihood_test(make, support)


def test_every_registered_likelihood_is_checked():
    assert {type(cls(1)) for cls in LIKELIHOODS.values()} == {BernoulliLikelihood, GaussianLikelihood}
