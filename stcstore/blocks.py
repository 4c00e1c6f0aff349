"""Names that are API (feature blocks, the default model). Kept free of torch so reading the store and SQL start fast."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "default"  # the packaged all-MiniLM-L6-v2
DEFAULT_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("mean", "max", "single")
KINDS = ("hidden", "ffn")


def check_kinds_poolings(kinds: tuple[str, ...], poolings: tuple[str, ...]) -> None:
    """Validate --kinds / --poolings values (shared by the extract and fit configs)."""
    from .errors import StcError

    for k in kinds:
        if k not in KINDS:
            raise StcError(f"--kinds: {k!r} is not one of {', '.join(KINDS)}")
    for p in poolings:
        if p not in POOLINGS:
            raise StcError(f"--poolings: {p!r} is not one of {', '.join(POOLINGS)}")
    if not kinds or not poolings:
        raise StcError("--kinds and --poolings each need at least one value")


@dataclass(frozen=True, order=True)
class BlockKey:
    """One (kind, pooling, layer) block of features; its column name in the store is API."""

    kind: str  # "hidden" | "ffn"
    pooling: str  # "mean" | "max" | "single"
    layer: int

    @property
    def column(self) -> str:
        return f"{self.kind}.{self.pooling}.{self.layer}"

    @classmethod
    def parse(cls, column: str) -> "BlockKey":
        kind, pooling, layer = column.split(".")
        return cls(kind, pooling, int(layer))
