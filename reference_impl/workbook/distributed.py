"""Checkpointing and pruning on more than one process: DDP and FSDP2 on `torch.distributed` itself.

Not a re-implementation of transformers: the workbook's harness for running our `set_gradient_checkpointing`
(and transformers' own layers) under `DistributedDataParallel` and `fully_shard` on N processes, and for
bringing back what each rank saw. Taught in lessons/07_distributed_checkpointing.ipynb; measured by
benchmarks/bench_distributed.py.

    results = run_scenarios(
        [Scenario("fsdp, __call__", "fsdp", checkpointing="full", checkpoint_target="__call__")]
    )
    results[rank][0]["hook_calls"]    # pre-forward hook calls on the decoder layers in one step

# NOTE [ How the ranks are started and stopped ]
# The parent process holds the rendezvous: a `torch.distributed.TCPStore` server bound to port 0, so the
# operating system picks a free port (no fixed port, no race between choosing a port and binding it). The
# ranks are started by `torch.multiprocessing.start_processes` and join that store as clients. Each rank
# writes what it measured to a file in a temporary folder (a spawned process's stderr does not reach a
# notebook reliably, and a queue can block a child on exit until the parent reads it); the parent reads the
# files after every rank has exited. Whatever happens (a rank raises, a rank hangs past the timeout),
# `run_ranks` terminates and joins every child it started, closes the store (freeing its port) and removes the
# folder before it returns or raises.

# NOTE [ forkserver, not fork ]
# "spawn" starts a fresh interpreter per rank that imports torch and transformers again (several seconds per
# run on two busy cores). "fork" copies the parent, threads' locks included: from a Jupyter kernel (which runs
# threads of its own) a forked rank can hang. "forkserver" (the default where the platform has it, as on
# Linux) forks each rank from a small single-threaded server process that has imported this module and
# transformers' Llama once; the first run pays the server's start, later ones start in about a second. The
# functions the ranks run live in this module so that the server can import them. The server lives as long as
# the parent, as multiprocessing's resource tracker does.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.multiprocessing.spawn import ProcessException

from reference_impl.checkpointing import GradientCheckpointingLayer, set_gradient_checkpointing
from reference_impl.workbook.measure import PeakMemory
from reference_impl.workbook.tiny import tiny_gpt2_config, tiny_llama_config

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

__all__ = [
    "DDP_SCENARIOS",
    "FSDP_SCENARIOS",
    "PARALLEL_KINDS",
    "FSDPPeakMemory",
    "ModelSpec",
    "Scenario",
    "count_all_gathers",
    "error_line",
    "fail_on_rank",
    "local_parameter_bytes",
    "max_grad_diff",
    "predicted_shard_bytes",
    "prune_heads_on_rank",
    "reference_gradients",
    "run_ranks",
    "run_scenarios",
    "tiny_llama",
]

#: How a scenario wraps the model: `DistributedDataParallel` or `fully_shard` on every decoder layer and
#: the root.
PARALLEL_KINDS = ("ddp", "fsdp")


@dataclass(frozen=True)
class ModelSpec:
    """A tiny Llama (transformers' `LlamaForCausalLM` from a `LlamaConfig`) and the batch each rank trains on.

    C = hidden_size, L = num_layers, T = seq_len, B = batch_per_rank (the global batch is B * world_size
    rows).
    """

    num_layers: int = 4
    hidden_size: int = 32
    intermediate_size: int = 64
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 64
    seq_len: int = 16
    batch_per_rank: int = 2
    seed: int = 0


@dataclass(frozen=True)
class Scenario:
    """One training step to run on every rank.

    Args:
        name: a label for tables and figures.
        parallel: "ddp" (`DistributedDataParallel`) or "fsdp" (`fully_shard` per decoder layer, then the
            root).
        layers: "ours" (decoder layers that are also our `GradientCheckpointingLayer`) or "transformers" (the
            installed release's own `LlamaDecoderLayer`: on 5.22 its checkpoint wraps `__call__`).
        checkpointing: None, "full" (every layer) or "sqrt" (segments of round(sqrt(L)) layers).
        checkpoint_target: for our layers, what the checkpoint wraps: "forward" or "__call__".
        use_reentrant, find_unused_parameters, static_graph: passed on to checkpoint and DDP.
        autocast_bf16: run forward under `torch.autocast(device, torch.bfloat16)` (meant for CUDA).
    """

    name: str
    parallel: str
    layers: str = "ours"
    checkpointing: str | None = None
    checkpoint_target: str = "forward"
    use_reentrant: bool = False
    find_unused_parameters: bool = False
    static_graph: bool = False
    autocast_bf16: bool = False

    def __post_init__(self) -> None:
        if self.parallel not in PARALLEL_KINDS:
            raise ValueError(f"parallel={self.parallel!r} must be one of {list(PARALLEL_KINDS)}")
        if self.layers not in ("ours", "transformers"):
            raise ValueError(f"layers={self.layers!r} must be 'ours' or 'transformers'")
        if self.checkpointing not in (None, "full", "sqrt"):
            raise ValueError(f"checkpointing={self.checkpointing!r} must be None, 'full' or 'sqrt'")


#: DDP with checkpointing every layer: the failing configuration, its three fixes, and no checkpointing.
DDP_SCENARIOS = (
    Scenario(
        "reentrant + find_unused_parameters",
        "ddp",
        checkpointing="full",
        use_reentrant=True,
        find_unused_parameters=True,
    ),
    Scenario("fix 1: non-reentrant checkpointing", "ddp", checkpointing="full", find_unused_parameters=True),
    Scenario(
        "fix 2: static_graph=True",
        "ddp",
        checkpointing="full",
        use_reentrant=True,
        find_unused_parameters=True,
        static_graph=True,
    ),
    Scenario("fix 3: no find_unused_parameters", "ddp", checkpointing="full", use_reentrant=True),
    Scenario("no checkpointing", "ddp"),
)

#: FSDP2 without checkpointing, with our checkpoint around __call__ and around forward, and transformers'
#: own layers.
FSDP_SCENARIOS = (
    Scenario("no checkpointing", "fsdp"),
    Scenario("checkpoint wraps __call__", "fsdp", checkpointing="full", checkpoint_target="__call__"),
    Scenario("checkpoint wraps forward", "fsdp", checkpointing="full", checkpoint_target="forward"),
    Scenario("transformers' own layers", "fsdp", layers="transformers", checkpointing="full"),
)


# ------------------------------------------------------------------------------------------------------------
# The model


def _our_layer_class() -> type[nn.Module]:
    """transformers' `LlamaDecoderLayer` with our `GradientCheckpointingLayer` first in its bases.

    Our `__call__` and our wrapped `forward` come first in the MRO, so `checkpoint_target` decides what the
    checkpoint wraps; the weights, the forward and the state-dict names are transformers' own.
    """
    global _OUR_LAYER
    if _OUR_LAYER is None:
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        class CheckpointedLlamaDecoderLayer(GradientCheckpointingLayer, LlamaDecoderLayer):
            """`LlamaDecoderLayer` checkpointed by reference_impl (forward or __call__, as set)."""

        CheckpointedLlamaDecoderLayer.__module__ = __name__
        _OUR_LAYER = CheckpointedLlamaDecoderLayer
    return _OUR_LAYER


_OUR_LAYER: type[nn.Module] | None = None


def tiny_llama(spec: ModelSpec = ModelSpec(), layers: str = "ours") -> LlamaForCausalLM:
    """A seeded tiny `LlamaForCausalLM`; with layers="ours" its decoder layers are our checkpointable ones.

    Both choices hold bitwise the same weights (built from the same seed), so their gradients can be compared.
    """
    from transformers import LlamaForCausalLM

    # Every size of tiny_llama_config is set here; attn_implementation is a keyword the config's __init__
    # takes through **kwargs, which its typed signature does not show.
    config = tiny_llama_config(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=max(64, spec.seq_len),
        attn_implementation="eager",
        use_cache=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
    if layers == "ours":
        cls = _our_layer_class()
        for i, theirs in enumerate(model.model.layers):
            ours = cls(config, i)
            ours.load_state_dict(theirs.state_dict())
            model.model.layers[i] = ours
    elif layers != "transformers":
        raise ValueError(f"layers={layers!r} must be 'ours' or 'transformers'")
    return model.train()


def global_batch(spec: ModelSpec, world_size: int) -> torch.Tensor:
    """The seeded token ids of one step, (B * world_size, T); rank r trains on rows r*B ... (r+1)*B - 1."""
    generator = torch.Generator().manual_seed(spec.seed + 1)
    return torch.randint(
        0, spec.vocab_size, (spec.batch_per_rank * world_size, spec.seq_len), generator=generator
    )


def _strip(name: str) -> str:
    # DDP names parameters "module.<name>"; FSDP2 keeps the model's names.
    return name.removeprefix("module.")


def reference_gradients(
    spec: ModelSpec = ModelSpec(), world_size: int = 2, layers: str = "ours"
) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, {parameter name: gradient}) of one single-process step on the whole global batch, no
    checkpointing."""
    model = tiny_llama(spec, layers)
    ids = global_batch(spec, world_size)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return float(loss.detach()), {n: _gradient(n, p).detach().clone() for n, p in model.named_parameters()}


def _gradient(name: str, parameter: nn.Parameter) -> torch.Tensor:
    """The parameter's whole gradient (gathered from a DTensor's shards); every parameter must have one."""
    grad = parameter.grad
    if grad is None:
        raise RuntimeError(f"parameter {name!r} got no gradient in the step")
    return grad.full_tensor() if hasattr(grad, "full_tensor") else grad


def max_grad_diff(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """The largest |difference| between two {parameter name: gradient} dicts with the same names."""
    if grads.keys() != reference.keys():
        raise KeyError(f"the gradients name different parameters: {sorted(grads.keys() ^ reference.keys())}")
    return max(float((grads[n].float() - reference[n].float()).abs().max()) for n in reference)


def predicted_shard_bytes(model: nn.Module, world_size: int) -> int:
    """Bytes of parameters one rank holds under `fully_shard`: each parameter cut along dim 0 into N pieces.

    FSDP2 pads dim 0 up to a multiple of N, so a rank holds ceil(rows / N) rows of every parameter.
    """
    total = 0
    for p in model.parameters():
        rows = p.shape[0]
        total += math.ceil(rows / world_size) * (p.numel() // rows) * p.element_size()
    return total


def local_parameter_bytes(model: nn.Module) -> int:
    """Bytes of parameter storage this rank holds (the local shard of a DTensor parameter, padding
    included)."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.untyped_storage().nbytes()
    return total


# ------------------------------------------------------------------------------------------------------------
# What is counted in a step


@contextlib.contextmanager
def count_all_gathers() -> Iterator[list[int]]:
    """Count the all-gather collectives issued while the block runs; yields a one-element list [count].

    What is counted: every call of `torch.distributed.all_gather_single` (the collective FSDP2 issues, once
    per `fully_shard` group it unshards, through `dist.all_gather_single` looked up at call time) and of
    `all_gather_into_tensor` (what older FSDP2 releases called). One call gathers all the parameters of one
    group (a decoder layer, or the root's embedding, norm and head), so the count is "groups unsharded". A
    group that is already unsharded is not gathered again, and a mesh of one process issues no collective at
    all.
    """
    count = [0]
    patched = {}
    for name in ("all_gather_single", "all_gather_into_tensor"):
        original = getattr(dist, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def counting(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            count[0] += 1
            return _original(*args, **kwargs)

        patched[name] = original
        setattr(dist, name, counting)
    try:
        yield count
    finally:
        for name, original in patched.items():
            setattr(dist, name, original)


class FSDPPeakMemory(PeakMemory):
    """`PeakMemory` that also sees FSDP2 free and re-allocate its unsharded parameters.

    FSDP2 frees an unsharded parameter by resizing its storage to 0 bytes and re-allocates it by resizing it
    back (`_fsdp_param.free_storage` / `alloc_storage`), which no operator reports to a dispatch mode. While
    active, this mode wraps those two functions and updates the count of the resized storage. Without FSDP it
    is `PeakMemory`.

    Each operation is counted exactly, but across processes one thing is not in our hands: gloo most likely
    releases a collective's tensors from its own thread, so under load a buffer can be freed an operation
    later and the peak of a rank can differ by that buffer from run to run.
    """

    def __enter__(self) -> FSDPPeakMemory:
        from torch.distributed.fsdp._fully_shard import _fsdp_param, _fsdp_param_group

        self._restore = [
            (_fsdp_param, "free_storage", _fsdp_param.free_storage),
            (_fsdp_param, "alloc_storage", _fsdp_param.alloc_storage),
            (_fsdp_param_group, "alloc_storage", _fsdp_param_group.alloc_storage),
        ]
        for module, name, original in self._restore:
            setattr(module, name, self._following(original))
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for module, name, original in self._restore:
            setattr(module, name, original)

    def _following(self, resize: Callable[[torch.Tensor], None]) -> Callable[[torch.Tensor], None]:
        def resized(tensor: torch.Tensor) -> None:
            resize(tensor)
            storage = tensor.untyped_storage()
            sid = id(storage)
            if sid in self._alive:
                self.current_bytes += storage.nbytes() - self._alive[sid]
                self._alive[sid] = storage.nbytes()
                self.peak_bytes = max(self.peak_bytes, self.current_bytes)
            elif storage.nbytes():
                self._track(tensor)

        return resized


def error_line(error: BaseException) -> str:
    """`Type: first line of the message`, the way a lesson shows an error in one line."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"


# ------------------------------------------------------------------------------------------------------------
# Starting ranks


def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released). `run_ranks` needs none of
    this."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail_on_rank(rank: int, world_size: int, device: str, failing_rank: int) -> None:
    """Raise on `failing_rank` while the other ranks wait for it at a barrier: what cleanup must survive.

    The message names the rendezvous port, so a caller can check that it is free afterwards.
    """
    if rank == failing_rank:
        raise RuntimeError(f"rank {rank} fails on purpose (port {os.environ['MASTER_PORT']})")
    dist.barrier()  # waits for a rank that never comes, until the parent stops this process


#: Imported once by the forkserver, so that each rank it forks has them already (missing ones are skipped).
FORKSERVER_PRELOAD = ["reference_impl.workbook.distributed", "transformers.models.llama.modeling_llama"]


def _start_method(device: str, requested: str | None) -> str:
    method = requested or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    if method == "fork" and device == "cuda":
        raise ValueError("start_method='fork' cannot run CUDA ranks (a CUDA context does not survive a fork)")
    if method == "forkserver":
        mp.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
    return method


def _rank_main(
    rank: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    world_size: int,
    port: int,
    backend: str,
    device: str,
    folder: str,
    timeout_s: float,
) -> None:
    """The entry point of every rank: join the process group, run `fn`, write its result, always leave the
    group."""
    torch.set_num_threads(1)
    # A forked or spawned child does not inherit a seeded generator reliably: seed per rank, so results
    # repeat.
    torch.manual_seed(rank)
    # A child's output (warnings, torch's C++ logs) goes to a file, not to the parent's terminal or notebook,
    # where it would arrive in any order, or not at all (a forked Jupyter kernel's streams belong to the
    # parent).
    log = open(Path(folder) / f"rank{rank}.log", "w")  # open for the life of the process
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)  # for code that reads them
    if device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    try:
        result = fn(rank, world_size, device, *args)
        torch.save(result, Path(folder) / f"rank{rank}.pt")
    except BaseException as error:
        # When one rank fails, the others fail next (their peer is gone); the time tells the parent who was
        # first.
        (Path(folder) / f"rank{rank}.error").write_text(f"{time.time()!r} {error_line(error)}")
        raise
    finally:
        dist.destroy_process_group()


def run_ranks(
    fn: Callable[..., Any],
    *args: Any,
    world_size: int = 2,
    backend: str = "gloo",
    device: str = "cpu",
    timeout_s: float = 120.0,
    start_method: str | None = None,
) -> list[Any]:
    """Run `fn(rank, world_size, device, *args)` on `world_size` processes in one process group; return each
    result.

    `fn` must be a module-level function (a spawned child imports it). Its result is saved with `torch.save`.
    See NOTE [ How the ranks are started and stopped ]: the children are always terminated and joined, the
    port freed and the temporary folder removed, also when a rank raises (RuntimeError with the rank's error)
    or the run passes `timeout_s` (TimeoutError).
    """
    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be >= 1")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} must be 'cpu' or 'cuda'")
    method = _start_method(device, start_method)  # see NOTE [ forkserver, not fork ]
    store = dist.TCPStore("127.0.0.1", 0, world_size + 1, is_master=True, wait_for_workers=False)
    try:
        with tempfile.TemporaryDirectory(prefix="workbook-ranks-") as folder:
            context = None
            try:
                context = mp.start_processes(
                    _rank_main,
                    args=(fn, args, world_size, store.port, backend, device, folder, timeout_s),
                    nprocs=world_size,
                    join=False,
                    start_method=method,
                )
                _wait(context, time.monotonic() + timeout_s, world_size, timeout_s, Path(folder))
                return [
                    torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(world_size)
                ]
            finally:
                # children first, then the folder they write to, then the store (its port)
                if context is not None:
                    _stop(context.processes)
    finally:
        del store


def _wait(context: Any, deadline: float, world_size: int, timeout_s: float, folder: Path) -> None:
    """Join every rank; a failed rank becomes a RuntimeError naming the first failure, a late one a
    TimeoutError."""
    try:
        with _quiet_spawn_log():
            while not context.join(timeout=0.2):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world_size} ranks did not finish within timeout_s={timeout_s}")
    except ProcessException as failure:
        raise RuntimeError(_first_failure(folder, failure)) from None


@contextlib.contextmanager
def _quiet_spawn_log() -> Iterator[None]:
    """Silence torch.multiprocessing's "Terminating process ... via SIGTERM" while we join: we report the
    failure."""
    logger = logging.getLogger("torch.multiprocessing.spawn")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_failure(folder: Path, failure: ProcessException) -> str:
    """'rank R failed: Type: message' for the rank that failed first, then what the others said."""
    reports = []
    for path in folder.glob("rank*.error"):
        when, line = path.read_text().split(" ", 1)
        reports.append((float(when), int(path.stem.removeprefix("rank")), line))
    if not reports:  # killed by a signal, or failed before it could write
        return f"rank {failure.error_index} failed: {str(failure).strip().splitlines()[-1].strip()}"
    reports.sort()
    _, rank, line = reports[0]
    others = "".join(f"; then rank {r}: {text}" for _, r, text in reports[1:])
    return f"rank {rank} failed: {line}{others}"


def _stop(processes: Sequence[Any]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


# ------------------------------------------------------------------------------------------------------------
# One training step per scenario, on every rank


@dataclass
class StepResult:
    """What one rank measured in one scenario (plain Python values and CPU tensors, so it pickles)."""

    name: str
    error: str | None = None
    loss: float | None = None
    hook_calls: int | None = None
    all_gathers: int | None = None
    peak_bytes: int | None = None
    param_bytes: int | None = None
    seconds: float | None = None
    grads: dict[str, torch.Tensor] = field(default_factory=dict)


def _wrap(model: LlamaForCausalLM, scenario: Scenario, device: torch.device) -> nn.Module:
    if scenario.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=scenario.find_unused_parameters,
            static_graph=scenario.static_graph,
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_step(model: nn.Module, ids: torch.Tensor, scenario: Scenario, device: torch.device) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if scenario.autocast_bf16
        else contextlib.nullcontext()
    )
    with autocast:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach()


def run_scenario_on_rank(
    rank: int,
    world_size: int,
    device_type: str,
    scenario: Scenario,
    spec: ModelSpec,
    steps: int,
    grads: bool,
    rounds: int = 0,
) -> StepResult:
    """Build, wrap and train the tiny Llama on this rank's rows of the global batch, and measure one step.

    `steps` steps run; the first `steps - 1` warm up (FSDP2 initialises lazily in its first forward), the last
    is counted: pre-forward hook calls on the decoder layers, all-gathers (`count_all_gathers`), the exact
    peak of tensor bytes (`FSDPPeakMemory` on CPU; `torch.cuda.max_memory_allocated` on CUDA). Then `rounds`
    more steps are timed without any counting (the counting modes slow a step down); `seconds` is their
    median, or the counted step's time when rounds=0. An error in a step is caught and returned as `error`
    (type and first line), so both ranks report it and the next scenario still runs.
    """
    device = (
        torch.device(device_type, torch.cuda.current_device())
        if device_type == "cuda"
        else torch.device("cpu")
    )
    result = StepResult(scenario.name)
    # transformers wraps PreTrainedModel.to in a decorator whose stub takes the model as its first argument.
    model = tiny_llama(spec, scenario.layers).to(device)  # type: ignore[arg-type]
    if scenario.checkpointing is not None:
        set_gradient_checkpointing(
            model,
            gradient_checkpointing_kwargs={"use_reentrant": scenario.use_reentrant},
            policy=scenario.checkpointing,
            checkpoint_target=scenario.checkpoint_target,
        )
    calls = [0]

    def count_call(module: nn.Module, args: Any) -> None:
        calls[0] += 1

    for layer in model.model.layers:
        layer.register_forward_pre_hook(count_call)
    wrapped = _wrap(model, scenario, device)
    ids = global_batch(spec, world_size)[rank * spec.batch_per_rank : (rank + 1) * spec.batch_per_rank].to(
        device
    )
    try:
        for _ in range(max(steps - 1, 0)):
            _one_step(wrapped, ids, scenario, device)
        calls[0] = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        _sync(device)
        start = time.perf_counter()
        with count_all_gathers() as gathers, FSDPPeakMemory() as peak:
            loss = _one_step(wrapped, ids, scenario, device)
            _sync(device)
        seconds = [time.perf_counter() - start]
        result.peak_bytes = (
            torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else peak.peak_bytes
        )
        result.loss, result.hook_calls, result.all_gathers = float(loss), calls[0], gathers[0]
        result.param_bytes = local_parameter_bytes(model)
        if grads:
            result.grads = {_strip(n): _gradient(n, p).detach().cpu() for n, p in wrapped.named_parameters()}
        if rounds:
            seconds = []
            for _ in range(rounds):
                dist.barrier()  # start together, so one rank's time does not include waiting for the other
                _sync(device)
                start = time.perf_counter()
                _one_step(wrapped, ids, scenario, device)
                _sync(device)
                seconds.append(time.perf_counter() - start)
        result.seconds = statistics.median(seconds)
    except Exception as error:  # both ranks hit the same error; it is the lesson's material, not a crash
        result.error = error_line(error)
        if os.environ.get("WORKBOOK_DEBUG_RANKS"):
            traceback.print_exc()
    dist.barrier()
    return result


def prune_heads_on_rank(rank: int, world_size: int, device_type: str, wrapper: str) -> dict[str, Any]:
    """Try `prune_heads` on a tiny GPT-2 wrapped by DDP or FSDP2, then prune a plain one before wrapping and
    train.

    Returns {"refused": the error line (or None if it was accepted), "heads_after_refusal": heads per layer of
    the wrapped model, "heads_pruned_first": heads per layer of the model pruned before wrapping, "loss": its
    loss}.
    """
    from transformers import GPT2LMHeadModel

    from reference_impl.pruning_heads import head_counts, prune_heads

    def tiny_gpt2() -> GPT2LMHeadModel:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            config = tiny_gpt2_config(
                n_layer=2,
                n_embd=16,
                n_head=4,
                vocab_size=40,
                n_positions=16,
                attn_implementation="eager",
                resid_pdrop=0.0,  # no dropout: the loss below is the same on every run
                embd_pdrop=0.0,
                attn_pdrop=0.0,
            )
            return GPT2LMHeadModel(config)

    def wrap(model: GPT2LMHeadModel) -> nn.Module:
        if wrapper == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device_type, (world_size,))
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    model = tiny_gpt2()
    wrapped = wrap(model)
    try:
        prune_heads(wrapped, {0: [1]})
        refused = None
    except TypeError as error:
        refused = error_line(error)
    heads_after_refusal = head_counts(model)

    model = tiny_gpt2()
    prune_heads(model, {0: [1]})  # before wrapping: every rank prunes the same heads of its own copy
    wrapped = wrap(model)
    ids = torch.arange(8).view(1, 8) + rank
    loss = wrapped(input_ids=ids, labels=ids).loss
    loss.backward()
    return {
        "refused": refused,
        "heads_after_refusal": heads_after_refusal,
        "heads_pruned_first": head_counts(model),
        "loss": float(loss.detach()),
    }


