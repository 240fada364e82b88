"""Image quality of generated samples: FID and KID (torchmetrics, our own feature network) plus k-NN precision/recall.

`ImageQuality` is a torchmetrics Metric whose state is the generated images with their
global sample indices (concatenated across ranks by torchmetrics' sync). `compute` orders
them by index and scores the whole set in fixed-size chunks, so the numbers do not depend
on the number of processes or the generation batch size (k-diffusion#51/#52). The real
side (torchmetrics' FID/KID real states, the real features) is computed once at construction
and kept across `reset()`, which clears only the generated images. torchmetrics
has no precision/recall for generative models, so the k-NN version of Kynkaanniemi et al.
(2019) is computed here on the same features.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

IMAGE_METRICS = ("fid", "kid_mean", "kid_std", "precision", "recall")


def tensor_sha256(x: Tensor) -> str:
    """A short hash of a tensor's exact values (identifies a reference set in results)."""
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _chunks(x: Tensor, size: int):
    return (x[i : i + size] for i in range(0, x.shape[0], size))


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Tensor, chunk: int = 512) -> Tensor:
    """Features [N, D] in float64, extracted in fixed chunks (so they do not depend on how images were batched)."""
    return torch.cat([extractor(c).double() for c in _chunks(images, chunk)])


def knn_radii(features: Tensor, k: int) -> Tensor:
    """Distance from each point to its k-th nearest other point."""
    return torch.cdist(features, features).kthvalue(k + 1, dim=1).values


def knn_coverage(points: Tensor, centres: Tensor, radii: Tensor) -> float:
    """Fraction of `points` inside at least one ball (centre, radius)."""
    return float((torch.cdist(points, centres) <= radii[None, :]).any(dim=1).double().mean())


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al. 2019): fake in the real k-NN manifold, and vice versa."""
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} real and generated samples")
    real, fake = real.double(), fake.double()
    return knn_coverage(fake, real, knn_radii(real, k)), knn_coverage(real, fake, knn_radii(fake, k))


class ImageQuality(Metric):
    """FID / KID / precision / recall of generated images against fixed real images, for sharded generation.

    update(images, indices): images [B, C, H, W] with their global sample indices; clipped to [-1, 1].
    compute() -> dict of floats (IMAGE_METRICS); every index 0..n-1 must have been seen exactly once.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, extractor: nn.Module, real_images: Tensor, kid_subsets: int = 20, kid_subset_size: int = 500,
                 pr_k: int = 3, seed: int = 0, chunk: int = 512, **kwargs):
        super().__init__(**kwargs)
        if real_images.ndim != 4 or real_images.shape[0] < 2:
            raise ValueError(f"real_images must be [N >= 2, C, H, W], got shape {tuple(real_images.shape)}")
        self.real_images = real_images.detach().float().cpu()
        self.options = {"kid_subsets": int(kid_subsets), "kid_subset_size": int(kid_subset_size), "pr_k": int(pr_k),
                        "seed": int(seed), "chunk": int(chunk)}
        self.add_state("images", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.fid, self.kid = self._reference_metrics(extractor)
        self.real_features = extract_features(extractor, self.real_images, self.options["chunk"])

    def _reference_metrics(self, extractor: nn.Module) -> tuple[FrechetInceptionDistance, KernelInceptionDistance]:
        """torchmetrics' FID and KID over `extractor`, holding the real images' states (each rank feeds them all data)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            fid = FrechetInceptionDistance(feature=extractor, reset_real_features=False, sync_on_compute=False)
            kid = KernelInceptionDistance(feature=extractor, subsets=self.options["kid_subsets"], reset_real_features=False,
                                          subset_size=min(self.options["kid_subset_size"], self.real_images.shape[0]),
                                          sync_on_compute=False)
        with torch.no_grad():
            for c in _chunks(self.real_images, self.options["chunk"]):
                fid.update(c, real=True)
                kid.update(c, real=True)
        return fid, kid

    def update(self, images: Tensor, indices: Sequence[int] | Tensor) -> None:
        indices = torch.as_tensor(list(indices) if not isinstance(indices, Tensor) else indices, dtype=torch.long).flatten()
        if images.shape[0] != indices.shape[0] or images.shape[1:] != self.real_images.shape[1:]:
            raise ValueError(f"got images {tuple(images.shape)} with {indices.shape[0]} indices; "
                             f"expected one index per image of shape {tuple(self.real_images.shape[1:])}")
        self.images.append(images.detach().float().cpu().clamp(-1.0, 1.0))  # the data range, as a saved image would be
        self.indices.append(indices)

    def ordered_images(self) -> Tensor:
        """All images seen (after sync: on every rank), sorted by global index; checks the indices are 0..n-1."""
        images, indices = dim_zero_cat(self.images), dim_zero_cat(self.indices).long()
        order = torch.argsort(indices)
        if not torch.equal(indices[order], torch.arange(indices.numel())):
            raise ValueError("ImageQuality needs every sample index 0..n-1 exactly once (check the sharding of indices)")
        return images[order]

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        fake = self.ordered_images()
        self.fid.reset()
        self.kid.reset()
        for c in _chunks(fake, self.options["chunk"]):
            self.fid.update(c, real=False)
            self.kid.update(c, real=False)
        self.kid.subset_size = min(self.options["kid_subset_size"], self.real_images.shape[0], fake.shape[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options["seed"])  # KID draws its subsets from the global generator
            kid_mean, kid_std = self.kid.compute()
        fake_features = extract_features(self.fid.inception, fake, self.options["chunk"])
        precision, recall = precision_recall(self.real_features, fake_features, self.options["pr_k"])
        return {"fid": float(self.fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
                "precision": precision, "recall": recall}

    def describe(self) -> dict:
        """The reference set and options every result records next to its numbers."""
        return {"reference_count": int(self.real_images.shape[0]), "reference_sha256": tensor_sha256(self.real_images),
                **{f"metric_{k}": v for k, v in self.options.items()}}
