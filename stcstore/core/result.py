"""What every stage returns: a dataclass the CLI prints as JSON (`to_dict`) or for people (`to_text`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


class Result:
    """Base of the stages' result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    def to_text(self) -> str:
        raise NotImplementedError