def _run_scenarios_on_rank(
    rank: int,
    world_size: int,
    device: str,
    scenarios: Sequence[Scenario],
    spec: ModelSpec,
    steps: int,
    grads: bool,
    rounds: int,
) -> list[dict[str, Any]]:
    return [
        asdict(run_scenario_on_rank(rank, world_size, device, s, spec, steps, grads, rounds))
        for s in scenarios
    ]


def run_scenarios(
    scenarios: Sequence[Scenario],
    spec: ModelSpec = ModelSpec(),
    *,
    world_size: int = 2,
    backend: str = "gloo",
    device: str = "cpu",
    steps: int = 4,
    grads: bool = True,
    rounds: int = 0,
    timeout_s: float = 120.0,
    start_method: str | None = None,
) -> list[list[dict[str, Any]]]:
    """Run every scenario, one after the other, on `world_size` fresh processes; results[rank][scenario] as
    dicts.

    Each dict has the fields of `StepResult`: error, loss, hook_calls, all_gathers, peak_bytes, param_bytes,
    seconds and (with grads=True) the full gradient of every parameter by name.
    """
    return run_ranks(
        _run_scenarios_on_rank,
        tuple(scenarios),
        spec,
        steps,
        grads,
        rounds,
        world_size=world_size,
        backend=backend,
        device=device,
        timeout_s=timeout_s,
        start_method=start_method,
    )
