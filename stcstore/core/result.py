"""What every stage returns: a dataclass the CLI prints as JSON (`to_dict`) or for people (`to_text`)."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from .errors import StcError


class Result:
    """Base of the stages' result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    def to_text(self) -> str:
        raise NotImplementedError


def stage_config(first: Any, rest: tuple[Any, ...], cfg_type: type, lead: tuple[str, ...]) -> tuple[Any, tuple[Any, ...]]:
    """The config a stage runs on, and any positional values after it.

    Every stage is called one way: `stage(cfg, **resources) -> Result`, its inputs and outputs in the config
    (`store`, `sources`, `out`, `force`). 0.2 passed some beside it: `extract(store, cfg)`, `ingest(store,
    sources, cfg)`, `fit(store, cfg, out, force)`; those calls still work: `lead` names the config fields the
    values before the config fill."""
    if isinstance(first, cfg_type):
        return first, rest
    args = (first, *rest)
    if len(args) <= len(lead) or not isinstance(args[len(lead)], cfg_type):
        raise TypeError(f"expected a {cfg_type.__name__} (or 0.2's {', '.join(lead)}, {cfg_type.__name__}), "
                        f"got {type(first).__name__}")
    values = {k: (str(v) if k == "store" else v) for k, v in zip(lead, args)}
    if "sources" in values:
        values["sources"] = tuple(str(s) for s in values["sources"])
    return replace(args[len(lead)], **values), args[len(lead) + 1:]


def require_store(store: Any, stage: str) -> str:
    """A config's store, which a stage needs (`cfg.store`)."""
    if store is None:
        raise StcError(f"{stage}: give the store (the config's `store`, or --store)")
    return str(store)


def positional(rest: tuple[Any, ...], *defaults: Any) -> tuple[Any, ...]:
    """0.2's positional resources after the config (`extract(store, cfg, lm)`), else the keyword values."""
    return tuple(rest[i] if i < len(rest) else d for i, d in enumerate(defaults))
