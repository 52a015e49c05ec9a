"""Progress bars for the loops a person waits on (the notebook executor, the benchmarks), quiet elsewhere.

A bar goes to stderr, and only when stderr is a terminal: tests, CI logs, nbval and notebooks (whose stderr is
not a terminal) see nothing, so no stored output or compared stream changes because of it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

__all__ = ["progress"]

Item = TypeVar("Item")


def progress(iterable: Iterable[Item], *, desc: str, unit: str = "it") -> Iterator[Item]:
    """`iterable` with a tqdm bar on stderr when stderr is a terminal; the items unchanged either way."""
    yield from tqdm(
        iterable, desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False
    )
