"""Running stcstore on a Ray cluster (`--engine ray`; the optional extra `stcstore[ray]`).

extract: chunks computed by model-holding actors, committed by the driver in order (`extract.py`);
score: chunks of texts scored by actors that write their own part files (`score.py`); fit: the per-layer
probes as Ray tasks (`fit.py`). The store lives on storage every node reaches; one driver holds its lock.
"""

from .engine import RayOptions, ray_session
from .extract import ray_extract
from .fit import ray_fit
from .score import ray_score

__all__ = ["RayOptions", "ray_extract", "ray_fit", "ray_score", "ray_session"]
