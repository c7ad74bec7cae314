"""Several ranks under torch.distributed: the launcher and the per-rank context."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        """True when there is more than one rank."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that checkpoints, logs and reports."""
        return self.rank == 0

    def all_true(self, flag: bool) -> bool:
        """True only if flag holds on every rank."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0)

    def min_int(self, value: int) -> int:
        """The smallest of every rank's value."""
        if not self.active:
            return value
        box = torch.tensor([float(value)], device=self._comm_device())
        dist.all_reduce(box, op=dist.ReduceOp.MIN)
        return int(box.item())

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a float tensor over ranks."""
        if not self.active:
            return values
        values = values.to(self._comm_device(), torch.float32).clone()
        dist.all_reduce(values)
        return values / self.world_size

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of obj on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """obj from every rank, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def pick_device(rank: int) -> torch.device:
    """cuda:rank when GPUs are present, else the CPU."""
    return torch.device(f"cuda:{rank}") if torch.cuda.is_available() else torch.device("cpu")


def free_port() -> int:
    """An unused localhost TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _init(rank: int, world_size: int, addr: str, port: int) -> DistContext:
    device = pick_device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        # CPU ranks share one host's cores; oversubscribed threads spin against each other.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world_size
    )
    return DistContext(rank, world_size, device)


def _child(
    rank: int, world_size: int, addr: str, port: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    # The same variables torchrun sets, for code that reads them.
    os.environ.update(
        MASTER_ADDR=addr,
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    ctx = _init(rank, world_size, addr, port)
    try:
        fn(ctx, *args)
        # Every rank reaches the end before any tears its connections down.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch_distributed(
    world_size: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...] = (),
    main_args: tuple[Any, ...] | None = None,
) -> Any:
    """Run fn(ctx, *args) on world_size ranks like torchrun; rank 0 runs in this process.

    Ranks 1.. are spawned with torch.multiprocessing (so fn and args must pickle); rank 0 gets
    main_args when given, which lets it hold callbacks that cannot cross processes. Returns
    rank 0's result; raises if any rank fails.
    """
    addr, port = "127.0.0.1", free_port()
    context = mp.get_context("spawn")
    children = [
        context.Process(target=_child, args=(rank, world_size, addr, port, fn, args), daemon=True)
        for rank in range(1, world_size)
    ]
    for child in children:
        child.start()
    ctx = _init(0, world_size, addr, port)
    try:
        try:
            result = fn(ctx, *(main_args if main_args is not None else args))
        except BaseException:
            # The other ranks would wait forever in a collective for this one.
            for child in children:
                child.terminate()
            raise
        try:
            dist.barrier()  # as in _child
        except RuntimeError:
            pass  # a rank failed after its last collective; its exit code is reported below
    finally:
        # The other ranks end first: this rank hosts the rendezvous store, and a rank still
        # tearing its group down when the store and connections vanish aborts (SIGABRT).
        for child in children:
            child.join(timeout=120)
        dist.destroy_process_group()
    failed = [c.exitcode for c in children if c.exitcode != 0]
    if failed:
        raise RuntimeError(f"distributed ranks failed with exit codes {failed}")
    return result
