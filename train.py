"""Train a diffusion model from a YAML config: `python train.py configs/digits.yaml [key=value ...]`.

Writes checkpoints, logs and (after training) samples and tables under the config's out_dir.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML experiment config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.max_steps=200 out_dir=runs/x")
    args = parser.parse_args(argv)
    try:
        from framework.config import load_config

        cfg = load_config(args.config, args.overrides)
        return run(cfg)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(cfg) -> int:
    import lightning as L

    from framework.config import to_dict
    from framework.experiments import experiment_for
    from framework.experiments.trainer import build_trainer, resume_path
    from framework.io import write_json

    start = time.time()
    out_dir = Path(cfg.get("out_dir", "runs/default"))
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    experiment = experiment_for(cfg)
    callbacks = experiment.callbacks(out_dir)  # validates the evaluation section before anything is built
    module, datamodule = experiment.build()
    trainer = build_trainer(cfg, out_dir, callbacks)
    if trainer.is_global_zero:
        write_json(out_dir / "config.json", to_dict(cfg))
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path(cfg, out_dir), weights_only=True)
    if trainer.is_global_zero:
        summary = experiment.after_fit(module, datamodule, out_dir) or {}
        summary["train_seconds_total"] = time.time() - start
        write_json(out_dir / "summary.json", summary)
        print(f"done in {time.time() - start:.0f}s; outputs in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
