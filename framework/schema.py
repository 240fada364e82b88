"""The experiment config schema: one dataclass per section, the single source of every key and default.

framework.config.load_config merges a YAML file and its overrides into these dataclasses (OmegaConf
structured configs), so an unknown key, a misspelt one or a value of the wrong type is refused
before anything runs, and the returned config has every default filled in.

Sections whose keys depend on a name are chosen by that name (SELECTED):

    kind: score   data by data.name (digits | files | gmm), model by model.name (unet | mlp),
                  diffusion.schedule by diffusion.schedule.kind (discrete_linear | linear | cosine)
    kind: masked  data is TextData, model by model.name (masked_transformer),
                  diffusion.schedule by diffusion.schedule.kind (linear | cosine | polynomial)

Each chosen dataclass has exactly the keyword arguments of the constructor it feeds, minus the ones
the code fills itself (seed, data shape, vocabulary size, ...), plus its selector key
(tests/framework/test_config.py compares them with inspect.signature). `trainer` is a free mapping
whose keys framework.config checks against lightning.Trainer's signature (plus TRAINER_EXTRA_KEYS).
Sampler entries (`samplers:` lists) stay free-form mappings; the sampler registry checks them.

A field's `metadata={"choices": ...}` lists the values it allows (checked after the merge); a mapping
field with `metadata={"whole": True}` (a sampler config) replaces its default instead of being merged
into it (the sources still merge among themselves, so an override can change one of its keys).
This module imports no torch: loading a config stays cheap.
"""

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional, Union

from omegaconf import MISSING

KINDS = ("score", "masked")


def _list(*items):
    return field(default_factory=lambda: [dict(i) if isinstance(i, dict) else i for i in items])


def _choice(default, choices, prefixes=()):
    return field(default=default, metadata={"choices": tuple(choices), "prefixes": tuple(prefixes)})


# --- data ---------------------------------------------------------------------------------------
@dataclass
class ScoreDataSection:
    """Base of the score data sections; `name` picks the subclass (DATASETS)."""

    name: str = "digits"


@dataclass
class DigitsData(ScoreDataSection):
    """datamodules.images.DigitsDataModule (scikit-learn's 8x8 digits)."""

    name: str = "digits"
    batch_size: int = 128
    val_fraction: float = 0.1
    num_workers: int = 0


@dataclass
class ImageFilesData(ScoreDataSection):
    """datamodules.images.ImageFileDataModule (an .npz file or an image folder at `path`)."""

    name: str = "files"
    path: str = MISSING
    batch_size: int = 128
    val_fraction: float = 0.1
    image_size: Optional[int] = None
    channels: Optional[int] = None
    num_workers: int = 0


@dataclass
class GaussianMixtureData(ScoreDataSection):
    """datamodules.toy.GaussianMixtureDataModule (vectors from a random Gaussian mixture)."""

    name: str = "gmm"
    dim: int = 2
    components: int = 4
    n_train: int = 20000
    n_val: int = 2000
    batch_size: int = 256
    conditional: bool = False
    num_workers: int = 0


@dataclass
class TextData:
    """datamodules.text.TextDataModule (the tokenizer and the seed are filled in by the code)."""

    source: str = _choice("kjv", ("kjv", "files", "saved"))
    paths: Optional[List[str]] = None
    path: Optional[str] = None
    text_column: str = "text"
    vocab_size: int = 1024
    seq_len: int = 64
    batch_size: int = 64
    split: str = _choice("verse", ("verse", "book"))
    val_every: int = 20
    test_every: int = 20
    num_workers: int = 0


# --- model --------------------------------------------------------------------------------------
@dataclass
class ScoreModelSection:
    """Base of the score networks; `name` picks the subclass."""

    name: str = "unet"


@dataclass
class UNetModel(ScoreModelSection):
    """models.unet.UNet (in_channels, image_size, num_classes come from the data) + class_conditional."""

    name: str = "unet"
    base_channels: int = 32
    channel_mults: List[int] = _list(1, 2)
    num_res_blocks: int = 1
    attention_resolutions: List[int] = _list(4)
    dropout: float = 0.0
    time_scale: float = 1000.0
    num_heads: int = 1
    class_conditional: bool = False


@dataclass
class MLPModel(ScoreModelSection):
    """models.mlp.MLPDenoiser (dim and num_classes come from the data) + class_conditional."""

    name: str = "mlp"
    hidden: int = 128
    depth: int = 3
    time_scale: float = 1000.0
    class_conditional: bool = False


@dataclass
class MaskedModelSection:
    """Base of the masked-diffusion networks; `name` picks the subclass."""

    name: str = "masked_transformer"


