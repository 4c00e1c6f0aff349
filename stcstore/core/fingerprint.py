"""Fingerprints and content hashes: the one recipe behind every id stcstore derives from data.

A *fingerprint* names what produced something (a feature set, a fit, a classifier, ingest options):
SHA-256 of the canonical JSON of a plain object, hex, cut to 16 digits. A *content hash* names bytes
(a file, a text). Ids written by earlier versions were made with this same recipe (recipe 1), so they stay
valid; a change to the canonical form must bump `RECIPE` and keep recipe 1 readable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

RECIPE = 1  # version of canonical_json + digest; every stored id so far is recipe 1
ID_DIGITS = 16  # hex digits of a fingerprint (64 bits)


def canonical_json(obj: Any) -> bytes:
    """Key-sorted JSON; values JSON cannot hold (paths, tuples as lists) go through str()."""
    return json.dumps(obj, sort_keys=True, default=str).encode()


def fingerprint(obj: Any, digits: int = ID_DIGITS) -> str:
    """The fingerprint of a plain object (dicts, lists, numbers, strings)."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()[:digits]


class Fingerprint:
    """A fingerprint built in parts (large inputs that should not be one JSON document): the seed's bytes,
    then the canonical JSON of each part, in order."""

    def __init__(self, seed: str = "") -> None:
        self._h = hashlib.sha256(seed.encode())

    def update(self, part: Any) -> "Fingerprint":
        self._h.update(canonical_json(part))
        return self

    def hexdigest(self, digits: int = ID_DIGITS) -> str:
        return self._h.hexdigest()[:digits]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_hash(text: str) -> str:
    """Content hash of a text (the texts table's `content_hash`; an id-less row's id is `h` + its first 20)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
