"""DC artefacts: ratios saved next to a checkpoint under (checkpoint, sampler and options, NFE, guidance scale,
grid), refused for any other key with the difference named; the CPR file is what `cpr=<path>` reads."""

import json

import pytest
import torch

from framework.diffusion import build_schedule
from framework.oracles import GaussianMixture
from framework.samplers import build_sampler
from framework.tuning.cascade_regression import CascadeRegression
from framework.tuning.dc_artifacts import (artifact_paths, calibrated_sampler, cpr_key, is_calibrated_entry, load_cpr,
                                           load_ratios, ratio_key, resolve_calibrated, save_cpr, save_ratios)
from framework.tuning.dc_search import search_dc_ratios
from framework.tuning.reference import ReferenceSolver

SCHEDULE = build_schedule("discrete_linear")
MODEL = GaussianMixture.random(components=3, dim=2, seed=1).eps_model(SCHEDULE)
X_T = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_paths_sit_next_to_the_checkpoint(tmp_path):
    ratios, cpr = artifact_paths(tmp_path / "checkpoints" / "last.ckpt")
    assert ratios == tmp_path / "checkpoints" / "dc_ratios.json" and cpr == tmp_path / "checkpoints" / "dc_cpr.json"


def test_saved_ratios_load_only_for_their_key(tmp_path):
    path = tmp_path / "dc_ratios.json"
    sampler = build_sampler("dc_solver")
    ratios = search_dc_ratios(MODEL, SCHEDULE, sampler, 5, X_T, reference=ReferenceSolver({"name": "ddim"}, 200, None),
                              iterations=5)
    key = ratio_key("hash-a", sampler, 5)
    save_ratios(path, key, ratios, search={"noises": 10})
    save_ratios(path, key, ratios, search={"noises": 10})  # the same key is replaced, not added
    assert len(json.loads(path.read_text())["entries"]) == 1
    assert load_ratios(path, key) == ratios
    cases = {
        "checkpoint: expected 'hash-b', found 'hash-a'": ratio_key("hash-b", sampler, 5),
        "nfe: expected 6, found 5": ratio_key("hash-a", sampler, 6),
        "guidance_scale: expected 7.5, found 1.0": ratio_key("hash-a", sampler, 5, 7.5),
        "grid.grid: expected 'logsnr', found 'time_uniform'": ratio_key("hash-a", build_sampler("dc_solver", grid="logsnr"), 5),
        "sampler.variant: expected 'bh2', found 'bh1'": ratio_key("hash-a", build_sampler("dc_solver", variant="bh2"), 5),
    }
    for message, other in cases.items():
        with pytest.raises(ValueError, match="closest entry differs in " + message):
            load_ratios(path, other)
    with pytest.raises(ValueError, match="no DC ratios"):
        load_ratios(tmp_path / "absent.json", key)


def test_calibrated_entries_resolve_to_the_saved_ratios(tmp_path):
    path = tmp_path / "dc_ratios.json"
    sampler = build_sampler("dc_solver")
    saved = {5: [1.0, 1.0, 1.1, 0.9, 1.2], 6: [1.0, 1.0, 1.05, 1.0, 0.95, 1.1]}
    for nfe, ratios in saved.items():
        save_ratios(path, ratio_key("h", sampler, nfe), ratios)
    entry = {"name": "dc_solver", "ratios": "calibrated", "label": "dc", "nfe": [5, 6]}
    assert is_calibrated_entry(entry) and not is_calibrated_entry({"name": "dc_solver"})
    resolved = resolve_calibrated(entry, [5, 6], path, "h")
    assert resolved["ratios"] == saved and resolved["label"] == "dc"
    built = calibrated_sampler(entry, [5, 6], path, "h")
    for nfe, ratios in saved.items():
        assert torch.equal(built.sample(MODEL, X_T, nfe, SCHEDULE),
                           build_sampler("dc_solver", ratios=ratios).sample(MODEL, X_T, nfe, SCHEDULE))
    with pytest.raises(ValueError, match="checkpoint: expected 'other'"):
        resolve_calibrated(entry, [5], path, "other")
    with pytest.raises(ValueError, match="ratios='calibrated' stands for the ratios a DC calibration saved"):
        build_sampler("dc_solver", ratios="calibrated").sample(MODEL, X_T, 5, SCHEDULE)


def test_cpr_artefact_is_key_checked_and_read_by_the_sampler(tmp_path):
    sampler = build_sampler("dc_solver")
    records = [(5, 1.0, [1, 1, 1.1, 0.9, 1.2]), (8, 1.0, [1, 1, 1.1, 1.0, 1.0, 0.95, 0.9, 1.3]),
               (10, 1.0, [1, 1, 1.0, 1.0, 1.0, 1.0, 0.95, 0.95, 0.9, 1.3])]
    cascade = CascadeRegression().fit(records)
    path = save_cpr(tmp_path / "dc_cpr.json", cascade, cpr_key("h", sampler))
    assert load_cpr(path, cpr_key("h", sampler)).predict(6) == cascade.predict(6)
    with pytest.raises(ValueError, match="fitted for another configuration: checkpoint: expected 'x', found 'h'"):
        load_cpr(path, cpr_key("x", sampler))
    via_cpr = build_sampler("dc_solver", cpr=str(path)).sample(MODEL, X_T, 6, SCHEDULE)
    assert torch.equal(via_cpr, build_sampler("dc_solver", ratios=cascade.predict(6)).sample(MODEL, X_T, 6, SCHEDULE))
