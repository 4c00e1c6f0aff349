"""Fit: the L1 solver (solver.py), one probe's regularisation path (probe.py), η-sparsification
(sparsify.py), metrics (metrics.py), split plans (splits.py), the fit's tables (tables.py), and the
`stcstore fit` stage (stage.py): probes -> sparsify -> aggregate -> choose on validation. The solver is also
public as scikit-learn estimators (estimator.py: `L1LogisticRegression`, `L1LinearRegression`)."""

from .config import FitConfig
from .result import FitResult
from .stage import fit

__all__ = ["FitConfig", "FitResult", "L1LinearRegression", "L1LogisticRegression", "fit"]


def __getattr__(name: str):  # the estimators import scikit-learn (1 s): only when asked for
    if name in ("L1LinearRegression", "L1LogisticRegression"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
