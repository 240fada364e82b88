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
from ..metrics.relative_error import RelativeError
from ..tuning.reference import Reference, ReferenceSolver, reference_solution
from .evaluator import fill_last_batch
from .settings import EvaluationSettings

class ImageTask:
    """Image generation, FID/KID/precision/recall and the reference-solution error for `SamplerEvaluation`
    (ScoreDiffusion on image data)."""

    def __init__(self, settings: EvaluationSettings, distributed: bool = True):
        self.settings = settings
        self.reference, self.metric_options, ref_err = settings.reference, settings.metrics, settings.ref_err
        self.solver = ReferenceSolver(dict(ref_err["sampler"]), int(ref_err["nfe"]), ref_err["cache_dir"]) \
            if ref_err["enabled"] else None
        self.ref_count = min(int(ref_err["num_samples"]), settings.num_samples)
        if self.solver is not None:
            self.solver.build()  # a bad reference solver fails here, before any evaluation
        self.distributed = distributed
        self.metric: Optional[ImageQuality] = None
        self.ref_metric = RelativeError(sync_on_compute=distributed)
        self.solution: Optional[Reference] = None
        self.real: Optional[torch.Tensor] = None
        self.info: dict = {}
        self.metric_names: Sequence[str] = (*IMAGE_METRICS, *(("ref_err",) if self.solver else ()))
        self.plot_metrics: Sequence[str] = ("fid", "kid_mean", *(("ref_err",) if self.solver else ()))

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
        held_out = self.reference["held_out_split"]
        self.real = None if held_out is None else datamodule.real_images(held_out, None)
        self.info = {**features.describe(), "reference_split": self.reference["split"], **self.metric.describe(),
                     "real_data_split": held_out}
        if self.solver is not None:
            self.info.update(ref_err_solver=self.solver.sampler, ref_err_nfe=self.solver.nfe, ref_err_num_samples=self.ref_count)
        return self.info

    def _labels(self, module, indices: Sequence[int], population: int = 1) -> Optional[torch.Tensor]:
        """Class labels (i // population) % num_classes for sample i of a class-conditional model (balanced,
        shard-independent; a sampler over populations of consecutive samples gets one label per population)."""
        if not module.conditional:
            return None
        num_classes = int(module.hparams.num_classes)
        return torch.tensor([(i // population) % num_classes for i in indices], dtype=torch.long)

    def start(self, module, indices: Sequence[int]) -> None:
        """Before the samplers run (EMA weights in place): the reference solution of this rank's samples
        among the first ref_err.num_samples (a prefix of the rank's ascending shard)."""
        self.solution = None
        if self.solver is None:
            return
        batch = min(self.settings.batch_size, self.ref_count)  # the same batch shape on every rank
        padded = fill_last_batch([i for i in indices if i < self.ref_count], self.ref_count, batch)
        self.solution = reference_solution(
            module.net, module.schedule, padded, self.settings.seed, module.data_shape, self.solver, module.prediction,
            batch, module.device, labels=self._labels(module, padded),
            guidance_scale=self.settings.guidance_scale, uncond_label=getattr(module.net, "null_label", None))

    def score(self, samples: torch.Tensor, indices: Sequence[int], sampler) -> dict:
        """The metrics of these samples (all ranks' shards together); `sampler` None for the real-data row.

        ref_err is None where it means nothing: real data, and stochastic samplers (they do not solve the ODE).
        """
        self.metric.update(samples, indices)
        values = self.metric.compute()
        self.metric.reset()
        if self.solver is not None:
            values["ref_err"] = None
            if sampler is not None and not sampler.stochastic:
                k = sum(1 for i in indices if i < self.ref_count)  # the samples with a reference: a prefix
                self.ref_metric.update(samples[:k], self.solution.target_for(sampler)[:k], list(indices)[:k])
                values["ref_err"] = float(self.ref_metric.compute())
                self.ref_metric.reset()
        return values

    def held_out(self) -> Optional[torch.Tensor]:
        """The held-out real images of the real-data row (None when evaluation.reference.held_out_split is null)."""
        return self.real

    def generate(self, module, sampler, nfe: int, indices: Sequence[int]) -> tuple[torch.Tensor, dict]:
        """Images for these global indices (use inside module.ema_weights()), on the CPU, in index order.

        Every sampler call gets exactly `batch_size` samples: the last batch is filled up with extra
        indices (n, n+1, ...) whose samples are dropped. Kernels may pick another algorithm for another
        batch shape, and vectorised code treats a tensor's tail differently, so equal shapes keep a
        sample's value independent of which rank and which batch it was generated in.
        """
        indices = list(indices)
        padded = fill_last_batch(indices, self.settings.num_samples, self.settings.batch_size)
        labels = self._labels(module, padded, sampler.population)
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
