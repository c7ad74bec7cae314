"""Which base model a job starts from, checked at submit.

A job names `config.base`: a base held by workers (`v2`), `none` (random init), or
`job:<id>`, an earlier fine-tune of the same team whose adapters it continues. A
continuation runs on the base its parent ran on, so `Job.base` (what a worker must hold)
is resolved here, once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from scheduler.errors import InvalidInput
from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from worker.training.config import FinetuneConfig, parent_job_id

FIELD = "config.base"
# Adapters only fit a model of the same shape, adapted the same way, on the same
# initialisation (a `none` base is a seeded random init).
CONTINUE_KEYS = (
    "model_size",
    "lora_rank",
    "lora_alpha",
    "lora_ffn",
    "lora_trainable_modules",
    "seed",
)
STAGES = {"s1": {"s1"}, "s2": {"s2"}, "both": {"s1", "s2"}}


def resolve_base(session: Session, team_id: str, config: dict[str, Any]) -> str:
    """The base a worker must hold for this config; 422 naming `config.base` if unusable."""
    wanted = FinetuneConfig.model_validate(config)
    parent_id = parent_job_id(wanted.base)
    if parent_id is None:
        return wanted.base
    parent = session.get(Job, parent_id)
    # Another team's job is reported exactly like a missing one.
    if parent is None or parent.team_id != team_id or parent.kind != "gpt-sovits-finetune":
        raise InvalidInput(f"config.base: no fine-tune job '{parent_id}' in this team", field=FIELD)
    if parent.state != JobState.SUCCEEDED:
        raise InvalidInput(
            f"config.base: job '{parent_id}' is {parent.state}; only a succeeded job's result "
            "can be continued",
            field=FIELD,
        )
    previous = FinetuneConfig.model_validate(parent.config)
    changed = [key for key in CONTINUE_KEYS if getattr(previous, key) != getattr(wanted, key)]
    if changed:
        raise InvalidInput(
            f"config.base: job '{parent_id}' was trained with other {', '.join(changed)}; "
            "a continuation must keep them",
            field=FIELD,
        )
    missing = STAGES[wanted.stage] - STAGES[previous.stage]
    if missing:
        raise InvalidInput(
            f"config.base: job '{parent_id}' did not train stage {', '.join(sorted(missing))}",
            field=FIELD,
        )
    return parent.base
