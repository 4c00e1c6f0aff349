"""The classifier: what `fit` writes and `score` and `report` read. classifier.py scores texts (through the
one feature path) or stored features; files.py writes and reads it as plain data."""

from .classifier import Classifier, FeatureGroup, load_classifier, neuron_columns

__all__ = ["Classifier", "FeatureGroup", "load_classifier", "neuron_columns"]
