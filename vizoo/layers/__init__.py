"""Keras layers: posteriors q(z|x), priors p(z), likelihoods p(x|z), and the networks flows use."""

from vizoo.layers.bernoulli_likelihood import BernoulliLikelihood
from vizoo.layers.diagonal_gaussian_posterior import DiagonalGaussianPosterior
from vizoo.layers.flow_posterior import AmortizedFlowPosterior, FlowPosterior
from vizoo.layers.full_covariance_gaussian_posterior import FullCovarianceGaussianPosterior
from vizoo.layers.gaussian_likelihood import GaussianLikelihood
from vizoo.layers.iaf_posterior import IAFPosterior
from vizoo.layers.made import MADE
from vizoo.layers.maf_prior import MAFPrior
from vizoo.layers.mixture_of_gaussians_prior import MixtureOfGaussiansPrior
from vizoo.layers.planar_flow_posterior import PlanarFlowPosterior
from vizoo.layers.posterior import Posterior
from vizoo.layers.prior import Prior
from vizoo.layers.radial_flow_posterior import RadialFlowPosterior
from vizoo.layers.standard_normal_prior import StandardNormalPrior
from vizoo.layers.vamp_prior import VampPrior

__all__ = [
    "AmortizedFlowPosterior",
    "BernoulliLikelihood",
    "DiagonalGaussianPosterior",
    "FlowPosterior",
    "FullCovarianceGaussianPosterior",
    "GaussianLikelihood",
    "IAFPosterior",
    "MADE",
    "MAFPrior",
    "MixtureOfGaussiansPrior",
    "PlanarFlowPosterior",
    "Posterior",
    "Prior",
    "RadialFlowPosterior",
    "StandardNormalPrior",
    "VampPrior",
]
