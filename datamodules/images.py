"""LightningDataModules for images: scikit-learn's 8x8 digits, or the user's own .npz file / image folder.

Batches are (x, y): x float32 in [-1, 1] of shape [B, C, H, W], y long [B] (zeros when
the data has no labels). `data_shape` and `num_classes` are known before `setup()` so a
model can be built from them; the train/val split is a fixed function of `seed`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import Dataset

from .loaders import SplitDataModule
from .image_io import LoadedImages, load_images, to_unit_range

SPLITS = ("train", "val")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation cut into (train, val) index tensors, each sorted so the order is stable."""
    n_val = int(round(val_fraction * n))
    if n_val >= n:
        raise ValueError(f"val_fraction={val_fraction} leaves no training images out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class ImageDataset(Dataset):
    """(image float32 in [-1, 1], label) pairs over images stored as uint8 0..255 or float32 in [-1, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_unit_range(self.images[index]), self.labels[index]

    def all_images(self) -> torch.Tensor:
        """Every image of the dataset at once, float32 in [-1, 1]."""
        return to_unit_range(self.images)


class ImageDataModule(SplitDataModule):
    """Shared split, loaders and helpers; subclasses implement `_load()` -> LoadedImages."""

    def __init__(self, batch_size: int = 128, val_fraction: float = 0.1, seed: int = 0, num_workers: int = 0):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.val_fraction, self.seed, self.num_workers = batch_size, val_fraction, seed, num_workers
        self._data: Optional[LoadedImages] = None
        self.train_dataset: Optional[ImageDataset] = None
        self.val_dataset: Optional[ImageDataset] = None

    def _load(self) -> LoadedImages:
        raise NotImplementedError

    @property
    def data(self) -> LoadedImages:
        """The whole dataset, loaded once on first use."""
        if self._data is None:
            self._data = self._load()
        return self._data

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.data.images.shape[1:])

    @property
    def num_classes(self) -> Optional[int]:
        """Number of classes (labels are 0..num_classes-1), or None for unlabelled data."""
        labels = self.data.labels
        return None if labels is None else int(labels.max()) + 1

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_dataset is not None:
            return
        images = self.data.images
        labels = self.data.labels if self.data.labels is not None else torch.zeros(images.shape[0], dtype=torch.long)
        train_idx, val_idx = split_indices(images.shape[0], self.val_fraction, self.seed)
        self.train_dataset = ImageDataset(images[train_idx], labels[train_idx])
        self.val_dataset = ImageDataset(images[val_idx], labels[val_idx])

    def real_images(self, split: str = "train", n: Optional[int] = None) -> torch.Tensor:
        """The first n images (all when None) of `split`, float32 in [-1, 1]; e.g. for FID reference statistics."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        dataset = self.train_dataset if split == "train" else self.val_dataset
        if n is not None and not 0 <= n <= len(dataset):
            raise ValueError(f"asked for {n} real images but the {split} split has {len(dataset)}")
        return to_unit_range(dataset.images[:n])

    real_samples = real_images  # the name the toy data module uses too


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 1,797 8x8 handwritten digits (values 0..16, shipped with the package) scaled to [-1, 1]."""

    def __init__(self, batch_size: int = 128, val_fraction: float = 0.1, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size, val_fraction, seed, num_workers)
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return (1, 8, 8)

    def _load(self) -> LoadedImages:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images).to(torch.float32).unsqueeze(1) / 8.0 - 1.0
        return LoadedImages(images, torch.from_numpy(digits.target).to(torch.long))


class ImageFileDataModule(ImageDataModule):
    """The user's images: an .npz file (key 'images', optional 'labels') or a folder of PNG/JPEG files.

    A folder whose images sit in sub-folders gets one class per sub-folder (sorted by
    name, see `class_names`). `image_size` resizes to a square, `channels` (1 or 3)
    converts gray/colour; None keeps what the files hold.
    """

    def __init__(self, path: str, batch_size: int = 128, val_fraction: float = 0.1, seed: int = 0,
                 image_size: Optional[int] = None, channels: Optional[int] = None, num_workers: int = 0):
        super().__init__(batch_size, val_fraction, seed, num_workers)
        self.save_hyperparameters()
        self.path, self.image_size, self.channels = path, image_size, channels

    @property
    def class_names(self) -> Optional[list[str]]:
        """Sub-folder names in label order when labels come from folders, else None."""
        return self.data.class_names

    def _load(self) -> LoadedImages:
        return load_images(self.path, self.image_size, self.channels)
