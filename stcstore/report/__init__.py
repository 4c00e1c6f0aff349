"""Report: what a fitted classifier learned and where (stage.py gathers it from the store and the
classifier; page.py renders the HTML page with svg.py's inline charts)."""

from .config import ReportConfig, ReportResult
from .stage import report

__all__ = ["ReportConfig", "ReportResult", "report"]
