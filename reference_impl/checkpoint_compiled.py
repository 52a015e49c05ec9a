"""Checkpointing as the field does it now: selective policies under torch.compile, the partitioner's memory
budget, and host offload of the kept layer inputs only.

Not in transformers. transformers 5.22 offers `gradient_checkpointing_enable(gradient_checkpointing_kwargs,
every_n_layers, offload)`; what is here plugs into it (or into our `set_gradient_checkpointing`) and into
`torch.compile`. Taught in the GPU section of lessons/01_checkpointing_tradeoffs.ipynb; measured on an H200 by
benchmarks/bench_checkpointing_front.py.

Three tools, each a different answer to "what does the backward pass get, and where from":

- `selective_checkpoint_kwargs(policy)`: `gradient_checkpointing_kwargs` that make every checkpointed layer a
  *selective* checkpoint (`torch.utils.checkpoint.create_selective_checkpoint_contexts`): the outputs of the
  ops a policy names are saved, every other op of the layer is recomputed in backward. Eagerly, torch runs the
  policy on every op through a Python dispatch mode, which costs more than it saves on a launch-bound GPU
  step. Under `torch.compile` the policy is applied once, while tracing: each op of the graph is tagged save
  or recompute, and the compiled backward graph recomputes what is tagged, with no Python per op.
- `compile_with_memory_budget(model, budget)` / `activation_memory_budget(budget)`: the compiler's own answer.
  With `torch.compile`, AOTAutograd's min-cut partitioner decides which forward values the backward graph
  receives and which it recomputes. Its knob `torch._functorch.config.activation_memory_budget` (1.0: save
  what is cheapest in runtime; 0.0: recompute everything it can) makes it save as little as it can, above
  budget x the saved bytes at 1.0, recomputing the cheapest ops first. The budget is read when a graph is
  partitioned, i.e. at compile time, so every budget is a compilation of its own. `saved_for_backward(loss)`
  reports what a compiled (or any custom-Function) graph kept.
- `HostOffload` / `offload_layer_inputs(model)`: checkpointing keeps one tensor per checkpointed layer, its
  input; these hooks move exactly those tensors (not every saved tensor, as `torch.autograd.graph.save_on_cpu`
  does around a whole step) to pinned host memory, copying on a side CUDA stream so the forward does not wait
  for the copy, and in backward fetch the next layer's input while the current one recomputes.

# NOTE [ Why the outer hooks see the layer inputs and nothing else ]
# Both checkpoint variants save the layer's inputs through autograd's saved-tensor machinery *outside* their
# own hooks: the reentrant one with `ctx.save_for_backward(*inputs)` in CheckpointFunction, the non-reentrant
# one with `_NoopSaveInputs` before it enters its own `saved_tensors_hooks` frame. Everything the layer's ops
# save inside the checkpoint goes to checkpoint's innermost hooks (non-reentrant) or is not saved at all
# (reentrant runs the first pass under no_grad). So a `saved_tensors_hooks` pair entered around the checkpoint
# call packs exactly the kept inputs. transformers 5.22's `offload=True` does the same with `save_on_cpu`,
# copying on the compute stream.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from reference_impl.checkpoint_policies import selective_context_fn

__all__ = [
    "HostOffload",
    "MemoryBudgetBackend",
    "OffloadingCheckpoint",
    "SavedReport",
    "activation_memory_budget",
    "compile_with_memory_budget",
    "offload_layer_inputs",
    "saved_for_backward",
    "selective_checkpoint_kwargs",
]


def selective_checkpoint_kwargs(policy: str = "selective") -> dict[str, Any]:
    """`gradient_checkpointing_kwargs` that make each checkpointed layer a selective checkpoint under
    torch.compile.

    Pass them to transformers' `model.gradient_checkpointing_enable(kwargs, every_n_layers=k)` (or to our
    `set_gradient_checkpointing(model, True, kwargs)`), then `torch.compile(model)`. Selective checkpointing
    needs the non-reentrant variant (it works through saved-tensor hooks and, compiled, through the traced
    graph). `policy` is a key of `checkpoint_policies.SELECTIVE_POLICIES` (ValueError otherwise).

    Example:
        >>> model.gradient_checkpointing_enable(selective_checkpoint_kwargs("selective"))  # doctest: +SKIP
        >>> step = torch.compile(model)  # doctest: +SKIP
    """
    return {"use_reentrant": False, "context_fn": selective_context_fn(policy)}


@contextmanager
def activation_memory_budget(budget: float) -> Iterator[None]:
    """Partition compiled graphs inside the block under
    `torch._functorch.config.activation_memory_budget=budget`.

    The budget is read when AOTAutograd partitions a graph into forward and backward, which happens at the
    first call of a compiled function (and at every recompilation), so run that first call inside the block. A
    graph already compiled keeps the partition it got, and dynamo reuses it for an equal backend whatever the
    budget now
    is: to compare budgets, use `compile_with_memory_budget`, which makes the budget part of the backend.

    Args:
        budget: 0.0 to 1.0, the fraction of the default partition's saved bytes the partitioner may keep.

    Raises:
        ValueError: `budget` is not a number in [0, 1].
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0.0 <= budget <= 1.0:
        raise ValueError(f"budget={budget!r} must be a number in [0, 1] (1.0 is the default partition)")
    with torch._functorch.config.patch(activation_memory_budget=float(budget)):
        yield


