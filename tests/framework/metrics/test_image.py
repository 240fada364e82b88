"""Image metrics: FID/KID/precision/recall against the digits, and the cached feature network."""

from __future__ import annotations

import pytest
import torch

from datamodules.images import DigitsDataModule
from framework.metrics import ImageQuality, feature_network, precision_recall
from framework.metrics.features import feature_settings


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def features(digits, tmp_path_factory):
    return feature_network(digits, {"cache_dir": str(tmp_path_factory.mktemp("features")), "epochs": 3})


@pytest.fixture(scope="module")
def quality(digits, features):
    return ImageQuality(features.extractor, digits.real_images("train", 600), kid_subsets=10, kid_subset_size=100)


def score(metric: ImageQuality, images: torch.Tensor) -> dict:
    metric.reset()
    metric.update(images, range(images.shape[0]))
    return metric.compute()


def test_fid_of_data_against_itself_is_zero_and_of_noise_is_large(digits, quality):
    same = score(quality, digits.real_images("train", 600))
    held_out = score(quality, digits.real_images("val"))
    noise = score(quality, torch.randn(600, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1))
    assert abs(same["fid"]) < 1e-3
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    assert abs(same["kid_mean"]) < 0.05
    assert 0 < held_out["fid"] < 0.2 * noise["fid"]
    assert noise["fid"] > 20 and noise["kid_mean"] > 1
    assert noise["precision"] < 0.2 and held_out["precision"] > 0.7


def test_scores_do_not_depend_on_how_the_samples_were_split(digits, quality):
    images = digits.real_images("val")
    whole = score(quality, images)
    quality.reset()
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(1))
    for part in order.chunk(3):  # shards in any order and any size, as ranks and batches deliver them
        quality.update(images[part], part)
    assert quality.compute() == whole


def test_every_index_must_be_seen_exactly_once(digits, quality):
    quality.reset()
    quality.update(digits.real_images("val", 10), [0, 1, 2, 3, 4, 5, 6, 7, 8, 8])
    with pytest.raises(ValueError, match="exactly once"):
        quality.compute()
    quality.reset()
    with pytest.raises(ValueError, match="one index per image"):
        quality.update(digits.real_images("val", 4), [0, 1])


def test_precision_recall_of_disjoint_clouds_is_zero():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g) + 100
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def test_feature_network_is_cached_with_its_hash_and_leaves_the_global_rng_alone(digits, features, tmp_path):
    assert features.path.is_file() and len(features.sha256) == 64
    assert features.info["classifier_val_accuracy"] > 0.5
    again = feature_network(digits, {"cache_dir": str(features.path.parent), "epochs": 3})
    assert again.path == features.path and again.sha256 == features.sha256  # loaded, not retrained
    state = torch.get_rng_state()
    fresh = feature_network(digits, {"cache_dir": str(tmp_path), "epochs": 1})
    assert torch.equal(state, torch.get_rng_state())
    assert fresh.path != features.path  # other settings, other file
    assert {"feature_network", "feature_sha256"} <= set(fresh.describe())


def test_feature_settings_reject_unknown_keys_and_kinds():
    with pytest.raises(ValueError, match="unknown evaluation.features key.*epoch.*allowed: kind"):
        feature_settings({"epoch": 3})
    with pytest.raises(ValueError, match="kind 'inception' is not allowed; allowed: classifier, random"):
        feature_settings({"kind": "inception"})
