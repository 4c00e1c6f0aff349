"""The options of one extract run (`ExtractConfig`) and its result (`ExtractResult`): a leaf of
`stcstore.features`, imported by the stage and by the Ray runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import StcError
from ..core.names import (
    BATCH_SIZE,
    DEFAULT_MODEL,
    KINDS,
    MAX_TOKENS,
    POOLINGS,
    STORED_DTYPES,
    TORCH_DTYPES,
    check_at_least,
    check_choice,
    check_kinds_poolings,
    check_name,
)
from ..core.result import Result


@dataclass(frozen=True)
class ExtractConfig:
    """Options of one extract run; validated without I/O."""

    dataset: str
    model: str = DEFAULT_MODEL  # hub name, local path, or "default" (the packaged MiniLM)
    layers: str = "all"  # "all", "A-B", ":B" (0..B) or "A,B,C"; applies to h{l} and a{l}
    kinds: tuple[str, ...] = KINDS
    poolings: tuple[str, ...] = POOLINGS
    max_length: int | None = None  # tokens per text; None: min(model limit, 512)
    batch_size: int = BATCH_SIZE  # most rows per forward batch
    max_tokens: int = MAX_TOKENS  # token budget per batch (rows x longest row)
    dtype: str = "float16"  # stored feature dtype
    torch_dtype: str = "float32"  # model compute dtype
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    chunk_rows: int | None = None  # rows per chunk; None: about `chunk_mb` per chunk
    chunk_mb: int = 128
    bucket: bool = True  # sort by length inside a chunk (off only for benchmarks)
    gguf_file: str | None = None
    ignore_free_space: bool = False  # start even when the estimated size exceeds the free disk space
    stats_only: bool = False  # record the neuron statistics only, no feature values (a separate feature set)
    pack: bool = False  # several texts a row, no padding between them (features.packing; how it ran, as batch_size)
    store: str | None = None  # the store directory (`extract(cfg)`; 0.2 passed it beside the config)
    force: bool = False  # 0.2's name of ignore_free_space (elsewhere `force` replaces an output)

    def __post_init__(self) -> None:
        if self.force and not self.ignore_free_space:
            object.__setattr__(self, "ignore_free_space", True)
        check_name(self.dataset, "--dataset")
        check_kinds_poolings(self.kinds, self.poolings)
        check_choice(self.dtype, STORED_DTYPES, "--dtype")
        check_choice(self.torch_dtype, TORCH_DTYPES, "--torch-dtype")
        check_at_least(self, ("batch_size", "max_tokens", "chunk_mb", "chunk_rows", "threads"))
        check_at_least(self, ("max_length",), 2)


def parse_layers(spec: str, n_layers: int) -> tuple[list[int], list[int]]:
    """Layer spec -> (hidden layers within 0..L, ffn layers within 0..L-1)."""
    spec = spec.strip()
    if spec in ("", "all"):
        wanted = list(range(n_layers + 1))
    else:
        wanted = []
        try:
            for part in spec.split(","):
                if "-" in part or ":" in part:
                    a, b = part.replace(":", "-").split("-")
                    wanted += list(range(int(a) if a else 0, int(b) + 1))
                else:
                    wanted.append(int(part))
        except ValueError:
            raise StcError(f"--layers {spec!r}: use all, A-B, :B or A,B,C (e.g. 0-6)") from None
    bad = [l for l in wanted if l < 0 or l > n_layers]
    if bad:
        raise StcError(f"--layers {spec!r}: layer {bad[0]} is out of range; this model has hidden states "
                       f"h0..h{n_layers} and FFN activations a0..a{n_layers - 1}")
    wanted = sorted(set(wanted))
    return wanted, [l for l in wanted if l < n_layers]


@dataclass
class ExtractResult(Result):
    dataset: str
    feature_set: str
    model: str
    texts_total: int
    texts_present_before: int
    texts_extracted: int
    chunks_written: int
    chunks_total: int
    seconds: float
    forward_seconds: float
    texts_per_s: float
    estimated_bytes: int
    store_bytes: int
    truncated: int
    clipped_values: int
    blocks: int
    new_feature_set: bool
    messages: list[str] = field(default_factory=list)
    printed: int = 0  # the first messages (the plan), printed to stderr before the run: not repeated by to_text

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("printed")
        return out

    def to_text(self) -> str:
        lines = list(self.messages[self.printed:])
        if self.texts_extracted:
            lines.append(f"extracted {self.texts_extracted} texts in {self.chunks_written} chunks, "
                         f"{self.texts_per_s:.1f} texts/s; feature set {self.feature_set[:12]} now holds "
                         f"{self.texts_total} texts, {self.store_bytes / 2**20:,.1f} MiB")
        return "\n".join(lines)
