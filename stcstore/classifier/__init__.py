"""The classifier: what `fit` writes and `score` and `report` read. classifier.py scores texts (through the
one feature path) or stored features; files.py saves and loads it as plain data."""

from .classifier import Classifier, FeatureGroup, neuron_columns
from .files import load_classifier

__all__ = ["Classifier", "FeatureGroup", "load_classifier", "neuron_columns"]
