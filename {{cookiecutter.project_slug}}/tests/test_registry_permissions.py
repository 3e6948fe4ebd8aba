"""`make registry-permissions`: the plan each identity gets, the names it accepts, and what it writes.

The server side (a real `mlflow server --app-name basic-auth` refusing each identity what it must not do) is
tested by the template's own suite; here the decisions a team may edit and the refusals before any request.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from {{ cookiecutter.package_name }}.inputs import InputError
from {{ cookiecutter.package_name }}.registry import RegistryError
from {{ cookiecutter.package_name }}.registry_permissions import (
    Grant,
    Outcome,
    apply,
    identities,
    own_grants,
    plan,
    set_grant,
    table,
    unplanned_writers,
)
from {{ cookiecutter.package_name }}.settings import Settings

MODEL = "sales"
ADMIN = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "admin-password-1"}


def matrix(grants: list[Grant]) -> dict[tuple[str, str], str]:
    return {(grant.username, f"{grant.resource_type} {grant.resource}"): grant.permission for grant in grants}


def test_only_the_release_identity_may_edit_the_environments_and_training_edits_only_its_own():
    # given the default identities and one reviewer
    users = identities({"MLFLOW_REVIEWERS": "alice"})
    # when
    planned = matrix(plan(MODEL, users))
    # then
    objects = ["experiment sales", "registered_model sales", "registered_model sales-staging",
               "registered_model sales-production"]  # fmt: skip
    expected = {
        "trainer": ["EDIT", "EDIT", "READ", "READ"],
        "release": ["EDIT", "EDIT", "EDIT", "EDIT"],
        "gate": ["READ", "READ", "READ", "READ"],
        "alice": ["READ", "READ", "READ", "READ"],
    }
    assert planned == {
        (user, name): p for user, ps in expected.items() for name, p in zip(objects, ps, strict=True)
    }


def test_identities_come_from_the_environment_with_defaults():
    env = {"MLFLOW_TRAINING_USER": "ci-train", "MLFLOW_REVIEWERS": "alice, bob.smith@example.com"}
    assert identities(env) == {
        "training": ["ci-train"],
        "release": ["release"],
        "gate": ["gate"],
        "reviewer": ["alice", "bob.smith@example.com"],
    }
    assert identities({})["reviewer"] == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLFLOW_GATE_USER": "gate;id"}, "MLFLOW_GATE_USER='gate;id' is not a valid name"),
        ({"MLFLOW_RELEASE_USER": "release`id`"}, "MLFLOW_RELEASE_USER='release`id`' is not a valid name"),
        ({"MLFLOW_REVIEWERS": "alice,\nbob"}, "MLFLOW_REVIEWERS='\\nbob' is not a valid name"),
        ({"MLFLOW_REVIEWERS": "alice,,bob"}, "MLFLOW_REVIEWERS='' is not a valid name"),
        ({"MLFLOW_REVIEWERS": "alice bob"}, "MLFLOW_REVIEWERS='alice bob' is not a valid name"),
        ({"MLFLOW_RELEASE_USER": "trainer"}, "user 'trainer' is both the training and the release identity"),
        (
            {"MLFLOW_REVIEWERS": "alice,release"},
            "user 'release' is both the release and the reviewer identity",
        ),
    ],
    ids=[
        "semicolon",
        "substitution",
        "newline",
        "empty",
        "space",
        "release-is-trainer",
        "reviewer-is-release",
    ],
)
def test_a_bad_or_shared_name_is_refused_in_one_line(env, message):
    with pytest.raises(InputError) as refused:
        identities(env)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def settings_at(tmp_path, uri: str, model: str = MODEL) -> Settings:
    return replace(Settings.in_folder(tmp_path, model), tracking_uri=uri)


@pytest.mark.parametrize(
    ("uri", "model", "env", "error", "message"),
    [
        (None, MODEL, ADMIN, RegistryError, "is a local store without users or permissions"),
        ("http://127.0.0.1:9", "m\nx", ADMIN, InputError, "MODEL_NAME='m\\nx' is not a valid name"),
        (
            "http://127.0.0.1:9",
            MODEL,
            {},
            RegistryError,
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        ),
        (
            "http://127.0.0.1:9",
            MODEL,
            {**ADMIN, "MLFLOW_REVIEWERS": "a|b"},
            InputError,
            "MLFLOW_REVIEWERS='a|b'",
        ),
    ],
    ids=["local-store", "model-name", "no-admin-credentials", "bad-reviewer"],
)
def test_the_command_refuses_before_it_contacts_or_creates_a_store(tmp_path, uri, model, env, error, message):
    settings = settings_at(tmp_path, uri or f"sqlite:///{tmp_path / 'mlflow.db'}", model)
    with pytest.raises(error) as refused:
        apply(settings, env)
    assert message in str(refused.value)
    assert not (tmp_path / "mlflow.db").exists()


class FakeServer:
    """Records what the command would write; answers `effective` from a table."""

    def __init__(self, effective: dict[tuple[str, str], str] | None = None) -> None:
        self.writes: list[tuple] = []
        self.answers = effective or {}

    def grant(self, *args: str) -> None:
        self.writes.append(("grant", *args))

    def update(self, *args: object) -> None:
        self.writes.append(("update", *args))

    def effective(self, username: str, resource_type: str, key: str) -> str:
        return self.answers.get((username, key), "READ")


def user_with(*grants: tuple[str, str, str], role_name: str = "__user_7__") -> dict:
    permissions = [
        {"id": number, "resource_type": kind, "resource_pattern": key, "permission": permission}
        for number, (kind, key, permission) in enumerate(grants, start=100)
    ]
    return {"id": 7, "username": "trainer", "roles": [{"name": role_name, "permissions": permissions}]}


def test_a_grant_already_held_is_left_alone_and_reported_unchanged():
    server = FakeServer()
    grant = Grant("gate", "trainer", "registered_model", "sales-production", "READ")
    outcome = set_grant(server, user_with(("registered_model", "sales-production", "READ")), grant, {})
    assert server.writes == [] and outcome.change == "unchanged"


def test_a_creators_manage_is_lowered_in_place():
    # given a trainer who created the production model and so holds MANAGE on it
    server = FakeServer()
    grant = Grant("training", "trainer", "registered_model", "sales-production", "READ")
    # when
    outcome = set_grant(server, user_with(("registered_model", "sales-production", "MANAGE")), grant, {})
    # then
    assert server.writes == [("update", 100, "READ")]
    assert outcome.change == "changed from MANAGE"


def test_experiment_grants_are_keyed_by_the_experiments_id():
    server = FakeServer()
    grant = Grant("training", "trainer", "experiment", "sales", "EDIT")
    outcome = set_grant(server, user_with(), grant, {"sales": "42"})
    assert server.writes == [("grant", "trainer", "experiment", "42", "EDIT")]
    assert outcome.change == "granted"


def test_only_the_users_own_role_counts_as_its_grant():
    shared = user_with(("registered_model", "sales", "EDIT"), role_name="data-team")
    assert own_grants(shared) == {}
    assert list(own_grants(user_with(("registered_model", "sales", "EDIT")))) == [
        ("registered_model", "sales")
    ]


def test_anyone_outside_the_plan_who_can_write_is_named_with_the_fix():
    users = {
        "trainer": {"is_admin": False},
        "mallory": {"is_admin": False},
        "root": {"is_admin": True},
        "viewer": {"is_admin": False},
    }
    server = FakeServer({("mallory", "sales-production"): "EDIT"})
    found = unplanned_writers(server, users, {"trainer"}, {"sales": "1"}, "sales")
    assert len(found) == 1
    assert found[0].startswith(
        "mallory is none of the identities but gets EDIT on registered_model sales-production"
    )
    assert "revoke_user_permission('mallory', 'registered_model', 'sales-production')" in found[0]


def test_the_table_shows_identity_object_permission_and_change():
    outcomes = [
        Outcome(
            Grant("training", "trainer", "registered_model", "sales-production", "READ"), "MANAGE", "READ"
        ),
        Outcome(Grant("release", "release", "experiment", "sales", "EDIT"), None, "EDIT"),
    ]
    assert table(outcomes).splitlines() == [
        "identity  user     object                             permission  change",
        "training  trainer  registered_model sales-production  READ        changed from MANAGE",
        "release   release  experiment sales                   EDIT        granted",
    ]
