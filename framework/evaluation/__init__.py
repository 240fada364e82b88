"""The sampler evaluation without Lightning: every configured sampler at every NFE, sharded over ranks,
scored by a task (images: FID/KID/precision/recall and the reference-solution error; text: generative
perplexity and entropy) and written as a table and a plot. The SamplerEvaluation callback and the
experiments' after-training and sample.py paths all run it."""

from .evaluator import Evaluator, gather_ordered, metric_key
from .image_task import ImageTask
from .settings import EvaluationSettings, SamplerEntry, evaluation_settings
from .text_task import TextTask

__all__ = ["Evaluator", "gather_ordered", "metric_key", "ImageTask", "EvaluationSettings", "SamplerEntry",
           "evaluation_settings", "TextTask"]
