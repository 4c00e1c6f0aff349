"""Score: the nightly re-scoring job. sources.py reads texts (a store dataset, or a file validated like
ingest), groups.py runs one shared pass per model, sink.py writes predictions, explain.py token
explanations, stage.py the `stcstore score` entry."""

from .config import ClassifierRun, ScoreConfig, ScoreResult
from .stage import score

__all__ = ["ClassifierRun", "ScoreConfig", "ScoreResult", "score"]
