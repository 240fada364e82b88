"""Run the text SamplerEvaluation (TextTask) once through `trainer.validate` on N CPU processes (Lightning DDP, gloo).

usage: python text_eval_script.py OUT DEVICES BATCH_SIZE CORPUS EVALUATOR_CACHE
The text counterpart of eval_script.py, on configs/text_tiny.yaml with data from the text file
CORPUS. Runs as its own script because strategy="ddp" relaunches the command line as rank 1..N-1
(`run` is also imported by the tests for the one-process runs). The tiny model's weights are
perturbed by a seeded generator so that the samplers produce distinct, non-trivial texts.
Writes OUT/logged.json (the logged numbers) and, through the callback, OUT/eval/step0000000/
(the generated token sequences under samples/, the table, the decoded grids).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L

from validate_once import perturb, validate_once

ROOT = Path(__file__).resolve().parents[3]
# fhs always uses L = seq_len = 16 evaluations; mdlm_tstep: T = nfe; fhs_parallel: k = ceil(16 / nfe)
SAMPLERS = [{"name": "fhs", "nfe": [16]}, {"name": "mdlm_tstep"}, {"name": "fhs_parallel", "label": "fhs_par"}]
NFE = [4, 8]
NUM_SAMPLES = 37  # odd: the two ranks' shards differ in length, and the last batches are partial


def corpus_text() -> str:
    """A small, varied corpus (written by the test to CORPUS)."""
    words = "and the word was with them they went unto city light dark water land came saw said".split()
    return "\n\n".join(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(6 + i % 5)).capitalize() + "."
                       for i in range(300))


def evaluation_overrides(batch_size: int, cache: str) -> list[str]:
    return [f"evaluation.cache_dir={cache}", f"evaluation.samplers={json.dumps(SAMPLERS)}", f"evaluation.nfe={NFE}",
            f"evaluation.num_samples={NUM_SAMPLES}", f"evaluation.batch_size={batch_size}", "+evaluation.seed=7",
            "evaluation.every_n_val_epochs=1", "+evaluation.save_samples=true", "evaluation.grid_size=4"]


def run(out: str, devices: int, batch_size: int, corpus: str, cache: str) -> dict:
    """Evaluate the perturbed tiny text model; on rank 0 returns (and writes) {'world_size', 'logged'}."""
    sys.path.insert(0, str(ROOT))
    from framework.config import load_config
    from framework.experiments import experiment_for

    L.seed_everything(0, verbose=False)
    cfg = load_config(ROOT / "configs" / "text_tiny.yaml", [
        f"out_dir={out}", "data.source=files", f"+data.paths=[{corpus}]", *evaluation_overrides(batch_size, cache)])
    experiment = experiment_for(cfg)
    module, datamodule = experiment.build()
    perturb(module, 0.05)
    callbacks = experiment.callbacks(Path(out))  # [SamplerEvaluation(settings, TextTask(...), out)]
    assert len(callbacks) == 1
    return validate_once(module, datamodule, callbacks, out, devices)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    print(json.dumps({"ok": True}))
