"""The config schema (framework/schema.py) and its loader (framework/config.py).

Every key of every shipped config, misspelt in a copied file or in an override, is refused by
train.py before anything is built; wrong types name the expected type; the shipped configs keep
their meaning; and each name-selected dataclass has exactly the arguments of the constructor it
feeds (and the evaluation sections the keys and defaults of the code that reads them), so schema
and code cannot drift apart.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import train
from framework import schema as S
from framework.config import apply_overrides, load_config, to_dict, trainer_keys, validate_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
IDS = [p.stem for p in CONFIGS]


@pytest.fixture
def no_run(monkeypatch):
    """train.main with run() replaced: a config that passes validation fails the test instead of training."""

    def run(cfg):
        raise AssertionError("validation passed and train.run was called: nothing may be built for a bad config")

    monkeypatch.setattr(train, "run", run)


def main(capsys, *argv) -> tuple[int, str]:
    code = train.main([str(a) for a in argv])
    return code, capsys.readouterr().err


# --- (1) every key of every shipped config, misspelt --------------------------------------------
def key_paths(node, prefix=()):
    """Every mapping key, recursively (lists, e.g. the sampler entries, are leaves)."""
    for key, value in node.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from key_paths(value, prefix + (key,))


def allowed_at(full: dict, parent: tuple) -> set:
    if parent == ("trainer",):
        return set(trainer_keys())
    node = full
    for part in parent:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return set(node) if isinstance(node, dict) else set()


def misspelt(key: str, allowed: set) -> str:
    """Drop the second-to-last letter (ema_decay -> ema_decy; lr -> r), or add an 'x' if that is a real key."""
    wrong = key[:-2] + key[-1] if len(key) >= 2 else key + "x"
    return wrong if wrong and wrong not in allowed else key + "x"


def renamed(node: dict, path: tuple, new: str) -> dict:
    """A copy of `node` with the key at `path` renamed (order kept)."""
    head, rest = path[0], path[1:]
    return {(new if k == head and not rest else k): (renamed(v, rest, new) if k == head and rest else v)
            for k, v in node.items()}


def value_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def cases(config: Path):
    raw = OmegaConf.to_container(OmegaConf.load(config))
    full = to_dict(load_config(config))
    for path in key_paths(raw):
        wrong = misspelt(path[-1], allowed_at(full, path[:-1]))
        yield path, wrong, ".".join(path[:-1] + (wrong,))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_every_misspelt_key_in_a_file_is_refused_before_anything_is_built(config, tmp_path, capsys, no_run):
    raw = OmegaConf.to_container(OmegaConf.load(config))
    checked = 0
    for path, wrong, dotted in cases(config):
        copy = tmp_path / f"{checked}.yaml"
        copy.write_text(yaml.safe_dump(renamed(raw, path, wrong), sort_keys=False))
        code, err = main(capsys, copy)
        assert code == 2 and err.startswith("error: "), (dotted, err)
        assert dotted in err and str(copy) in err, (dotted, err)
        checked += 1
    assert checked >= 30


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_every_misspelt_key_in_an_override_is_refused_before_anything_is_built(config, capsys, no_run):
    raw = OmegaConf.to_container(OmegaConf.load(config))
    checked = 0
    for path, wrong, dotted in cases(config):
        value = raw
        for part in path:
            value = value[part]
        plus = "+" if checked % 2 else ""  # `+key=value` is checked the same way: every other key uses it
        override = f"{plus}{dotted}={value_text(value)}"
        code, err = main(capsys, config, override)
        assert code == 2 and err.startswith("error: "), (override, err)
        assert dotted in err and f"override {override!r}" in err, (override, err)
        checked += 1
    assert checked >= 30


# --- (2) wrong types ----------------------------------------------------------------------------
@pytest.mark.parametrize("config, override, key, expected", [
    ("tiny", "seed=abc", "seed", "must be int"),
    ("tiny", "evaluation.after_fit=maybe", "evaluation.after_fit", "must be bool"),
    ("tiny", "optimizer.lr=abc", "optimizer.lr", "must be float"),
    ("tiny", "optimizer.warmup_steps=2.5", "optimizer.warmup_steps", "must be int"),
    ("tiny", "sampling.nfe=[3,x]", "sampling.nfe[1]", "must be int"),
    ("tiny", "evaluation.nfe=5", "evaluation.nfe", "must be a list of int"),
    ("tiny", "model.channel_mults=wide", "model.channel_mults", "must be a list of int"),
    ("tiny", "data=5", "data", "must be a mapping"),
    ("tiny", "diffusion.schedule=cosine", "diffusion.schedule", "must be a mapping"),
    ("tiny", "sampling.samplers=[ddim]", "sampling.samplers[0]", "must be a mapping"),
    ("tiny", "resume=3", "resume", "must be bool (true or false) or str"),
    ("tiny", "evaluation.reference.num_samples=all", "evaluation.reference.num_samples", "must be int or null"),
    ("tiny", "diffusion.prediction=noise", "diffusion.prediction", "must be one of eps, x0, v"),
    ("text_tiny", "data.seq_len=long", "data.seq_len", "must be int"),
    ("text_tiny", "diffusion.stratified=perhaps", "diffusion.stratified", "must be bool"),
    ("text_tiny", "evaluation.lm.lr=fast", "evaluation.lm.lr", "must be float"),
    ("text_tiny", "diffusion.loss=cout", "diffusion.loss", "must be one of time, count"),
    ("text_tiny", "evaluation.evaluator=gpt2", "evaluation.evaluator", "must be one of project, hf:<...>"),
])
def test_wrong_types_name_the_key_and_the_expected_type(config, override, key, expected, capsys, no_run):
    code, err = main(capsys, ROOT / "configs" / f"{config}.yaml", override)
    assert code == 2 and f"config key '{key}'" in err and expected in err, err


def test_a_wrong_type_in_a_file_names_the_file(tmp_path, capsys, no_run):
    path = tmp_path / "bad.yaml"
    path.write_text((ROOT / "configs" / "tiny.yaml").read_text().replace("seed: 0", "seed: zero"))
    code, err = main(capsys, path)
    assert code == 2 and f"config key 'seed' in {path} must be int, got 'zero'" in err, err


def test_values_the_schema_leaves_to_others_pass():
    cfg = to_dict(load_config(ROOT / "configs" / "tiny.yaml", [
        "trainer.max_steps=1.5", "+trainer.precision=bf16-mixed", "resume=runs/x/last.ckpt", "resume=last",
        "evaluation.samplers=[{name: deis, order: 9, nfe: [4], label: x}]", "evaluation.reference.held_out_split=null"]))
    assert cfg["trainer"]["max_steps"] == 1.5 and cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["resume"] == "last" and cfg["evaluation"]["reference"]["held_out_split"] is None
    assert cfg["evaluation"]["samplers"] == [{"name": "deis", "order": 9, "nfe": [4], "label": "x"}]
    text = to_dict(load_config(ROOT / "configs" / "text_tiny.yaml", ["evaluation.evaluator=hf:/models/gpt2"]))
    assert text["evaluation"]["evaluator"] == "hf:/models/gpt2"


# --- (3) the shipped configs keep their meaning -------------------------------------------------
def leaves(node, prefix=()):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_shipped_configs_load_with_every_value_they_set(config):
    raw = OmegaConf.to_container(OmegaConf.load(config))
    full = to_dict(load_config(config))
    for path, value in leaves(raw):
        got = full
        for part in path:
            got = got[part]
        if value == {}:
            assert isinstance(got, dict), path
            continue
        assert got == value and (type(got) is type(value) or (type(value), type(got)) == (int, float)), (path, value, got)
    assert validate_config(full) == load_config(config)  # a loaded config validates to itself
    assert to_dict(apply_overrides(full, ["seed=5"]))["seed"] == 5


def test_defaults_are_those_the_code_used_before():
    """Defaults that no constructor carries: they were literals in the code that reads the config."""
    score = to_dict(validate_config({"kind": "score"}))
    masked = to_dict(validate_config({"kind": "masked"}))
    assert score["seed"] == masked["seed"] == 0 and score["out_dir"] == "runs/default" and score["resume"] is False
    assert score["data"]["name"] == "digits" and score["model"]["name"] == "unet"
    assert score["diffusion"] == {"schedule": {"kind": "discrete_linear", "beta_start": 1e-4, "beta_end": 0.02, "num_steps": 1000},
                                  "prediction": "eps", "label_dropout": 0.1, "ema_decay": 0.999}
    assert masked["diffusion"] == {"schedule": {"kind": "linear"}, "loss": "count", "stratified": True, "ema_decay": 0.999}
    assert score["sampling"] == {"num_samples": 64, "batch_size": 256, "seed": 0, "nfe": [10], "samplers": [{"name": "ddim"}]}
    assert masked["sampling"] == {"num_samples": 16, "batch_size": 16, "seed": 0, "samplers": [{"name": "fhs"}]}
    assert score["trainer"] == masked["trainer"] == {"enable_progress_bar": True, "log_every_n_steps": 10,
                                                     "checkpoint_every_n_steps": None}
    assert masked["model"]["name"] == "masked_transformer"


# --- (4) the schema is the constructors' signatures ---------------------------------------------
REQUIRED = "<required>"


def signature_defaults(factory, filled_by_code=()) -> dict:
    params = inspect.signature(factory).parameters
    return {k: (REQUIRED if p.default is inspect.Parameter.empty else _plain(p.default)) for k, p in params.items()
            if k not in ("self", *filled_by_code) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def schema_defaults(cls, leave_out=()) -> dict:
    out = {}
    for f in fields(cls):
        if f.name in leave_out:
            continue
        value = f.default_factory() if f.default_factory is not NO_DEFAULT else f.default
        out[f.name] = REQUIRED if value == "???" else _plain(value)
    return out


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    return value


def constructors():
    from datamodules.images import DigitsDataModule, ImageFileDataModule
    from datamodules.text import TextDataModule
    from datamodules.toy import GaussianMixtureDataModule
    from framework.diffusion.masking import CosineMasking, LinearMasking, PolynomialMasking
    from framework.diffusion.schedules import CosineVPSchedule, DiscreteVPSchedule, LinearVPSchedule
    from framework.modules.optim import build_optimizer
    from models.mlp import MLPDenoiser
    from models.transformer import MaskedTransformer
    from models.unet import UNet

    # (schema dataclass, the constructor it feeds, the arguments the code fills, the schema's own keys)
    return [
        (S.DigitsData, DigitsDataModule, ("seed",), ("name",)),
        (S.ImageFilesData, ImageFileDataModule, ("seed",), ("name",)),
        (S.GaussianMixtureData, GaussianMixtureDataModule, ("seed",), ("name",)),
        (S.TextData, TextDataModule, ("tokenizer_json", "seed"), ()),
        (S.UNetModel, UNet, ("in_channels", "image_size", "num_classes"), ("name", "class_conditional")),
        (S.MLPModel, MLPDenoiser, ("dim", "num_classes"), ("name", "class_conditional")),
        (S.MaskedTransformerModel, MaskedTransformer, ("vocab_size", "max_len"), ("name",)),
        (S.DiscreteLinearSchedule, DiscreteVPSchedule.linear, (), ("kind",)),
        (S.LinearSchedule, LinearVPSchedule, (), ("kind",)),
        (S.CosineSchedule, CosineVPSchedule, (), ("kind",)),
        (S.LinearMaskingSchedule, LinearMasking, (), ("kind",)),
        (S.CosineMaskingSchedule, CosineMasking, (), ("kind",)),
        (S.PolynomialMaskingSchedule, PolynomialMasking, (), ("kind",)),
        (S.OptimizerSection, build_optimizer, ("params",), ()),
    ]


def test_each_selected_dataclass_has_exactly_its_constructors_arguments_and_defaults():
    for cls, factory, filled, own in constructors():
        assert schema_defaults(cls, own) == signature_defaults(factory, filled), cls.__name__


def test_the_selectors_name_what_the_code_builds():
    from framework.diffusion.masking import MASKING_SCHEDULE_KINDS
    from framework.diffusion.schedules import SCHEDULE_KINDS
    from framework.experiments.image import DATASETS
    from framework.modules.score import NETWORKS

    assert tuple(S.DATASETS) == DATASETS and tuple(S.SCORE_MODELS) == NETWORKS
    assert tuple(S.SCORE_SCHEDULES) == SCHEDULE_KINDS and tuple(S.MASKING_SCHEDULES) == MASKING_SCHEDULE_KINDS
    for kind, selected in S.SELECTED.items():
        for path, (key, classes) in selected.items():
            for name, cls in classes.items():
                assert getattr(cls(), key) == name, (kind, path, name)
    assert [f.name for f in fields(S.MaskedExperimentConfig)] == list(S.TOP_LEVEL)


def test_the_sections_have_the_keys_and_defaults_of_the_code_that_reads_them():
    from datamodules.images import SPLITS as IMAGE_SPLITS
    from datamodules.text import SOURCES, SPLITS
    from framework.diffusion.denoiser import PREDICTIONS
    from framework.diffusion.masked_loss import LOSS_FORMS
    from framework.metrics.features import DEFAULTS as FEATURES, FEATURE_KINDS
    from framework.metrics.text_evaluator import EVALUATOR_DEFAULTS

    assert schema_defaults(S.ImageFeatures) == FEATURES
    assert schema_defaults(S.EvaluatorLM) == EVALUATOR_DEFAULTS

    def choices(cls, name):
        return next(f.metadata["choices"] for f in fields(cls) if f.name == name)

    assert choices(S.ScoreDiffusionSection, "prediction") == PREDICTIONS
    assert choices(S.MaskedDiffusionSection, "loss") == LOSS_FORMS
    assert choices(S.TextData, "source") == SOURCES and choices(S.TextData, "split") == SPLITS
    assert choices(S.ImageFeatures, "kind") == FEATURE_KINDS
    assert choices(S.ImageReference, "split") == IMAGE_SPLITS
    assert choices(S.ImageReference, "held_out_split") == (*IMAGE_SPLITS, None)


def test_trainer_keys_are_lightnings_arguments_and_the_projects_own():
    import lightning

    params = set(inspect.signature(lightning.Trainer).parameters)
    assert set(trainer_keys()) == (params - set(S.TRAINER_RESERVED_KEYS)) | set(S.TRAINER_EXTRA_KEYS)
    assert set(S.TRAINER_DEFAULTS) <= set(trainer_keys())
    with pytest.raises(ValueError, match=r"unknown config key\(s\) trainer.logger"):
        load_config(ROOT / "configs" / "tiny.yaml", ["+trainer.logger=false"])


# --- (5) the reported holes ---------------------------------------------------------------------
@pytest.mark.parametrize("config, override, message", [
    ("tiny", "+diffusion.ema_decy=0.5", "unknown config key 'diffusion.ema_decy'"),
    ("tiny", "sampling.num_sample=3", "unknown config key 'sampling.num_sample'"),
    ("tiny", "optimizer.warmup_step=3", "unknown config key 'optimizer.warmup_step'"),
    ("text_tiny", "model.name=foo", "config key 'model.name' = 'foo' is not allowed for kind 'masked'; allowed: masked_transformer"),
    ("tiny", "model.name=masked_transformer", "allowed: unet, mlp"),
    ("tiny", "data.name=text", "allowed: digits, files, gmm"),
    ("tiny", "+data.path=x.npz", "unknown config key 'data.path'"),  # + adds nothing the schema lacks
    ("tiny", "+evaluation.lm.steps=3", "unknown config key 'evaluation.lm'"),  # a text-only key
    ("text_tiny", "sampling.nfe=[4]", "unknown config key 'sampling.nfe'"),  # nothing reads it for text
    ("text_tiny", "+diffusion.schedule.power=3", "(for diffusion.schedule.kind=linear): kind"),
    ("tiny", "+trainer.max_stepz=3", "unknown config key(s) trainer.max_stepz"),
    ("tiny", "data.name=files", "config key 'data.path' is required (for data.name=files)"),
    ("tiny", "kind=image", "config key 'kind' must be one of score, masked"),
])
def test_reported_holes_are_refused(config, override, message, capsys, no_run):
    code, err = main(capsys, ROOT / "configs" / f"{config}.yaml", override)
    assert code == 2 and message in err, err


def test_a_misspelt_key_in_a_file_no_longer_leaves_the_default(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text((ROOT / "configs" / "tiny.yaml").read_text().replace("ema_decay: 0.9", "ema_decy: 0.5"))
    with pytest.raises(ValueError, match=r"unknown config key 'diffusion.ema_decy' in .*typo.yaml; allowed at 'diffusion'"):
        load_config(path)


def test_an_empty_section_is_its_defaults_and_interpolations_survive(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: score\nout_dir: runs/${kind}-${seed}\nseed: 3\nevaluation:\n")
    cfg = load_config(path)
    assert OmegaConf.to_container(cfg)["out_dir"] == "runs/${kind}-${seed}" and to_dict(cfg)["out_dir"] == "runs/score-3"
    assert to_dict(cfg)["evaluation"] == to_dict(validate_config({"kind": "score"}))["evaluation"]
    path.write_text("seed: 3\n")
    with pytest.raises(ValueError, match="config key 'kind' is missing"):
        load_config(path)


def test_name_selected_sections_follow_their_override():
    cfg = to_dict(load_config(ROOT / "configs" / "tiny.yaml", ["data.name=files", "+data.path=x.npz", "data.channels=3",
                                                                "model.name=unet"]))
    assert cfg["data"] == {"name": "files", "path": "x.npz", "batch_size": 32, "val_fraction": 0.1, "image_size": None,
                           "channels": 3, "num_workers": 0}
    text = to_dict(load_config(ROOT / "configs" / "text_tiny.yaml", ["diffusion.schedule.kind=polynomial",
                                                                      "diffusion.schedule.power=3"]))
    assert text["diffusion"]["schedule"] == {"kind": "polynomial", "power": 3.0}
    gmm = to_dict(validate_config({"kind": "score", "data": {"name": "gmm", "dim": 3}, "model": {"name": "mlp", "depth": 2},
                                   "diffusion": {"schedule": {"kind": "cosine", "s": 0.01}}}))
    assert gmm["data"]["dim"] == 3 and gmm["model"] == {"name": "mlp", "hidden": 128, "depth": 2, "time_scale": 1000.0,
                                                        "class_conditional": False}
    assert gmm["diffusion"]["schedule"] == {"kind": "cosine", "s": 0.01, "t_min": 1e-3, "t_max": 0.9946}
    assert to_dict(load_config(ROOT / "configs" / "tiny.yaml", ["evaluation.ref_err.sampler={name: ddim}"]))[
        "evaluation"]["ref_err"]["sampler"] == {"name": "ddim"}  # a sampler config replaces the default one
