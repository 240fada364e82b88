"""The evaluation's feature network: a small classifier trained here on the experiment's data, cached with its hash.

FID/KID are only comparable under the same feature extractor, so the extractor is a file:
trained once (seconds on a CPU), written atomically under a name derived from its settings
and the training data, and identified everywhere by the SHA-256 of that file. Training draws
from its own seeded RNG state (the global one is saved and restored), so whether the cache
existed never changes the diffusion run's random stream.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.nn import functional as F

from models.classifier import FeatureExtractor, SmallClassifier

from ..io import atomic_torch_save

FEATURE_KINDS = ("classifier", "random")
DEFAULTS = {"kind": "classifier", "widths": [16, 32, 64], "epochs": 20, "batch_size": 128, "lr": 2e-3, "seed": 0,
            "cache_dir": "runs/cache/features"}


@dataclass
class FeatureNetwork:
    """A loaded feature extractor with the file it came from and that file's SHA-256."""

    extractor: FeatureExtractor
    path: Path
    sha256: str
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """What every evaluation result records about its feature space."""
        return {"feature_network": str(self.path), "feature_sha256": self.sha256, **self.info}


def feature_settings(options: Optional[dict]) -> dict:
    """DEFAULTS updated by `options`; an unknown key or kind raises ValueError naming the allowed ones."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown evaluation.features key(s) {', '.join(unknown)}; allowed: {', '.join(DEFAULTS)}")
    settings = {**DEFAULTS, **options}
    if settings["kind"] not in FEATURE_KINDS:
        raise ValueError(f"evaluation.features.kind {settings['kind']!r} is not allowed; allowed: {', '.join(FEATURE_KINDS)}")
    return settings


def labelled_split(datamodule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (float in [-1, 1]) and labels of a split of an image datamodule (its `<split>_dataset`)."""
    datamodule.setup("fit")
    dataset = getattr(datamodule, f"{split}_dataset", None)
    if dataset is None or not hasattr(dataset, "labels"):
        raise ValueError(f"the data module {type(datamodule).__name__} has no labelled '{split}_dataset' to train the feature network on")
    images = dataset.all_images() if hasattr(dataset, "all_images") else torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images.float(), dataset.labels.long()


def cache_key(settings: dict, images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 over the training settings and the exact training data: a new key whenever either changes."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in settings.items() if k != "cache_dir"}, sort_keys=True).encode())
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_classifier(images: torch.Tensor, labels: torch.Tensor, settings: dict) -> SmallClassifier:
    """Plain Adam on cross-entropy; a few seconds for 8x8 digits. Uses, and restores, its own RNG state, and trains
    with gradients on whatever the caller's grad mode (an evaluation script may run under torch.no_grad)."""
    num_classes = int(labels.max()) + 1
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(int(settings["seed"]))
        net = SmallClassifier(images.shape[1], max(num_classes, 2), settings["widths"])
        if settings["kind"] == "random":
            return net.eval()
        opt = torch.optim.Adam(net.parameters(), lr=float(settings["lr"]))
        gen = torch.Generator().manual_seed(int(settings["seed"]))
        bs = int(settings["batch_size"])
        for _ in range(int(settings["epochs"])):
            order = torch.randperm(images.shape[0], generator=gen)
            for start in range(0, images.shape[0], bs):
                idx = order[start : start + bs]
                loss = F.cross_entropy(net(images[idx]), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: SmallClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((net(images).argmax(-1) == labels).float().mean()) if len(labels) else float("nan")


@torch.no_grad()
def standardised_extractor(net: SmallClassifier, images: torch.Tensor) -> FeatureExtractor:
    """The feature extractor with the per-dimension mean and std of the training images' features."""
    feats = net.features(images).double()
    return FeatureExtractor(net, feats.mean(0).float(), feats.std(0).clamp_min(1e-6).float()).eval()


def _save(path: Path, extractor: FeatureExtractor, settings: dict, info: dict) -> None:
    net = extractor.classifier
    payload = {"state_dict": extractor.state_dict(), "widths": list(settings["widths"]),
               "in_channels": net.body[0].in_channels, "num_classes": net.head.out_features, "info": info}
    atomic_torch_save(path, payload)


def load_feature_network(path: str | Path) -> FeatureNetwork:
    """Load a cached feature network; its SHA-256 is that of the exact bytes loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature network file not found: {path}")
    data = path.read_bytes()
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten; do not consume the global RNG
        extractor = FeatureExtractor(SmallClassifier(payload["in_channels"], payload["num_classes"], payload["widths"]))
    extractor.load_state_dict(payload["state_dict"])
    extractor.eval()
    extractor.requires_grad_(False)
    return FeatureNetwork(extractor, path, hashlib.sha256(data).hexdigest(), dict(payload["info"]))


def feature_network(datamodule, options: Optional[dict] = None, is_writer: bool = True,
                    barrier: Callable[[], None] = lambda: None) -> FeatureNetwork:
    """The feature network for `datamodule`'s data: trained and cached by the writer (rank 0) if absent, then loaded.

    In a multi-process run every rank calls this; only `is_writer` trains and writes, the
    others wait at `barrier` and load the same file, so all ranks share one extractor.
    """
    settings = feature_settings(options)
    images, labels = labelled_split(datamodule, "train")
    if settings["kind"] == "classifier" and getattr(datamodule, "num_classes", None) is None:
        raise ValueError("evaluation.features.kind=classifier needs labelled data; use evaluation.features.kind=random for unlabelled images")
    if images.ndim != 4:
        raise ValueError(f"the image feature network needs images [N, C, H, W]; this data has samples of shape {tuple(images.shape[1:])}")
    path = Path(settings["cache_dir"]) / f"{settings['kind']}-{cache_key(settings, images, labels)}.pt"
    if is_writer and not path.is_file():
        net = train_classifier(images, labels, settings)
        val_images, val_labels = labelled_split(datamodule, "val")
        info = {"feature_kind": settings["kind"], "feature_dim": net.num_features,
                "classifier_val_accuracy": round(accuracy(net, val_images, val_labels), 4)}
        _save(path, standardised_extractor(net, images), settings, info)
    barrier()
    return load_feature_network(path)