@dataclass
class MaskedTransformerModel(MaskedModelSection):
    """models.transformer.MaskedTransformer (vocab_size and max_len come from the data)."""

    name: str = "masked_transformer"
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0


# --- diffusion ----------------------------------------------------------------------------------
@dataclass
class ScoreScheduleSection:
    """Base of the VP noise schedules (framework.diffusion.schedules); `kind` picks the subclass."""

    kind: str = "discrete_linear"


@dataclass
class DiscreteLinearSchedule(ScoreScheduleSection):
    """DiscreteVPSchedule.linear (DDPM's betas)."""

    kind: str = "discrete_linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_steps: int = 1000


@dataclass
class LinearSchedule(ScoreScheduleSection):
    """LinearVPSchedule (continuous VP)."""

    kind: str = "linear"
    beta_0: float = 0.1
    beta_1: float = 20.0
    t_min: float = 1e-3


@dataclass
class CosineSchedule(ScoreScheduleSection):
    """CosineVPSchedule."""

    kind: str = "cosine"
    s: float = 0.008
    t_min: float = 1e-3
    t_max: float = 0.9946


@dataclass
class MaskingScheduleSection:
    """Base of the masking schedules (framework.diffusion.masking); `kind` picks the subclass."""

    kind: str = "linear"


@dataclass
class LinearMaskingSchedule(MaskingScheduleSection):
    kind: str = "linear"


@dataclass
class CosineMaskingSchedule(MaskingScheduleSection):
    kind: str = "cosine"


@dataclass
class PolynomialMaskingSchedule(MaskingScheduleSection):
    kind: str = "polynomial"
    power: float = 2.0


@dataclass
class ScoreDiffusionSection:
    schedule: ScoreScheduleSection = field(default_factory=DiscreteLinearSchedule)
    prediction: str = _choice("eps", ("eps", "x0", "v"))
    label_dropout: float = 0.1
    ema_decay: float = 0.999


@dataclass
class MaskedDiffusionSection:
    schedule: MaskingScheduleSection = field(default_factory=LinearMaskingSchedule)
    loss: str = _choice("count", ("time", "count"))
    stratified: bool = True
    ema_decay: float = 0.999


