"""The options of one report (`ReportConfig`) and its result (`ReportResult`): a leaf of `stcstore.report`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import StcError
from ..core.names import REPORT_HISTOGRAMS, REPORT_TOP
from ..core.result import Result


@dataclass
class ReportConfig:
    store: str
    classifier: str
    out: str
    top: int = REPORT_TOP  # neurons listed in the page and the JSON (neurons.parquet has all of them)
    histograms: int = REPORT_HISTOGRAMS  # top neurons whose per-label value distributions are drawn (read from the store)
    split: str | None = None  # split of the neuron statistics [default: the fit's train split]
    force: bool = False    # replace an existing, non-empty out directory

    def __post_init__(self) -> None:
        if self.top < 1:
            raise StcError(f"--top {self.top}: give at least 1")
        if self.histograms < 0:
            raise StcError(f"--histograms {self.histograms}: give 0 or more")


@dataclass
class ReportResult(Result):
    out: str
    files: list[str]
    classifier: str
    summary: dict[str, Any]
    seconds: float
    messages: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        s = self.summary
        lines = [f"report of classifier {self.classifier}: {s['model']} on {s['dataset']}, "
                 f"{s['what']}, {s['neurons']} neurons",
                 f"  probes {s['probes']}, aggregates {s['aggregates']}, neuron statistics from split "
                 f"{s['stats_split']!r}, predictions {s['predictions']}"]
        lines += [f"  note: {m}" for m in self.messages]
        lines += [f"  wrote {f}" for f in self.files]
        lines.append(f"open {Path(self.out) / 'report.html'} in a browser ({self.seconds:.1f}s)")
        return "\n".join(lines)
