"""One BLAS thread for a block of work, cheaply.

`threadpoolctl.threadpool_limits` looks up the loaded BLAS and OpenMP libraries on every call (0.5 s over the
aggregate searches of one fit); the controller here looks them up once per process, and again only when
another library has been loaded since (scikit-learn's SciPy after torch, say)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from threadpoolctl import ThreadpoolController

_controller: tuple[int, ThreadpoolController] | None = None


def _current() -> ThreadpoolController:
    global _controller
    loaded = len(sys.modules)  # a new extension module may have brought a new BLAS
    if _controller is None or _controller[0] != loaded:
        _controller = (loaded, ThreadpoolController())
    return _controller[1]


@contextmanager
def blas_one_thread(user_api: str | None = "blas") -> Iterator[None]:
    """The BLAS libraries (`user_api=None`: OpenMP's too) on one thread for the duration."""
    with _current().limit(limits=1, user_api=user_api):
        yield
