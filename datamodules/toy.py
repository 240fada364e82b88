"""Samples from an exact Gaussian-mixture oracle as a LightningDataModule (vector data with a known density).

Training a small MLP on these lets every sampler be compared with the mixture's exact
probability-flow ODE on a model that was actually learned, not only on the oracle.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import TensorDataset

from .loaders import SplitDataModule
from .mixture import MixtureOfGaussians

_DATA_SEED_OFFSET = 1_000_003  # the data stream's seed differs from the one that drew the mixture


class GaussianMixtureDataModule(SplitDataModule):
    """Fixed train/val sets drawn from GaussianMixture.random(components, dim, seed); batches (x float32 [B, dim], y component).

    `mixture` holds the parameters (framework.oracles.GaussianMixture.random with the same arguments is its exact oracle). num_classes is None, or `components` with
    conditional=True (the component index then serves as the class label).
    """

    def __init__(self, dim: int = 2, components: int = 4, n_train: int = 20000, n_val: int = 2000, seed: int = 0,
                 batch_size: int = 256, conditional: bool = False, num_workers: int = 0):
        super().__init__()
        for name, value, low in (("dim", dim, 1), ("components", components, 1), ("n_train", n_train, 1),
                                 ("n_val", n_val, 0), ("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.save_hyperparameters()
        self.dim, self.components, self.n_train, self.n_val = dim, components, n_train, n_val
        self.seed, self.batch_size, self.conditional, self.num_workers = seed, batch_size, conditional, num_workers
        self.mixture = MixtureOfGaussians.random(components, dim, seed)
        self.train_dataset: Optional[TensorDataset] = None
        self.val_dataset: Optional[TensorDataset] = None

    @property
    def data_shape(self) -> tuple[int]:
        return (self.dim,)

    @property
    def num_classes(self) -> Optional[int]:
        return self.components if self.conditional else None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_dataset is not None:
            return
        generator = torch.Generator().manual_seed(self.seed + _DATA_SEED_OFFSET)
        x, y = self.mixture.sample_with_components(self.n_train + self.n_val, generator)
        x = x.to(torch.float32)
        self.train_dataset = TensorDataset(x[: self.n_train], y[: self.n_train])
        self.val_dataset = TensorDataset(x[self.n_train :], y[self.n_train :])

    def real_samples(self, split: str = "train", n: Optional[int] = None) -> torch.Tensor:
        """The first n float32 samples (all when None) of `split` ('train' or 'val')."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be one of ('train', 'val'), got {split!r}")
        self.setup()
        x = (self.train_dataset if split == "train" else self.val_dataset).tensors[0]
        if n is not None and not 0 <= n <= len(x):
            raise ValueError(f"asked for {n} real samples but the {split} split has {len(x)}")
        return x[:n]
