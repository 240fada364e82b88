"""The sampler evaluation itself, without Lightning: every sampler at every NFE, sharded, scored, written.

`Evaluator.run` is called by the `SamplerEvaluation` callback during training (with the
trainer's rank, world size and all_gather) and directly after training or from sample.py
(one process). Sample i always comes from the generator seeded by (seed, i), rank r makes
the indices shard_indices(n, r, world) and the task's torchmetrics metric syncs across
ranks, so the samples and every number are the same on 1 or N processes and for any batch size.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..samplers.generate import shard_indices
from ..io import atomic_write_bytes
from .report import write_results
from .settings import EvaluationSettings

Gather = Callable[[torch.Tensor], torch.Tensor]
#: the table row (and logged name) of the held-out real samples
REAL_DATA = "real_data"
Log = Callable[[str, float], None]


def metric_key(label: str, nfe: int, metric: str, prefix: str = "val") -> str:
    """The logged name of one number: val/<sampler>/nfe<k>/<metric>."""
    return f"{prefix}/{label}/nfe{nfe}/{metric}"


def metric_values(values: dict, names: Sequence[str]) -> dict:
    """The row's metric columns as floats; None where the metric does not apply (e.g. ref_err of real data)."""
    return {k: None if values[k] is None else float(values[k]) for k in names}


def gather_ordered(local: torch.Tensor, indices: Sequence[int], total: int, world_size: int = 1,
                   all_gather: Optional[Gather] = None) -> torch.Tensor:
    """All ranks' samples as one [total, ...] tensor in global index order (shards may differ in length by one)."""
    indices = torch.as_tensor(list(indices), dtype=torch.long)
    out = local.new_zeros((total, *local.shape[1:]))
    if world_size == 1 or all_gather is None:
        out[indices] = local
        return out
    rows = math.ceil(total / world_size)
    padded = local.new_zeros((rows, *local.shape[1:]))
    padded[: local.shape[0]] = local
    padded_idx = torch.full((rows,), -1, dtype=torch.long)
    padded_idx[: indices.numel()] = indices
    samples = all_gather(padded).reshape(-1, *local.shape[1:]).cpu()
    where = all_gather(padded_idx.to(local.device)).reshape(-1).cpu()
    keep = where >= 0
    out[where[keep]] = samples[keep]
    return out


def fill_last_batch(indices: Sequence[int], total: int, batch_size: int) -> list[int]:
    """`indices` followed by extra indices total, total+1, ... up to a multiple of batch_size.

    Tasks generate the padded list and drop the extra samples, so every generator call sees the same
    batch shape and a sample's value does not depend on which rank or batch produced it.
    """
    indices = list(indices)
    return indices + [total + j for j in range((-len(indices)) % batch_size)]


def _save_samples(samples: torch.Tensor, path: Path) -> None:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, samples=samples.numpy())
    atomic_write_bytes(path, buf.getvalue())


class Evaluator:
    """Runs the configured (sampler, NFE) grid through a task (generation + metric + grids) and writes the results."""

    def __init__(self, settings: EvaluationSettings, task, out_dir: str | Path):
        self.settings, self.task = settings, task
        self.out_dir = Path(out_dir) / settings.out_subdir
        self._real_row: Optional[dict] = None  # the held-out data do not change between evaluations

    def run(self, module, tag: str, rank: int = 0, world_size: int = 1, all_gather: Optional[Gather] = None,
            log: Optional[Log] = None, prefix: str = "val") -> list[dict]:
        """Evaluate with the module's EMA weights; rank 0 writes eval/<tag>/ (table, plot, grids). Returns the rows."""
        if self.task.metric is None:
            raise RuntimeError("call task.prepare(datamodule) before Evaluator.run")
        n = self.settings.num_samples
        if world_size > n:
            raise ValueError(f"evaluation.num_samples={n} must be at least the number of processes ({world_size})")
        start, rows = time.perf_counter(), []
        indices = shard_indices(n, rank, world_size)
        out = self.out_dir / tag
        ema = getattr(module, "ema_weights", None)
        with ema() if ema is not None else nullcontext():
            self.task.start(module, indices)
            for entry in self.settings.entries:
                grids = {}
                for nfe in entry.nfe:
                    row, full = self._one(module, entry, nfe, indices, world_size, all_gather)
                    rows.append(row)
                    grids[nfe] = full
                    for metric in self.task.metric_names:
                        if log is not None and row[metric] is not None:
                            log(metric_key(entry.label, nfe, metric, prefix), row[metric])
                    if rank == 0 and self.settings.save_samples:
                        _save_samples(full, out / "samples" / f"{entry.label}_nfe{nfe}.npz")
                if rank == 0 and self.settings.grid_size:
                    self.task.write_grid(grids, out / "grids" / f"{entry.label}.png")
        if self._real_row is None:
            self._real_row = self._real_data_row(rank, world_size)
        real = self._real_row
        if real is not None:
            rows.append(dict(real))
            for metric in self.task.metric_names:
                if log is not None and real[metric] is not None:
                    log(f"{prefix}/{REAL_DATA}/{metric}", real[metric])
        if rank == 0:
            info = {"tag": tag, "num_samples": n, "seed": self.settings.seed, "world_size": world_size,
                    "eval_seconds": round(time.perf_counter() - start, 2), **self.task.info}
            write_results(rows, info, out, self.task.plot_metrics)
        return rows

    def _one(self, module, entry, nfe: int, indices: list[int], world_size: int, all_gather) -> tuple[dict, torch.Tensor]:
        """Generate this rank's shard with one sampler at one NFE, score the whole set, gather the samples."""
        samples, stats = self.task.generate(module, entry.sampler, nfe, indices)
        values = self.task.score(samples, indices, entry.sampler)
        full = gather_ordered(samples, indices, self.settings.num_samples, world_size, all_gather)
        row = {"sampler": entry.label, "nfe": nfe, "num_samples": self.settings.num_samples,
               **metric_values(values, self.task.metric_names), "seconds_per_sample": stats["seconds"] / max(1, len(indices))}
        return row, full

    def _real_data_row(self, rank: int, world_size: int) -> Optional[dict]:
        """The held-out real samples through the same metrics: the floor the samplers approach (None if the task has none)."""
        real = self.task.held_out()
        if real is None:
            return None
        indices = shard_indices(len(real), rank, world_size)
        values = self.task.score(real[indices], indices, None)
        return {"sampler": REAL_DATA, "nfe": 0, "num_samples": len(real),
                **metric_values(values, self.task.metric_names), "seconds_per_sample": 0.0}