# --- optimizer, trainer, sampling ---------------------------------------------------------------
@dataclass
class OptimizerSection:
    """framework's build_optimizer (AdamW with linear warm-up)."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: List[float] = _list(0.9, 0.999)
    warmup_steps: int = 0


# keys the project adds to lightning.Trainer's own arguments (read by the trainer assembly)
TRAINER_EXTRA_KEYS = ("checkpoint_every_n_steps",)
# lightning.Trainer arguments the trainer assembly sets itself; a config may not set them
TRAINER_RESERVED_KEYS = ("default_root_dir", "logger", "callbacks", "plugins")
TRAINER_DEFAULTS = {"enable_progress_bar": True, "log_every_n_steps": 10, "checkpoint_every_n_steps": None}


@dataclass
class ScoreSamplingSection:
    """The quick look after training: grids and timings of each sampler at each NFE."""

    num_samples: int = 64
    batch_size: int = 256
    seed: int = 0
    nfe: List[int] = _list(10)
    samplers: List[Dict[str, Any]] = _list({"name": "ddim"})


@dataclass
class MaskedSamplingSection:
    """The quick look after training: texts, gen. perplexity and entropy of each sampler (no NFE list:
    each sampler's entry sets its own steps)."""

    num_samples: int = 16
    batch_size: int = 16
    seed: int = 0
    samplers: List[Dict[str, Any]] = _list({"name": "fhs"})


# --- evaluation ---------------------------------------------------------------------------------
@dataclass
class ImageReference:
    """The real images the metrics compare against, and those of the table's real-data row."""

    split: str = _choice("train", ("train", "val"))
    num_samples: Optional[int] = None
    held_out_split: Optional[str] = _choice("val", ("train", "val", None))  # null: no real-data row


@dataclass
class ImageRefErr:
    """The reference-solution error: a many-step solution of the same model from the same noises, for the
    first `num_samples` samples (DPM-Solver++ 3M at 200 NFE on the quadratic grid: ~3e-4 relative error
    on the digits model, ~20x below the best sampler at NFE 20)."""

    enabled: bool = True
    sampler: Dict[str, Any] = field(default_factory=lambda: {"name": "dpmsolver++", "order": 3, "grid": "time_quadratic"},
                                    metadata={"whole": True})  # a sampler config: replaces the default, not merged into it
    nfe: int = 200
    num_samples: int = 200
    cache_dir: str = "runs/cache/reference"


@dataclass
class SolverSearch:
    """S3 search of a USF solver schedule (framework.tuning.s3_search) for the trained model, at each NFE in
    `nfe`: after training when `after_fit`, or on demand (sample.py --search-solver --nfe K). True evaluations
    are reference-solution errors (against `ref_err`'s solver, cached in its cache_dir) on the noises of
    samples 0..num_samples-1 seeded by (seed, i): by default not the evaluation's seed, so the evaluation
    measures the schedule on fresh noises. The schedule is saved next to the checkpoint
    (checkpoints/usf_s3_nfe<k>.json); list it like any sampler: {name: usf, schedule: <path>, nfe: [k]}."""

    nfe: List[int] = _list()
    after_fit: bool = False
    budget: int = 60
    num_samples: int = 64
    seed: int = 1
    candidates: int = 256
    per_stage: int = 6
    use_predictor: bool = True
    data_mean: bool = True  # allow the 'mean_x0' analytical first step with the training data's mean


@dataclass
class ImageFeatures:
    """The feature network (framework.metrics.features DEFAULTS)."""

    kind: str = _choice("classifier", ("classifier", "random"))
    widths: List[int] = _list(16, 32, 64)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    cache_dir: str = "runs/cache/features"


@dataclass
class ImageMetrics:
    """ImageQuality's options."""

    kid_subsets: int = 20
    kid_subset_size: int = 500
    pr_k: int = 3


@dataclass
class TextReference:
    """The held-out text of the real-data row."""

    split: str = "test"


@dataclass
class TextMetrics:
    """TextQuality's options."""

    batch_size: int = 64


@dataclass
class EvaluatorLM:
    """The project's causal evaluator LM (framework.metrics.text_evaluator EVALUATOR_DEFAULTS)."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


@dataclass
class EvaluationSection:
    """What every sampler evaluation has (framework.evaluation.settings); empty samplers: no evaluation."""

    samplers: List[Dict[str, Any]] = _list()
    nfe: List[int] = _list(5, 10, 20)
    num_samples: int = 1000
    batch_size: int = 500
    seed: int = 0
    every_n_val_epochs: int = 0
    after_fit: bool = True
    grid_size: int = 16
    save_samples: bool = False
    out_subdir: str = "eval"


@dataclass
class DCReference:
    """The ground truth of the DC ratio search: this solver at this many NFE on the searched grid refined
    (framework.tuning.reference.reference_trajectory); the paper's 200-step DDIM by default."""

    sampler: Dict[str, Any] = field(default_factory=lambda: {"name": "ddim"}, metadata={"whole": True})
    nfe: int = 200


@dataclass
class DCCalibration:
    """DC-Solver's post-training calibration (framework.tuning.dc_calibration, the DCCalibration callback and
    `sample.py --calibrate-dc`): ratios searched for each sampler entry (dc_solver or dpmsolver++) at each NFE
    and guidance scale on `num_noises` noises (seed `seed`), AdamW `lr` x `iterations` per step; the cascade
    (CPR) fitted when there are at least `cpr_min_records` configurations; the reference error before and
    after measured on the evaluation's first `eval_noises` noises. An evaluation entry with
    `ratios: calibrated` (dpmsolver++: `dc_ratios: calibrated`) then uses the saved ratios."""

    enabled: bool = False
    samplers: List[Dict[str, Any]] = _list({"name": "dc_solver"})
    nfe: List[int] = _list(5, 6, 8, 10)
    guidance_scales: List[float] = _list(1.0)
    num_noises: int = 10
    seed: int = 1
    iterations: int = 40
    lr: float = 0.1
    reference: DCReference = field(default_factory=DCReference)
    eval_noises: int = 200
    cpr_min_records: int = 3


@dataclass
class ImageEvaluationSection(EvaluationSection):
    """The sampler evaluation of image models: FID/KID/precision/recall against `reference`, ref_err."""

    guidance_scale: float = 1.0
    reference: ImageReference = field(default_factory=ImageReference)
    features: ImageFeatures = field(default_factory=ImageFeatures)
    metrics: ImageMetrics = field(default_factory=ImageMetrics)
    ref_err: ImageRefErr = field(default_factory=ImageRefErr)
    dc_calibration: DCCalibration = field(default_factory=DCCalibration)
    solver_search: SolverSearch = field(default_factory=SolverSearch)


@dataclass
class TextEvaluationSection(EvaluationSection):
    """The sampler evaluation of masked models: generative perplexity and entropy under the evaluator LM."""

    evaluator: str = _choice("project", ("project",), prefixes=("hf:",))
    cache_dir: str = "runs/cache/evaluator"
    lm: EvaluatorLM = field(default_factory=EvaluatorLM)
    reference: TextReference = field(default_factory=TextReference)
    metrics: TextMetrics = field(default_factory=TextMetrics)


# --- experiments --------------------------------------------------------------------------------
@dataclass
class ScoreExperimentConfig:
    kind: str = "score"
    seed: int = 0
    out_dir: str = "runs/default"
    resume: Union[bool, str] = False  # true (or 'last'): out_dir/checkpoints/last.ckpt; a string: that checkpoint
    data: ScoreDataSection = field(default_factory=DigitsData)
    model: ScoreModelSection = field(default_factory=UNetModel)
    diffusion: ScoreDiffusionSection = field(default_factory=ScoreDiffusionSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    trainer: Dict[str, Any] = field(default_factory=lambda: dict(TRAINER_DEFAULTS))
    sampling: ScoreSamplingSection = field(default_factory=ScoreSamplingSection)
    evaluation: ImageEvaluationSection = field(default_factory=ImageEvaluationSection)


@dataclass
class MaskedExperimentConfig:
    kind: str = "masked"
    seed: int = 0
    out_dir: str = "runs/default"
    resume: Union[bool, str] = False
    data: TextData = field(default_factory=TextData)
    model: MaskedModelSection = field(default_factory=MaskedTransformerModel)
    diffusion: MaskedDiffusionSection = field(default_factory=MaskedDiffusionSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    trainer: Dict[str, Any] = field(default_factory=lambda: dict(TRAINER_DEFAULTS))
    sampling: MaskedSamplingSection = field(default_factory=MaskedSamplingSection)
    evaluation: TextEvaluationSection = field(default_factory=TextEvaluationSection)


EXPERIMENTS = {"score": ScoreExperimentConfig, "masked": MaskedExperimentConfig}
TOP_LEVEL = tuple(f.name for f in fields(ScoreExperimentConfig))

DATASETS = {"digits": DigitsData, "files": ImageFilesData, "gmm": GaussianMixtureData}
SCORE_MODELS = {"unet": UNetModel, "mlp": MLPModel}
MASKED_MODELS = {"masked_transformer": MaskedTransformerModel}
SCORE_SCHEDULES = {"discrete_linear": DiscreteLinearSchedule, "linear": LinearSchedule, "cosine": CosineSchedule}
MASKING_SCHEDULES = {"linear": LinearMaskingSchedule, "cosine": CosineMaskingSchedule, "polynomial": PolynomialMaskingSchedule}

# kind -> {dotted section: (selector key, {name: dataclass})}; a section absent from the config
# (or without its selector key) gets the default dataclass of ScoreExperimentConfig / MaskedExperimentConfig
SELECTED = {
    "score": {"data": ("name", DATASETS), "model": ("name", SCORE_MODELS), "diffusion.schedule": ("kind", SCORE_SCHEDULES)},
    "masked": {"model": ("name", MASKED_MODELS), "diffusion.schedule": ("kind", MASKING_SCHEDULES)},
}


def _parent(obj, path: str):
    *head, last = path.split(".")
    for part in head:
        obj = getattr(obj, part)
    return obj, last


def default_choices(kind: str) -> dict[str, str]:
    """{section: the name its default dataclass carries}, e.g. {'data': 'digits', 'model': 'unet', ...}."""
    top = EXPERIMENTS[kind]()
    choices = {}
    for path, (key, _) in SELECTED[kind].items():
        parent, last = _parent(top, path)
        choices[path] = getattr(getattr(parent, last), key)
    return choices


def experiment_schema(kind: str, choices: Optional[dict] = None):
    """The schema instance of `kind` with each selected section's dataclass picked by `choices`
    ({'data': 'files', 'diffusion.schedule': 'cosine', ...}; missing entries keep the defaults)."""
    if kind not in EXPERIMENTS:
        raise ValueError(f"config key 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    top = EXPERIMENTS[kind]()
    for path, name in (choices or {}).items():
        key, classes = SELECTED[kind][path]
        if name not in classes:
            raise ValueError(f"config key '{path}.{key}' = {name!r} is not allowed for kind '{kind}'; allowed: {', '.join(classes)}")
        parent, last = _parent(top, path)
        setattr(parent, last, classes[name]())
    return top


def section_fields(obj) -> list[str]:
    """The keys a schema object (a dataclass instance or class) allows."""
    return [f.name for f in fields(obj)] if is_dataclass(obj) else []
