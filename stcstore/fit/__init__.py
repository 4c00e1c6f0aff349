"""Fit: the L1 solver (solver.py), one probe's regularisation path (probe.py), η-sparsification
(sparsify.py), metrics (metrics.py), split plans (splits.py), the fit's tables (tables.py), and the
`stcstore fit` stage (stage.py): probes -> sparsify -> aggregate -> choose on validation."""

from .config import FitConfig
from .result import FitResult
from .stage import fit

__all__ = ["FitConfig", "FitResult", "fit"]
