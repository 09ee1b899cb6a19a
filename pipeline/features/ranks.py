"""Many processes, one cache: under torchrun each process extracts every N-th pending shard of
the same cache directory (docs/many-gpus.md); alone, nothing here imports torch."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that holds the cache lock, prepares the cache and reports."""
        return self.rank == 0

    def share(self, items: list) -> list:
        """This process's part of `items`: every world-th, from its rank."""
        return items[self.rank :: self.world]


def from_environment() -> Ranks:
    env = os.environ
    return Ranks(
        int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    )


@contextlib.contextmanager
def process_group(ranks: Ranks) -> Iterator[None]:
    """torch.distributed for the run's few small collectives: gloo, on CPU tensors, whatever
    device computes the features (no feature ever crosses processes: shards go to disk)."""
    if ranks.world == 1:
        yield
        return
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_agree(ranks: Ranks, ok: bool) -> bool:
    """True when every process is ok: a failure on one stops all of them cleanly."""
    if ranks.world == 1:
        return ok
    import torch
    import torch.distributed as dist

    flag = torch.tensor([int(ok)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def summed(ranks: Ranks, totals: dict[str, float]) -> dict[str, float]:
    """Totals added over the processes (seconds are then process-seconds)."""
    if ranks.world == 1:
        return totals
    import torch
    import torch.distributed as dist

    keys = sorted(totals)
    values = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(keys, values.tolist(), strict=True))
