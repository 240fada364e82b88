"""Networks only (no Lightning): every denoiser here is forward(x, t, labels=None) -> prediction of x's shape."""

from .embeddings import Conditioning, sinusoidal_embedding
from .mlp import MLPDenoiser
from .unet import UNet

__all__ = ["Conditioning", "MLPDenoiser", "UNet", "sinusoidal_embedding"]
