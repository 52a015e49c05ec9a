"""Measuring tools shared by every lesson and benchmark: bytes, peaks, medians and provenance.

Not a re-implementation of anything in transformers; these are the instruments the lessons measure with.
Taught in every lesson that has a "Measure the tradeoff" section (first in
lessons/01_checkpointing_tradeoffs.ipynb).

# NOTE [ Exact memory on a CPU ]
# A CPU has no `torch.cuda.max_memory_allocated`. Process RSS is noisy (the allocator caches, Python
# allocates), so the lessons count tensor bytes themselves, which is exact and repeatable on any machine:
# - `SavedTensors` counts what autograd keeps for backward (via `torch.autograd.graph.saved_tensors_hooks`);
# - `PeakMemory` follows every tensor storage created by an operator while it is active (via a
#   `TorchDispatchMode`) and records the highest total alive at once.
# On a GPU, `gpu_peak_memory` reads the CUDA caching allocator's own peak instead.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import statistics
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from reference_impl.workbook.progress import progress

__all__ = [
    "HookCalls",
    "PeakMemory",
    "SavedTensors",
    "gpu_peak_memory",
    "machine_info",
    "median_seconds",
    "side_by_side_seconds",
    "tensor_bytes",
    "threads",
]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the storage behind `t` (a view counts its whole base, as memory does)."""
    return t.untyped_storage().nbytes()


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


@dataclass
class SavedTensors:
    """Counts the tensors autograd saves for backward while the context is active.

    `unique_bytes` counts each storage once (two ops saving the same tensor keep it alive once); `total_bytes`
    counts every save. Tensors whose storage belongs to one of `exclude` (usually `model.parameters()`) are
    left out, so the count is activations only.

    Example:
        >>> lin = torch.nn.Linear(4, 4)
        >>> with SavedTensors(exclude=lin.parameters()) as saved:
        ...     y = lin(torch.randn(2, 4, requires_grad=True)).relu().sum()
        >>> saved.unique_bytes  # the input (2x4 fp32) for the weight grad, the ReLU output (2x4 fp32)
        64

    Note: tensors that `torch.utils.checkpoint` keeps for recompute are held by its own inner hooks, so they
        do
    not pass through these hooks; count a checkpointed region's inputs with `PeakMemory` or by hand.
    """

    exclude: Iterable[torch.Tensor] = ()
    total_bytes: int = 0
    count: int = 0
    _seen: dict[tuple[str, int], int] = field(default_factory=dict, repr=False)
    _excluded: set[tuple[str, int]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self._excluded = {_storage_key(p) for p in self.exclude}
        self.exclude = ()

    @property
    def unique_bytes(self) -> int:
        return sum(self._seen.values())

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self._excluded:
            self.count += 1
            self.total_bytes += tensor_bytes(t)
            self._seen[key] = tensor_bytes(t)
        return t

    def __enter__(self) -> SavedTensors:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


class HookCalls:
    """Counts how often a forward pre-hook fires on each of `modules` while the context is active.

    A stand-in for the hooks a framework attaches to layers (FSDP2 all-gathers a layer's parameters in one): a
    hook that sits inside a checkpoint runs again when backward recomputes the layer; one outside runs once
    per step.

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> with HookCalls([layer]) as calls:
        ...     _ = layer(torch.randn(1, 2))
        ...     _ = layer(torch.randn(1, 2))
        >>> calls.counts
        [2]
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.modules = list(modules)
        if not self.modules:
            raise ValueError(
                "modules is empty; pass the modules whose hook calls to count, e.g. model.layers"
            )
        self.counts = [0] * len(self.modules)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def total(self) -> int:
        return sum(self.counts)

    def _count(self, index: int, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.counts[index] += 1

    def __enter__(self) -> HookCalls:
        self._handles = [
            module.register_forward_pre_hook(functools.partial(self._count, i))
            for i, module in enumerate(self.modules)
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class PeakMemory(TorchDispatchMode):
    """Exact peak of tensor bytes alive at once, on any device, counted op by op.

    Every storage an operator creates while the mode is active is counted until it is freed; tensors that
    existed before (inputs, parameters) are not counted unless `baseline` lists them. `peak_bytes` is the
    highest total seen, `current_bytes` what is still alive.

    Example:
        >>> x = torch.randn(1024)          # 4 KiB, allocated before: not counted
        >>> with PeakMemory() as mem:
        ...     y = (x * 2) + 1            # (x * 2) is a 4 KiB temporary, freed after the add
        >>> mem.peak_bytes, mem.current_bytes
        (8192, 4096)

    Views share their base's storage and add nothing (a view of a tensor made before the block is not
    counted either); in-place ops add nothing.

    To explain a peak, `peak_op` names the operator whose output reached it (e.g. "aten.sum.dim_IntList") and
    `alive_at_peak` lists the bytes of every storage alive at that moment, largest first.
    """

    def __init__(self, baseline: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self.peak_op = "baseline"
        self.alive_at_peak: list[int] = []
        self._op = "baseline"
        self._alive: dict[int, int] = {}
        for t in baseline:
            self._track(t)

    def _release(self, sid: int) -> None:
        self.current_bytes -= self._alive.pop(sid, 0)

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        sid = id(storage)
        if sid in self._alive:
            return
        nbytes = storage.nbytes()
        self._alive[sid] = nbytes
        self.current_bytes += nbytes
        if self.current_bytes > self.peak_bytes:
            self.peak_bytes = self.current_bytes
            self.peak_op = self._op
            self.alive_at_peak = sorted(self._alive.values(), reverse=True)
        weakref.finalize(storage, self._release, sid)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        self._op = str(func)
        # An output that shares an input's storage (a view, an in-place result) allocated nothing new.
        inputs = {
            id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if (
                isinstance(t, torch.Tensor)
                and t.device.type != "meta"
                and id(t.untyped_storage()) not in inputs
            ):
                self._track(t)
        return out


def gpu_peak_memory(fn: Callable[[], Any], device: torch.device | str = "cuda") -> int | None:
    """Peak bytes the CUDA caching allocator held while running `fn()`, above what was allocated before.

    Returns None when no CUDA device is present, so a lesson can fall back to recorded figures.
    """
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 2, inner: int = 1) -> float:
    """Median wall time of `fn()` in seconds over `repeats` runs (each of `inner` calls), after `warmup` runs.

    Synchronises CUDA around every run so GPU work is counted where it happens. A median, not a mean, so
    one slow run (another process, a page fault) does not move the figure.
    """
    import time

    if repeats < 1 or inner < 1:
        raise ValueError(f"repeats={repeats} and inner={inner} must both be >= 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def side_by_side_seconds(
    fns: dict[str, Callable[[], Any]],
    *,
    rounds: int = 7,
    warmup: int = 2,
    inner: int = 1,
    desc: str | None = None,
) -> dict[str, float]:
    """Median seconds of several functions measured *interleaved* (A, B, C, A, B, C, ...) in one run.

    Interleaving puts every contender under the same machine conditions (clock, other load, caches), which is
    what makes a ratio between them trustworthy; timing A fully and then B is not. With `desc`, the rounds
    show a progress bar on stderr when it is a terminal (`reference_impl.workbook.progress`).
    """
    import time

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds) if desc is None else progress(range(rounds), desc=desc, unit="round"):
        for name, fn in fns.items():
            _sync()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync()
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine_info() -> dict[str, Any]:
    """What a measurement was taken on: machine, processor, threads, GPU and library versions, date (UTC)."""
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with `torch.set_num_threads(n)`, then restore the previous count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
