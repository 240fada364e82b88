"""Gaussian-mixture data module: shapes, labels, determinism, and agreement with the exact oracle."""

from __future__ import annotations

import pytest
import torch

from datamodules import GaussianMixtureDataModule
from framework.oracles import GaussianMixture


def test_shapes_dtypes_and_labels():
    dm = GaussianMixtureDataModule(dim=3, components=5, n_train=500, n_val=100, batch_size=64)
    dm.setup()
    assert dm.data_shape == (3,) and dm.num_classes is None
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3) and x.dtype == torch.float32
    assert y.dtype == torch.long and 0 <= y.min() and y.max() < 5
    assert len(dm.train_dataset) == 500 and len(dm.val_dataset) == 100
    assert dm.real_samples("val").shape == (100, 3)


def test_mixture_is_the_seeded_oracle_and_data_is_deterministic():
    dm = GaussianMixtureDataModule(components=4, dim=2, seed=3, n_train=200, n_val=10)
    torch.testing.assert_close(dm.mixture.means, GaussianMixture.random(4, 2, 3).means)
    again = GaussianMixtureDataModule(components=4, dim=2, seed=3, n_train=200, n_val=10)
    torch.testing.assert_close(dm.real_samples("train"), again.real_samples("train"))


def test_samples_follow_the_mixture():
    dm = GaussianMixtureDataModule(dim=2, components=3, n_train=20000, n_val=0, seed=1)
    dm.setup()
    x, y = dm.train_dataset.tensors
    frequencies = torch.bincount(y, minlength=3).double() / len(y)
    torch.testing.assert_close(frequencies, dm.mixture.weights, atol=0.02, rtol=0)
    for k in range(3):  # each component's samples have its mean
        torch.testing.assert_close(x[y == k].double().mean(0), dm.mixture.means[k], atol=0.05, rtol=0)


def test_conditional_flag_and_bad_settings():
    assert GaussianMixtureDataModule(components=6, conditional=True).num_classes == 6
    with pytest.raises(ValueError, match="components"):
        GaussianMixtureDataModule(components=0)


def test_the_data_mixture_is_the_oracle_mixture():
    """The data module draws from the same mixture the oracle solves exactly: same parameters, same draws."""
    dm = GaussianMixtureDataModule(components=3, dim=2, seed=0)
    oracle = GaussianMixture.random(3, 2, 0)
    for name in ("weights", "means", "covs"):
        torch.testing.assert_close(getattr(dm.mixture, name), getattr(oracle, name))
    x, _ = dm.mixture.sample_with_components(50, torch.Generator().manual_seed(7))
    torch.testing.assert_close(x, oracle.sample(50, generator=torch.Generator().manual_seed(7)))
