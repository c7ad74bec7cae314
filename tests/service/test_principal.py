"""What a caller sees: the admin every team, a team itself, the worker fleet no team."""

from __future__ import annotations

import pytest

from scheduler.deps import Principal
from scheduler.errors import Forbidden
from scheduler.teams.models import Team


def test_the_admin_sees_every_team_and_a_team_only_itself() -> None:
    team = Team(id="T1", name="alpha")
    assert Principal("admin").team_scope is None
    assert Principal("team", team).team_scope == "T1"
    assert (Principal("admin").label, Principal("team", team).label) == ("admin", "team alpha")


def test_the_worker_fleet_is_never_scoped_to_every_team() -> None:
    """None would mean "every team": a fleet principal that reached a user route by mistake
    must be refused, not shown everything."""
    with pytest.raises(Forbidden):
        _ = Principal("worker_fleet").team_scope
    assert Principal("worker_fleet").label == "worker fleet"
