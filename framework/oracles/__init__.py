"""Exact oracles: distributions whose denoiser and sampling ODE are known in closed form."""

from .gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
