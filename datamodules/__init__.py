"""LightningDataModules yielding (x, y) batches: embedded digits, the user's own images, Gaussian-mixture toy data."""

from .images import DigitsDataModule, ImageDataModule, ImageFileDataModule
from .toy import GaussianMixtureDataModule

__all__ = ["DigitsDataModule", "GaussianMixtureDataModule", "ImageDataModule", "ImageFileDataModule"]
