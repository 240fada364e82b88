"""calibrate_dc without Lightning, on the exact mixture wrapped as a module: one key-checked entry per NFE, the
cascade fitted on step counts (final_denoise adds an NFE, not a step), and the error after below before."""

from types import SimpleNamespace

import torch
from torch import nn

from framework.diffusion import build_schedule
from framework.oracles import GaussianMixture
from framework.tuning.cascade_regression import CascadeRegression
from framework.tuning.dc_artifacts import entries
from framework.tuning.dc_calibration import calibrate_dc

SCHEDULE = build_schedule("discrete_linear")
MIXTURE = GaussianMixture.random(components=4, dim=2, seed=1)


class OracleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("means", MIXTURE.means.clone())
        self.model = MIXTURE.eps_model(SCHEDULE)

    def forward(self, x, t):
        return self.model(x.double(), t).to(x.dtype)


def test_calibration_on_the_oracle(tmp_path):
    module = SimpleNamespace(net=OracleNet(), schedule=SCHEDULE, prediction="eps", data_shape=(2,), device="cpu",
                             conditional=False)
    section = {"samplers": [{"name": "dc_solver", "final_denoise": True}], "nfe": [5, 6, 9], "guidance_scales": [1.0],
               "num_noises": 10, "seed": 1, "iterations": 40, "lr": 0.1, "eval_noises": 200, "cpr_min_records": 3,
               "reference": {"sampler": {"name": "ddim"}, "nfe": 200}}
    ref_err = {"sampler": {"name": "dpmsolver++", "order": 3, "grid": "time_quadratic"}, "nfe": 200,
               "cache_dir": str(tmp_path / "cache")}
    rows = calibrate_dc(module, section, tmp_path, ref_err, eval_seed=0)
    assert [(r["nfe"], len(r["ratios"])) for r in rows] == [(5, 4), (6, 5), (9, 8)]
    assert all(r["ref_err_after"] < r["ref_err_before"] for r in rows), rows
    saved = entries(tmp_path / "dc_ratios.json")
    assert [e["key"]["nfe"] for e in saved] == [5, 6, 9] and all(e["key"]["sampler"]["final_denoise"] for e in saved)
    cascade = CascadeRegression.load(tmp_path / "dc_cpr_dc_solver_final_denoiseTrue.json")
    assert [r.nfe for r in cascade.records] == [4, 5, 8] and len(cascade.predict(6)) == 6
    assert (tmp_path / "dc_calibration.md").is_file()
    assert torch.isfinite(torch.tensor(cascade.coefficients)).all()
