"""Features: the one path from texts to pooled neuron values (compute.py, over hooks.py and pooling.py),
per-chunk neuron statistics (neuron_stats.py), and the `stcstore extract` stage that stores them (stage.py).
`score` and `Classifier` compute their features through the same FeatureComputer."""

from .compute import FLOAT16_MAX, Batch, FeatureComputer, Features, length_batches
from .config import ExtractConfig, ExtractResult, parse_layers
from .stage import default_max_length, extract

__all__ = ["FLOAT16_MAX", "Batch", "ExtractConfig", "ExtractResult", "FeatureComputer", "Features",
           "default_max_length", "extract", "length_batches", "parse_layers"]
