"""Keras layers: posteriors q(z|x), priors p(z), likelihoods p(x|z), and the networks flows use."""

from vizoo.layers.bernoulli_likelihood import BernoulliLikelihood
from vizoo.layers.diagonal_gaussian_posterior import DiagonalGaussianPosterior
from vizoo.layers.full_covariance_gaussian_posterior import FullCovarianceGaussianPosterior
from vizoo.layers.gaussian_likelihood import GaussianLikelihood
from vizoo.layers.made import MADE
from vizoo.layers.posterior import Posterior
from vizoo.layers.standard_normal_prior import StandardNormalPrior

__all__ = [
    "BernoulliLikelihood",
    "DiagonalGaussianPosterior",
    "FullCovarianceGaussianPosterior",
    "GaussianLikelihood",
    "MADE",
    "Posterior",
    "StandardNormalPrior",
]
