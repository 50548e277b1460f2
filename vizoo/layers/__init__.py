"""Keras layers: posteriors q(z|x), priors p(z), likelihoods p(x|z), and the networks flows use.

`POSTERIORS`, `PRIORS` and `LIKELIHOODS` are the registries of what models,
the command line and the benchmarks name. A component registers itself in its
own file (`@vizoo.registry.register_posterior("name")`, `register_prior`,
`register_likelihood`); this package imports every module it holds, so a new
component is one new file here and nothing else.
"""

from vizoo.layers.adversary import Adversary
from vizoo.layers.bernoulli_likelihood import BernoulliLikelihood
from vizoo.layers.bernoulli_posterior import BernoulliPosterior
from vizoo.layers.conditional_gaussian import ConditionalGaussian
from vizoo.layers.diagonal_gaussian_posterior import DiagonalGaussianPosterior
from vizoo.layers.flow_posterior import AmortizedFlowPosterior, FlowPosterior
from vizoo.layers.full_covariance_gaussian_posterior import FullCovarianceGaussianPosterior
from vizoo.layers.gaussian_likelihood import GaussianLikelihood
from vizoo.layers.gaussian_posterior import GaussianPosterior
from vizoo.layers.hierarchical_posterior import HierarchicalPosterior
from vizoo.layers.iaf_posterior import IAFPosterior
from vizoo.layers.likelihood import Likelihood
from vizoo.layers.made import MADE
from vizoo.layers.maf_prior import MAFPrior
from vizoo.layers.mixture_of_gaussians_prior import MixtureOfGaussiansPrior
from vizoo.layers.planar_flow_posterior import PlanarFlowPosterior
from vizoo.layers.posterior import Posterior
from vizoo.layers.prior import Prior
from vizoo.layers.radial_flow_posterior import RadialFlowPosterior
from vizoo.layers.standard_normal_prior import StandardNormalPrior
from vizoo.layers.vamp_prior import VampPrior
from vizoo.registry import (
    LIKELIHOODS,
    POSTERIORS,
    PRIORS,
    import_package_modules,
    register_likelihood,
    register_posterior,
    register_prior,
)

_REGISTERED = import_package_modules(__name__, __path__)  # every module of the package: their classes register
globals().update(_REGISTERED)  # any new registered component, by class name

__all__ = [
    "LIKELIHOODS",
    "POSTERIORS",
    "PRIORS",
    "Adversary",
    "AmortizedFlowPosterior",
    "BernoulliLikelihood",
    "BernoulliPosterior",
    "ConditionalGaussian",
    "DiagonalGaussianPosterior",
    "FlowPosterior",
    "FullCovarianceGaussianPosterior",
    "GaussianLikelihood",
    "GaussianPosterior",
    "HierarchicalPosterior",
    "IAFPosterior",
    "Likelihood",
    "MADE",
    "MAFPrior",
    "MixtureOfGaussiansPrior",
    "PlanarFlowPosterior",
    "Posterior",
    "Prior",
    "RadialFlowPosterior",
    "StandardNormalPrior",
    "VampPrior",
    "register_likelihood",
    "register_posterior",
    "register_prior",
]
__all__ += sorted(set(_REGISTERED) - set(__all__))
