"""Run context: device, seeds, progress and rank come from here, never from module-level state.

Loops take a RunContext so that torchrun / DDP can drive them later: seeds are derived per rank and
only rank 0 writes outputs or draws progress bars.
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class RunContext:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    show_progress: bool = False
    log: dict[str, Any] = field(default_factory=dict)  # method-specific records (attack success, certificate…)

    @classmethod
    def create(cls, seed: int = 0, device: str | None = None, show_progress: bool = False) -> RunContext:
        """Context for this process. Under torchrun (WORLD_SIZE > 1) it joins the process group: gloo on CPU,
        nccl on CUDA, one GPU per local rank. device None: CUDA when available, else CPU."""
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if dev.type == "cuda" and not torch.cuda.is_available():
            from medunlearn.errors import ConfigError

            raise ConfigError("Expected a CUDA GPU for device 'cuda', but torch sees none; use device 'cpu'.")
        if world > 1:
            dev = init_distributed(dev)
        return cls(device=dev, seed=seed, rank=rank, world_size=world, show_progress=show_progress and rank == 0)

    @property
    def backend(self) -> str:
        return torch.distributed.get_backend() if self.world_size > 1 and _dist_ready() else "none"

    def run_record(self) -> dict[str, Any]:
        """What provenance records about how the run was executed."""
        return {"world_size": self.world_size, "backend": self.backend, "device": str(self.device),
                "rank_seeds": f"seed * 1000 + rank (rank 0: {self.rank_seed - self.rank})"}

    def barrier(self) -> None:
        if self.world_size > 1 and _dist_ready():
            torch.distributed.barrier()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def rank_seed(self) -> int:
        return self.seed * 1000 + self.rank

    def seed_everything(self) -> None:
        seed_everything(self.rank_seed)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Yields advance(n). A rich progress bar on rank 0 when show_progress, else a no-op."""
        if not self.show_progress:
            yield _no_progress
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=False) as bar:
            task = bar.add_task(description, total=total)

            def advance(n: int = 1) -> None:
                bar.advance(task, n)

            yield advance


def _no_progress(n: int = 1) -> None:
    """advance(n) when no progress bar is shown."""


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group once per process; returns this rank's device."""
    import atexit

    dist = torch.distributed
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not _dist_ready():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(lambda: dist.destroy_process_group() if _dist_ready() else None)
    return device


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0: the only process that writes or prints results."""
    return int(os.environ.get("RANK", 0)) == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
