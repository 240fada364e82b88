"""SamplerEvaluation with TextTask through train.py's run(): gen. perplexity and entropy logged and written together."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import train
from framework.evaluation import metric_key
from framework.experiments import experiment_for
from framework.config import load_config, to_dict
from framework.metrics.text import text_metrics
from framework.metrics.text_quality import TextQuality

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Tiny text training: 2 two-batch epochs, validation every epoch, the evaluation every one, and after fit."""
    tmp = tmp_path_factory.mktemp("textrun")
    (tmp / "c.txt").write_text("\n\n".join(f"Verse {i}: and the word was with them, and they went unto the city."
                                           for i in range(300)))
    cfg = load_config(ROOT / "configs" / "text_tiny.yaml", [
        f"out_dir={tmp / 'run'}", "data.source=files", f"+data.paths=[{tmp / 'c.txt'}]", "trainer.max_steps=4",
        "+trainer.limit_train_batches=2", f"evaluation.cache_dir={tmp / 'cache'}", "evaluation.every_n_val_epochs=1"])
    assert train.run(cfg) == 0
    return tmp / "run"


def logged(run_dir: Path) -> list[dict]:
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get(metric_key("fhs", 16, "gen_ppl"))]


def test_logs_both_metrics_and_tables_hold_them(run_dir):
    rows = logged(run_dir)
    assert [int(r["step"]) for r in rows] == [1, 3]  # the validations ending steps 2 and 4
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == ["final", "step0000002", "step0000004"]
    for tag, row in zip(["step0000002", "step0000004"], rows):
        out = run_dir / "eval" / tag
        table = json.loads((out / "table.json").read_text())
        assert [(r["sampler"], r["nfe"]) for r in table["rows"]] == [("fhs", 16), ("mdlm_tstep", 4), ("mdlm_tstep", 8),
                                                                     ("real_data", 0)]
        for r in table["rows"][:-1]:
            for metric in ("gen_ppl", "entropy"):
                assert float(row[metric_key(r["sampler"], r["nfe"], metric)]) == pytest.approx(r[metric], rel=1e-6)
            assert r["gen_ppl"] > 1 and 0 < r["entropy"] <= torch.log(torch.tensor(16.0)).item()
        real = table["rows"][-1]
        assert float(row["val/real_data/gen_ppl"]) == pytest.approx(real["gen_ppl"], rel=1e-6)
        assert (out / "table.md").is_file() and (out / "quality_vs_nfe.png").is_file()
        texts = (out / "grids" / "mdlm_tstep.md").read_text()
        assert texts.count("## nfe") == 2 and "4. " not in texts and "3. " in texts  # grid_size 4: items 0..3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [(r["sampler"], r["nfe"]) for r in summary["evaluation"]] == [("fhs", 16), ("mdlm_tstep", 4), ("mdlm_tstep", 8),
                                                                         ("real_data", 0)]


class UnigramLM:
    """A fixed LM for the metric test: NLL of a sequence = sum of -log p(token) under a fixed distribution."""

    def __init__(self, vocab: int):
        self.logp = torch.log_softmax(torch.linspace(-1, 1, vocab, dtype=torch.float64), 0)

    def sequence_nll(self, tokens: torch.Tensor) -> torch.Tensor:
        return -self.logp[tokens].sum(1)


def test_metric_ignores_update_order_and_sharding():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (37, 12), generator=g)
    lm = UnigramLM(50)
    ordered = TextQuality(lm, batch_size=5)
    ordered.update(tokens, range(37))
    expected = ordered.compute()
    assert expected == text_metrics(lm, tokens, 5)
    perm = torch.randperm(37, generator=g)
    shuffled = TextQuality(lm, batch_size=5)
    for part in perm.split(8):
        shuffled.update(tokens[part], part)
    assert shuffled.compute() == expected  # bit-identical, not just close
    shuffled.reset()
    shuffled.update(tokens[:3], [0, 1, 1])
    with pytest.raises(ValueError, match="exactly once"):
        shuffled.compute()


@pytest.mark.parametrize("change, message", [
    ({"samplers": [{"name": "fhs"}], "nfe": [4]}, "nfe=4"),
    ({"samplers": [{"name": "mdlm_tstep", "steps": 8}]}, "steps=8"),
    ({"samplers": [{"name": "ddim"}]}, "'ddim' is a continuous sampler, but a masked sampler is needed"),
    ({"metrics": {"kid_subsets": 2}}, "evaluation.metrics"),
    ({"features": {"epochs": 2}}, "evaluation.features"),
])
def test_bad_text_settings_name_the_setting(change, message):
    config = to_dict(load_config(ROOT / "configs" / "text_tiny.yaml", []))
    config["evaluation"].update(change)
    with pytest.raises(ValueError, match=message):
        experiment_for(config).callbacks(ROOT / "unused")