@dataclass(frozen=True)
class MemoryBudgetBackend:
    """A torch.compile backend: `backend` (a registered name) with the partitioner under `budget`.

    Dynamo keeps a compiled entry per backend and reuses it for an *equal* backend, so the budget has to be
    part of the backend: two wrappers with different budgets are different backends and compile separately,
    two with the same budget share their compilation.
    """

    budget: float
    backend: str = "inductor"

    def __post_init__(self) -> None:
        with activation_memory_budget(self.budget):  # validates the budget
            pass

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        inner = torch._dynamo.lookup_backend(self.backend)
        with activation_memory_budget(self.budget):  # AOTAutograd partitions inside this call
            return inner(gm, example_inputs)


def compile_with_memory_budget(
    model: nn.Module, budget: float, backend: str = "inductor"
) -> Callable[..., Any]:
    """`torch.compile(model)` whose graphs are partitioned under `activation_memory_budget(budget)`.

    Example:
        >>> step = compile_with_memory_budget(model, 0.2)  # doctest: +SKIP
        >>> step(input_ids=ids, labels=ids).loss.backward()  # doctest: +SKIP
    """
    return torch.compile(model, backend=MemoryBudgetBackend(budget, backend))


@dataclass
class SavedReport:
    """What a graph's custom-Function nodes (compiled graphs among them) keep for backward.

    `tensors` and `bytes` count each storage once; `by_shape` counts tensors per shape, largest first.
    """

    tensors: int = 0
    bytes: int = 0
    by_shape: dict[str, int] = field(default_factory=dict)
    nodes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "bytes": self.bytes, "nodes": self.nodes, "by_shape": self.by_shape}


def saved_for_backward(output: torch.Tensor, exclude: Iterator[torch.Tensor] | tuple[()] = ()) -> SavedReport:
    """Walk the autograd graph behind `output` and count what its Python-Function nodes saved for backward.

    A compiled graph runs in autograd as one custom Function (`CompiledFunctionBackward`) whose saved tensors
    are exactly the forward values the partitioner chose to hand to the backward graph; the same walk counts
    the inputs a reentrant checkpoint keeps. Built-in nodes (eager aten ops) are not counted. Parameters
    passed in `exclude` are left out, so the count is activations. Reading a saved tensor runs its unpack hook
    (an offloaded tensor is fetched back): call this on a graph without such hooks, before `backward()`.
    """
    excluded = {p.untyped_storage().data_ptr() for p in exclude}
    seen: set[int] = set()
    storages: dict[int, int] = {}
    shapes: Counter[str] = Counter()
    nodes = 0
    # Walked from the loss down; a node's `next_functions` hold None where an input needs no gradient.
    stack: list[torch.autograd.graph.Node | None] = [output.grad_fn] if output.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        saved = getattr(node, "saved_tensors", None) if hasattr(node, "_forward_cls") else None
        if saved:
            nodes += 1
            for t in saved:
                if t is None or not isinstance(t, torch.Tensor):
                    continue
                ptr = t.untyped_storage().data_ptr()
                if ptr in excluded or ptr in storages:
                    continue
                storages[ptr] = t.untyped_storage().nbytes()
                shapes[str(tuple(t.shape))] += 1
        stack.extend(fn for fn, _ in node.next_functions)
    by_shape = dict(sorted(shapes.items(), key=lambda kv: -kv[1]))
    return SavedReport(tensors=len(storages), bytes=sum(storages.values()), by_shape=by_shape, nodes=nodes)


@dataclass
class _Offloaded:
    host: torch.Tensor
    device: torch.device
    index: int
    siblings: list[_Offloaded]  # the entries of the same step, in forward order
    fetched: torch.Tensor | None = None  # prefetched back onto the device


