"""Evaluation metrics: image quality through torchmetrics with a feature network trained here; text metrics."""

from .features import FeatureNetwork, feature_network, load_feature_network
from .image import IMAGE_METRICS, ImageQuality, precision_recall

__all__ = ["FeatureNetwork", "feature_network", "load_feature_network", "IMAGE_METRICS", "ImageQuality",
           "precision_recall"]
