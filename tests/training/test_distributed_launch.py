"""The two-rank CPU launcher (gloo): every rank's end is awaited, and a failed rank is named
by its exit code instead of a connection error or a hang."""

from __future__ import annotations

import pytest

from worker.training.distributed import DistContext, launch_distributed


def _fails_on(ctx: DistContext, rank: int) -> int:
    """Agree on a value, then fail on `rank` after that last collective."""
    agreed = ctx.min_int(ctx.rank + 10)
    if ctx.rank == rank:
        raise ValueError(f"rank {rank} failed")
    return agreed


def test_every_rank_finishing_returns_rank_zeros_result() -> None:
    assert launch_distributed(2, _fails_on, args=(-1,)) == 10


def test_a_rank_failing_after_the_last_collective_is_reported_by_exit_code() -> None:
    with pytest.raises(RuntimeError, match=r"distributed ranks failed with exit codes \[1\]"):
        launch_distributed(2, _fails_on, args=(1,))
