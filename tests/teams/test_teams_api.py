"""Teams and API keys over HTTP, on both databases."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support.helpers import admin_headers, bearer


def test_create_team_shows_key_once_and_key_authenticates(client: TestClient) -> None:
    created = client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "alpha" and len(body["api_key"]) > 43
    assert created.headers["location"] == "/v1/teams/alpha"

    team = client.get("/v1/teams/alpha", headers=bearer(body["api_key"]))
    assert team.status_code == 200
    assert "api_key" not in team.text and body["api_key"] not in team.text
    assert [k["id"] for k in team.json()["keys"]] == [body["key_id"]]


def test_admin_endpoints_refuse_team_keys_and_missing_keys(
    client: TestClient, team_key: str
) -> None:
    assert client.get("/v1/teams").status_code == 401
    assert client.get("/v1/teams", headers=bearer("gw_nope_nope")).status_code == 401
    assert client.get("/v1/teams", headers=bearer(team_key)).status_code == 403
    listed = client.get("/v1/teams", headers=admin_headers())
    assert [t["name"] for t in listed.json()] == ["alpha"]


def test_other_team_is_not_found_not_forbidden(client: TestClient, team_key: str) -> None:
    client.post("/v1/teams", json={"name": "beta"}, headers=admin_headers())
    assert client.get("/v1/teams/beta", headers=bearer(team_key)).status_code == 404


def test_revoked_key_is_rejected_and_new_key_works(client: TestClient, team_key: str) -> None:
    new = client.post("/v1/teams/alpha/keys", headers=admin_headers())
    assert new.status_code == 201
    old_id = team_key.split("_")[1]
    revoked = client.delete(f"/v1/teams/alpha/keys/{old_id}", headers=admin_headers())
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.get("/v1/teams/alpha", headers=bearer(team_key)).status_code == 401
    assert client.get("/v1/teams/alpha", headers=bearer(new.json()["api_key"])).status_code == 200


def test_tampered_key_secret_is_rejected(client: TestClient, team_key: str) -> None:
    tampered = team_key[:-1] + ("A" if team_key[-1] != "A" else "B")
    assert client.get("/v1/teams/alpha", headers=bearer(tampered)).status_code == 401


def test_bad_team_input_names_the_field(client: TestClient, team_key: str) -> None:
    bad = client.post("/v1/teams", json={"name": "Not Valid!"}, headers=admin_headers())
    assert bad.status_code == 422 and bad.json()["field"] == "name"
    dup = client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    assert dup.status_code == 409 and "alpha" in dup.json()["detail"]
    unknown = client.post("/v1/teams/nobody/keys", headers=admin_headers())
    assert unknown.status_code == 404 and unknown.json()["field"] == "team"
