"""Checkpoints are read with weights_only=True: one whose pickle would run code is refused without running it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sample
from framework.experiments import load_checkpoint, read_checkpoint

MARKER_NAME = "code_ran.txt"


class Payload:
    """Unpickling this calls Path.write_text: code runs if the loader executes arbitrary reductions."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "unpickling ran code"))


def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / MARKER_NAME
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {"kind": "score"}}, "payload": Payload(marker)}, path)
    return path, marker


def test_the_payload_would_run_with_an_unsafe_loader(tmp_path):
    """The negative control: plain pickle runs the payload, so the test below can fail."""
    path, marker = evil_checkpoint(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "unpickling ran code"


def test_loading_refuses_a_checkpoint_that_would_run_code(tmp_path, capsys):
    path, marker = evil_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint(path)
    assert sample.main(["--ckpt", str(path), "--sampler", "ddim", "--nfe", "5", "--out", str(tmp_path / "s")]) == 2
    assert "cannot be loaded safely" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "s").exists()


def test_a_checkpoint_without_a_config_is_refused(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="holds no experiment config"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")
