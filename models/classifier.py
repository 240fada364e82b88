"""A small image classifier whose penultimate activations serve as the evaluation's feature space.

FID/KID need a feature network; Inception would mean a download and 299x299 inputs, so the
project trains this one on its own data in seconds (framework.metrics.features) and keeps
its weights, with their hash, in a cache file. No Lightning here: a plain nn.Module.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


class SmallClassifier(nn.Module):
    """One 3x3 conv + SiLU per width (stride 2 after the first), global average pooling, a linear head.

    `features(x)` returns the pooled activations ([B, num_features]); `forward` the class logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        widths = [int(w) for w in widths]
        if in_channels < 1 or num_classes < 2 or not widths or min(widths) < 1:
            raise ValueError(
                f"SmallClassifier needs in_channels >= 1, num_classes >= 2 and positive widths; "
                f"got in_channels={in_channels}, num_classes={num_classes}, widths={widths}"
            )
        layers, ch = [], in_channels
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(ch, width, 3, stride=1 if i == 0 else 2, padding=1), nn.SiLU()]
            ch = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch, num_classes)
        self.num_features = ch

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate activations, [B, num_features]."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureExtractor(nn.Module):
    """The classifier's features, standardised per dimension: what torchmetrics' `feature=` argument calls.

    Standardising (with the training set's mean and std, fixed at training time) keeps the
    features O(1), which KID's cubic polynomial kernel assumes. `num_features` is the
    attribute torchmetrics reads to size its states.
    """

    def __init__(self, classifier: SmallClassifier, mean: Optional[torch.Tensor] = None, std: Optional[torch.Tensor] = None):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features
        self.register_buffer("mean", torch.zeros(self.num_features) if mean is None else mean.detach().float().clone())
        self.register_buffer("std", torch.ones(self.num_features) if std is None else std.detach().float().clone())

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.classifier.features(images.float()) - self.mean) / self.std
