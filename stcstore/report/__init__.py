"""Report: what a fitted classifier learned and where (stage.py gathers it from the store and the
classifier; page.py renders the HTML page with svg.py's inline charts)."""

from .stage import ReportConfig, ReportResult, report

__all__ = ["ReportConfig", "ReportResult", "report"]
