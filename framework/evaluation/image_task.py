"""What the sampler evaluation needs to know about images: how to generate them from a ScoreDiffusion module, score them, show them.

Generation goes through framework.samplers.generate (per-sample seeds); scores through
framework.metrics.ImageQuality with a feature network trained on the experiment's own data.
A class-conditional model is evaluated on labels i % num_classes for sample i (balanced and
independent of the sharding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..samplers.generate import generate_samples
from ..io import save_image_grid
from ..metrics.features import feature_network
from ..metrics.image import IMAGE_METRICS, ImageQuality
from .evaluator import fill_last_batch
from .settings import EvaluationSettings

REFERENCE_KEYS = {"split": "train", "num_samples": None}
METRIC_KEYS = {"kid_subsets": 20, "kid_subset_size": 500, "pr_k": 3}


def _checked(section: dict, defaults: dict, where: str) -> dict:
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {where} key(s) {', '.join(unknown)}; allowed: {', '.join(defaults)}")
    return {**defaults, **section}


class ImageTask:
    """Image generation and FID/KID/precision/recall for `SamplerEvaluation` (ScoreDiffusion on image data)."""

    metric_names: Sequence[str] = IMAGE_METRICS
    plot_metrics: Sequence[str] = ("fid", "kid_mean")

    def __init__(self, settings: EvaluationSettings, distributed: bool = True):
        self.settings = settings
        self.reference = _checked(settings.reference, REFERENCE_KEYS, "evaluation.reference")
        self.metric_options = _checked(settings.metrics, METRIC_KEYS, "evaluation.metrics")
        self.distributed = distributed
        self.metric: Optional[ImageQuality] = None
        self.info: dict = {}

    def prepare(self, datamodule, is_writer: bool = True, barrier: Callable[[], None] = lambda: None) -> dict:
        """Load (or train once and cache) the feature network and build the metric on the reference images."""
        if self.metric is not None:
            return self.info
        if datamodule is None or not hasattr(datamodule, "real_images"):
            raise ValueError("the sampler evaluation needs the experiment's data module (trainer.fit(..., datamodule=...)) "
                             "with real_images(split, n) for the reference set")
        features = feature_network(datamodule, self.settings.features, is_writer, barrier)
        real = datamodule.real_images(self.reference["split"], self.reference["num_samples"])
        self.metric = ImageQuality(features.extractor, real, seed=self.settings.seed,
                                   sync_on_compute=self.distributed, **self.metric_options)
        self.info = {**features.describe(), "reference_split": self.reference["split"], **self.metric.describe()}
        return self.info

    def generate(self, module, sampler, nfe: int, indices: Sequence[int]) -> tuple[torch.Tensor, dict]:
        """Images for these global indices (use inside module.ema_weights()), on the CPU, in index order.

        Every sampler call gets exactly `batch_size` samples: the last batch is filled up with extra
        indices (n, n+1, ...) whose samples are dropped. Kernels may pick another algorithm for another
        batch shape, and vectorised code treats a tensor's tail differently, so equal shapes keep a
        sample's value independent of which rank and which batch it was generated in.
        """
        indices = list(indices)
        padded = fill_last_batch(indices, self.settings.num_samples, self.settings.batch_size)
        labels = None
        if module.conditional:
            num_classes = int(module.hparams.num_classes)
            labels = torch.tensor([i % num_classes for i in padded], dtype=torch.long)
        samples, stats = generate_samples(
            module.net, module.schedule, sampler, nfe, padded, self.settings.seed, module.data_shape,
            batch_size=self.settings.batch_size, device=module.device, prediction=module.prediction, labels=labels,
            guidance_scale=self.settings.guidance_scale, uncond_label=getattr(module.net, "null_label", None),
        )
        return samples[: len(indices)], stats

    def write_grid(self, samples_by_nfe: dict[int, torch.Tensor], path: Path) -> Path:
        """One PNG per sampler: a row of the first `grid_size` samples per NFE (same seeds, so columns match)."""
        n = self.settings.grid_size
        rows = [samples_by_nfe[k][:n] for k in sorted(samples_by_nfe)]
        return save_image_grid(torch.cat(rows), path, nrow=min(n, rows[0].shape[0]))
