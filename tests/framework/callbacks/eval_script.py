"""Run SamplerEvaluation once through `trainer.validate` on N CPU processes (Lightning DDP, gloo); used by the tests.

usage: python eval_script.py OUT DEVICES BATCH_SIZE FEATURE_CACHE
Runs as its own script because strategy="ddp" relaunches the command line as rank 1..N-1
(`run` is also imported by the tests for the one-process runs). The tiny model's weights are
perturbed by a seeded generator so that the samplers produce distinct, non-trivial samples.
Writes OUT/logged.json (the logged numbers) and, through the callback, OUT/eval/step0000000/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L

from validate_once import perturb, validate_once

ROOT = Path(__file__).resolve().parents[3]
SAMPLERS = [{"name": "ddim"}, {"name": "ddpm"}, {"name": "dpmsolver++", "label": "dpmpp"}]


def evaluation_section(batch_size: int, cache: str) -> dict:
    return {"samplers": SAMPLERS, "nfe": [3, 5], "num_samples": 48, "batch_size": batch_size, "seed": 7,
            "every_n_val_epochs": 1, "save_samples": True, "grid_size": 8,
            "features": {"cache_dir": cache, "epochs": 2}, "metrics": {"kid_subsets": 5, "kid_subset_size": 20},
            "ref_err": {"cache_dir": cache}}


def run(out: str, devices: int, batch_size: int, cache: str) -> dict:
    """Evaluate the perturbed tiny model; on rank 0 returns (and writes) {'world_size', 'logged'}."""
    sys.path.insert(0, str(ROOT))
    from framework.callbacks import SamplerEvaluation
    from framework.config import load_config
    from framework.evaluation import ImageTask, evaluation_settings
    from framework.experiments import experiment_for

    L.seed_everything(0, verbose=False)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"out_dir={out}"])
    module, datamodule = experiment_for(cfg).build()
    perturb(module, 0.01)
    settings = evaluation_settings(evaluation_section(batch_size, cache))
    callback = SamplerEvaluation(settings, ImageTask(settings), out)
    return validate_once(module, datamodule, [callback], out, devices)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    print(json.dumps({"ok": True}))
