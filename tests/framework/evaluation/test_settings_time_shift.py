"""An evaluation section lists the Time-Shift samplers like any other sampler."""

import pytest

from framework.evaluation.settings import evaluation_settings


def test_time_shift_samplers_in_an_evaluation_section():
    settings = evaluation_settings({"nfe": [5, 10], "samplers": [
        {"name": "ts_ddim"}, {"name": "ddim", "time_shift": True, "ts_window": 10}, {"name": "ts_fpndm", "nfe": [8, 12]}]})
    assert [e.label for e in settings.entries] == ["ts_ddim", "ddim_time_shiftTrue_ts_window10", "ts_fpndm"]
    assert settings.entries[2].nfe == [8, 12]  # F-PNDM spends 4, 8, 12, 13, ...: an entry may list its own NFE


def test_a_stray_time_shift_option_is_refused_in_an_evaluation_section():
    with pytest.raises(ValueError, match="ts_cutoff need time_shift=True"):
        evaluation_settings({"nfe": [5], "samplers": [{"name": "ddim", "ts_cutoff": 100}]})
