"""Lightning callbacks: the sampler evaluation (during and after training) and its pieces, reproducible data order."""

from .data_order import EpochSeededShuffle
from .evaluation import Evaluator, gather_ordered, metric_key
from .image_task import ImageTask
from .sampler_evaluation import SamplerEvaluation
from .settings import EvaluationSettings, evaluation_settings
from .text_task import TextTask, text_evaluation_settings

__all__ = ["EpochSeededShuffle", "Evaluator", "gather_ordered", "metric_key", "ImageTask", "SamplerEvaluation", "EvaluationSettings",
           "evaluation_settings", "TextTask", "text_evaluation_settings"]