class HostOffload:
    """Saved-tensor hooks that keep what they pack in (pinned) host memory, copying on a side stream.

    Entered around a checkpoint call (see `offload_layer_inputs`) they pack exactly the checkpoint's kept
    inputs (NOTE at the top of this module). Forward: each packed tensor is copied to host memory on a side
    stream, after the compute stream has produced it; the device tensor's memory is handed back to the
    allocator once that copy is done (`record_stream`), so the compute stream never waits for it. Backward:
    unpacking the input of layer i copies it back (if it was not prefetched) and starts fetching the input of
    layer i - 1, which the backward needs next, so the copy overlaps layer i's recompute.

    On a CPU tensor the hooks still copy (to a separate host tensor), so the bookkeeping is testable anywhere.
    `packed` and `packed_bytes` count what was offloaded since the last `reset()`.
    """

    def __init__(self, prefetch: bool = True) -> None:
        self.prefetch = prefetch
        self.packed = 0
        self.packed_bytes = 0
        self._entries: list[_Offloaded] = []
        self._stream: torch.cuda.Stream | None = None

    def reset(self) -> None:
        """Forget the entries of a step whose backward never ran (they hold host memory)."""
        self._entries = []
        self.packed = self.packed_bytes = 0

    def _side_stream(self, device: torch.device) -> torch.cuda.Stream:
        if self._stream is None or self._stream.device != device:
            self._stream = torch.cuda.Stream(device=device)
        return self._stream

    def pack(self, t: torch.Tensor) -> _Offloaded:
        if t.device.type != "cuda":
            entry = _Offloaded(t.detach().clone(), t.device, len(self._entries), self._entries)
        else:
            host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
            stream = self._side_stream(t.device)
            stream.wait_stream(torch.cuda.current_stream(t.device))  # t is written by the compute stream
            with torch.cuda.stream(stream):
                host.copy_(t, non_blocking=True)
            t.record_stream(stream)  # t's memory is not reused before the copy has read it
            entry = _Offloaded(host, t.device, len(self._entries), self._entries)
        self._entries.append(entry)
        self.packed += 1
        self.packed_bytes += t.untyped_storage().nbytes()
        return entry

    def _fetch(self, entry: _Offloaded) -> torch.Tensor:
        if entry.device.type != "cuda":
            return entry.host.clone()
        stream = self._side_stream(entry.device)
        with torch.cuda.stream(stream):  # after the device-to-host copy of the same entry, on the same stream
            return entry.host.to(entry.device, non_blocking=True)

    def unpack(self, entry: _Offloaded) -> torch.Tensor:
        t = entry.fetched if entry.fetched is not None else self._fetch(entry)
        entry.fetched = None
        if t.device.type == "cuda":
            compute = torch.cuda.current_stream(t.device)
            compute.wait_stream(self._side_stream(t.device))
            t.record_stream(compute)  # allocated on the side stream, used and freed on the compute stream
        if self.prefetch and entry.index > 0:
            previous = entry.siblings[entry.index - 1]
            if previous.fetched is None:
                previous.fetched = self._fetch(previous)
        if entry.index == 0 and entry.siblings is self._entries:
            self._entries = []  # the first layer's input is the last one backward needs: the step is over
        return t

    @contextmanager
    def hooks(self) -> Iterator[None]:
        """`torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)`."""
        with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
            yield


@dataclass(frozen=True)
class OffloadingCheckpoint:
    """A layer's `_gradient_checkpointing_func` that runs the original one inside `offload.hooks()`."""

    func: Callable[..., Any]
    offload: HostOffload

    def __call__(self, layer_call: Callable[..., Any], *args: Any) -> Any:
        with self.offload.hooks():
            return self.func(layer_call, *args)


def offload_layer_inputs(model: nn.Module, prefetch: bool = True) -> HostOffload:
    """Offload the inputs that checkpointing keeps, for every checkpointed layer of `model`, to host memory.

    Call after checkpointing is enabled (transformers' `gradient_checkpointing_enable` or our
    `set_gradient_checkpointing`); it wraps each checkpointed layer's `_gradient_checkpointing_func` in
    `OffloadingCheckpoint`. Enabling checkpointing again replaces the wrappers (offload is then off).

    Returns:
        The `HostOffload` whose hooks all layers share (its `packed` counts what a step offloaded).

    Raises:
        ValueError: no layer of `model` is checkpointed (there is nothing kept to offload).
    """
    offload = HostOffload(prefetch=prefetch)
    wrapped = 0
    # A plain attribute is set on the modules below; torch's stubs would only allow Tensor | Module values.
    module: Any
    for module in model.modules():
        func = getattr(module, "_gradient_checkpointing_func", None)
        if not getattr(module, "gradient_checkpointing", False) or func is None:
            continue
        if isinstance(func, OffloadingCheckpoint):
            func = func.func
        module._gradient_checkpointing_func = OffloadingCheckpoint(func, offload)
        wrapped += 1
    if not wrapped:
        raise ValueError(
            f"{type(model).__name__} has no checkpointed layer: enable checkpointing first "
            "(model.gradient_checkpointing_enable(...) or set_gradient_checkpointing(model, True, ...))"
        )
    return offload
