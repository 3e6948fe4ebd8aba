"""`make registry-permissions`: least privilege on the shared MLflow server, set by an admin, enforced by it.

MLflow's basic-auth permissions (READ < USE < EDIT < MANAGE) are per experiment and per registered model, and
moving an alias needs only EDIT. So what an environment runs lives in its own registered model (see
`registry`), and this command gives each identity exactly what its jobs need:

  training   EDIT on the experiment and `<model>` (register versions, log runs, evidence), READ elsewhere
  release    EDIT on the experiment and all three models (copy, alias, approval and history tags)
  gate       READ on everything
  reviewers  READ on everything (people: MLFLOW_REVIEWERS)

It creates the experiment and the three models as the admin when missing (whoever creates one gets MANAGE on
it), writes every grant explicitly (a MANAGE left by a pre-creating trainer is lowered), then asks the server
for each identity's effective permission and refuses when any differs from the plan. Users are made by
the platform team: the command cannot know their passwords, so it refuses while one is missing.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.inputs import InputError
from {{ cookiecutter.package_name }}.settings import DEFAULT_MODEL_NAME, Settings, shareable_uri, variable

# Role -> (environment variable naming its user, default user).
CI_IDENTITIES = {
    "training": ("MLFLOW_TRAINING_USER", "trainer"),
    "release": ("MLFLOW_RELEASE_USER", "release"),
    "gate": ("MLFLOW_GATE_USER", "gate"),
}
REVIEWERS = "MLFLOW_REVIEWERS"  # comma-separated people who read everything
EXPERIMENT, REGISTERED_MODEL = "experiment", "registered_model"
READ, EDIT = "READ", "EDIT"
# Letters, digits and . _ @ + - : a user name can go in a log line or a shell without quoting.
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RANK = {"NO_PERMISSIONS": 0, READ: 1, "USE": 2, EDIT: 3, "MANAGE": 4}
# MLflow's auth REST API (mlflow.server.auth.routes), called directly to tell "no auth" from "not allowed".
GET_USER = "/api/2.0/mlflow/users/get"
LIST_USERS = "/api/2.0/mlflow/users/list"
GRANT = "/api/3.0/mlflow/users/permissions/grant"
EFFECTIVE = "/api/3.0/mlflow/users/permissions/get"
UPDATE_GRANT = "/api/3.0/mlflow/roles/permissions/update"
# Where the server keeps a user's own grants: a role only it holds (mlflow.server.auth.sqlalchemy_store).
PERSONAL_ROLE = "__user_{id}__"


@dataclass(frozen=True)
class Grant:
    """One line of the plan: `username` (playing `role`) gets `permission` on one experiment or model."""

    role: str
    username: str
    resource_type: str  # EXPERIMENT or REGISTERED_MODEL
    resource: str  # the experiment's or the model's name
    permission: str


@dataclass(frozen=True)
class Outcome:
    grant: Grant
    before: str | None  # the user's own grant before this run (None: there was none)
    effective: str  # what the server answers for this user and object after the run

    @property
    def change(self) -> str:
        if self.before == self.grant.permission:
            return "unchanged"
        return "granted" if self.before is None else f"changed from {self.before}"


def checked_name(value: str, variable_name: str, pattern: re.Pattern[str], example: str) -> str:
    """A user or model name, whole: no spaces, newlines, quotes or shell metacharacters."""
    if not pattern.fullmatch(value):
        raise InputError(
            f"{variable_name}={value!r} is not a valid name: use letters, digits and . _ - (e.g. {example})"
        )
    return value


def identities(env: Mapping[str, str]) -> dict[str, list[str]]:
    """Role -> its users, from the environment (defaults for the CI identities; reviewers may be none)."""
    found = {
        role: [checked_name(variable(name, env) or default, name, USERNAME, default)]
        for role, (name, default) in CI_IDENTITIES.items()
    }
    listed = variable(REVIEWERS, env)
    found["reviewer"] = (
        [checked_name(name.strip(" "), REVIEWERS, USERNAME, "alice,bob") for name in listed.split(",")]
        if listed
        else []
    )
    holders: dict[str, str] = {}
    for role, users in found.items():
        for user in users:
            if user in holders:
                raise InputError(
                    f"user {user!r} is both the {holders[user]} and the {role} identity: give each its own"
                    f" user ({', '.join(name for name, _ in CI_IDENTITIES.values())}, {REVIEWERS})"
                )
            holders[user] = role
    return found


def objects(model_name: str) -> list[tuple[str, str]]:
    """What the permissions cover: the experiment training logs to, the model and its environments' models."""
    models = [model_name, *(registry.environment_model(model_name, env) for env in registry.ENVIRONMENTS)]
    return [(EXPERIMENT, model_name), *((REGISTERED_MODEL, model) for model in models)]


def planned_permission(role: str, resource: str, model_name: str) -> str:
    """The matrix: training edits its experiment and `<model>`; release edits everything; the rest read."""
    if role == "release":
        return EDIT
    if role == "training" and resource == model_name:  # the experiment and the model share the name
        return EDIT
    return READ


def plan(model_name: str, users: Mapping[str, list[str]]) -> list[Grant]:
    """Every grant, in table order: identity by identity, object by object."""
    return [
        Grant(role, user, resource_type, resource, planned_permission(role, resource, model_name))
        for role, names in users.items()
        for user in names
        for resource_type, resource in objects(model_name)
    ]


def table(outcomes: list[Outcome]) -> str:
    rows = [("identity", "user", "object", "permission", "change")] + [
        (
            o.grant.role,
            o.grant.username,
            f"{o.grant.resource_type} {o.grant.resource}",
            o.grant.permission,
            o.change,
        )
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


class AuthServer:
    """MLflow's basic-auth REST API (mlflow.server.auth.routes), called as the admin in MLFLOW_TRACKING_*.

    Called directly: MLflow's own AuthServiceClient imports the server app, which needs Flask-WTF here too.
    """

    def __init__(self, uri: str) -> None:
        from mlflow.utils.credentials import get_default_host_creds

        self.uri, self.creds = uri, get_default_host_creds(uri)

    def request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        """An auth endpoint's JSON; an error answer raises MLflow's RestException (with its error code)."""
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        response = verify_rest_response(http_request(self.creds, endpoint, method, **kwargs), endpoint)
        return response.json() if response.content else {}

    def check_admin(self, admin: str) -> None:
        """Refuse unless this server runs the basic-auth app and the caller is one of its admins."""
        from mlflow.utils.rest_utils import http_request

        response = http_request(self.creds, GET_USER, "GET", params={"username": admin}, max_retries=0)
        where = shareable_uri(self.uri)
        if response.status_code == 404 and "json" not in response.headers.get("Content-Type", ""):
            raise registry.RegistryError(
                f"{where} has no user accounts: start the shared tracking server with"
                " `mlflow server --app-name basic-auth` (docs/platform-team.md), then re-run"
            )
        if response.status_code == 401:
            raise registry.RegistryError(
                f"{where} refused MLFLOW_TRACKING_USERNAME={admin!r} with that password: set an admin's"
                " credentials in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            )
        if response.status_code != 200 or not response.json().get("user", {}).get("is_admin"):
            raise registry.RegistryError(
                f"MLFLOW_TRACKING_USERNAME={admin!r} is not an admin of {where}: run this command with"
                " an admin's credentials (the platform team's)"
            )

    def users(self) -> dict[str, dict[str, Any]]:
        """Every user by name, with `is_admin` and its roles' grants."""
        return {user["username"]: user for user in self.request("GET", LIST_USERS).get("users", [])}

    def grant(self, username: str, resource_type: str, key: str, permission: str) -> None:
        body = {
            "username": username,
            "resource_type": resource_type,
            "resource_id": key,
            "permission": permission,
        }
        self.request("POST", GRANT, json=body)

    def update(self, grant_id: int, permission: str) -> None:
        self.request("PATCH", UPDATE_GRANT, json={"role_permission_id": grant_id, "permission": permission})

    def effective(self, username: str, resource_type: str, key: str) -> str:
        """What the server's own check resolves for this user: every role, DENY and the default folded in."""
        params = {"username": username, "resource_type": resource_type, "resource_id": key}
        return self.request("GET", EFFECTIVE, params=params)["permission"]


def checked_users(users: Mapping[str, dict[str, Any]], names: list[str], where: str) -> None:
    """Refuse when a named user is missing (its password is the platform team's) or is an admin."""
    missing = [name for name in names if name not in users]
    if missing:
        raise registry.RegistryError(
            f"no user {', '.join(map(repr, missing))} on {where}: the platform team creates it with its own"
            " password (as an admin: the MLflow UI's /signup page or AuthServiceClient.create_user), stores"
            " that as the job's MLFLOW_TRACKING_PASSWORD secret, then re-runs this"
        )
    admins = [name for name in names if users[name].get("is_admin")]
    if admins:
        raise registry.RegistryError(
            f"{', '.join(map(repr, admins))}: an admin passes every permission check, so an identity must be"
            " a user without admin rights: give it its own user"
        )


def own_grants(user: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(resource type, id) -> the grant a user holds itself, in its personal role (not via shared roles)."""
    personal = PERSONAL_ROLE.format(id=user["id"])
    return {
        (grant["resource_type"], grant["resource_pattern"]): grant
        for role in user.get("roles", [])
        if role["name"] == personal
        for grant in role.get("permissions", [])
    }


def ensure_objects(client: Any, model_name: str) -> tuple[dict[str, str], list[str]]:
    """Create what is missing as the admin (so no identity holds MANAGE as its creator); name -> the id grants
    are keyed by (an experiment's id, a model's name), and what was created."""
    created = []
    experiment = client.get_experiment_by_name(model_name)
    if experiment is None:
        keys = {model_name: client.create_experiment(model_name)}
        created.append(f"experiment {model_name}")
    else:
        keys = {model_name: experiment.experiment_id}
    for resource_type, name in objects(model_name):
        if resource_type == REGISTERED_MODEL and not _model_exists(client, name):
            registry.ensure_model(client, name)
            created.append(f"registered model {name}")
    return keys, created


def _model_exists(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True


def apply(settings: Settings, env: Mapping[str, str] | None = None) -> int:
    """Entry point of `make registry-permissions`: create, grant, verify, print the matrix; 0 if it holds."""
    env = os.environ if env is None else env
    model_name = checked_name(settings.model_name, "MODEL_NAME", MODEL_NAME, DEFAULT_MODEL_NAME)
    grants = plan(model_name, identities(env))
    where = shareable_uri(settings.tracking_uri)
    if not settings.tracking_uri.startswith(("http://", "https://")):
        raise registry.RegistryError(
            f"MLFLOW_TRACKING_URI={where} is a local store without users or permissions: point it at the"
            " shared tracking server (started with `mlflow server --app-name basic-auth`)"
        )
    admin = variable("MLFLOW_TRACKING_USERNAME", env)
    if admin is None or variable("MLFLOW_TRACKING_PASSWORD", env) is None:
        raise registry.RegistryError(
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an admin of the tracking server"
            " (the platform team's credentials), then re-run"
        )
    client = registry.connect(settings)
    server = AuthServer(settings.tracking_uri)
    server.check_admin(admin)
    users = server.users()
    checked_users(users, sorted({grant.username for grant in grants}), where)
    experiment_ids, created = ensure_objects(client, model_name)
    outcomes = [set_grant(server, users[grant.username], grant, experiment_ids) for grant in grants]
    print(table(outcomes))
    changed = sum(outcome.change != "unchanged" for outcome in outcomes)
    if created or changed:
        made = f"created {', '.join(created)}; " if created else ""
        print(f"{where}: {made}{changed} of {len(outcomes)} permissions set, the others were already so")
    else:
        print(f"{where}: nothing to change, every permission is already as planned")
    problems = [
        not_as_planned(outcome) for outcome in outcomes if outcome.effective != outcome.grant.permission
    ]
    problems += unplanned_writers(
        server, users, {grant.username for grant in grants}, experiment_ids, model_name
    )
    problems += squatted_environments(client, outcomes, model_name)
    for problem in problems:
        print(f"registry-permissions: {problem}", file=sys.stderr)
    return 1 if problems else 0


def set_grant(
    server: AuthServer, user: Mapping[str, Any], grant: Grant, experiment_ids: Mapping[str, str]
) -> Outcome:
    """Write one grant unless the user already holds exactly it; then read back what the server enforces."""
    key = experiment_ids[grant.resource] if grant.resource_type == EXPERIMENT else grant.resource
    existing = own_grants(user).get((grant.resource_type, key))
    if existing is None:
        server.grant(grant.username, grant.resource_type, key, grant.permission)
    elif existing["permission"] != grant.permission:
        server.update(existing["id"], grant.permission)
    before = None if existing is None else existing["permission"]
    return Outcome(grant, before, server.effective(grant.username, grant.resource_type, key))


def not_as_planned(outcome: Outcome) -> str:
    grant = outcome.grant
    return (
        f"{grant.username} ({grant.role}) gets {outcome.effective} on {grant.resource_type} {grant.resource},"
        f" not {grant.permission}: a shared role changes it, or the server's default_permission is above"
        " READ; set default_permission = READ in its auth config, remove the role, then re-run"
    )


def unplanned_writers(
    server: AuthServer,
    users: Mapping[str, Mapping[str, Any]],
    planned: set[str],
    experiment_ids: Mapping[str, str],
    model_name: str,
) -> list[str]:
    """Non-admin users outside the plan who can write an object (e.g. granted by a model's creator)."""
    found = []
    others = [name for name, user in users.items() if name not in planned and not user.get("is_admin")]
    for username in others:
        for resource_type, name in objects(model_name):
            key = experiment_ids[name] if resource_type == EXPERIMENT else name
            permission = server.effective(username, resource_type, key)
            if RANK.get(permission, 0) > RANK[READ]:
                found.append(
                    f"{username} is none of the identities but gets {permission} on {resource_type} {name}:"
                    f" revoke it (as an admin: AuthServiceClient.revoke_user_permission({username!r},"
                    f" {resource_type!r}, {key!r})), then re-run"
                )
    return found


def squatted_environments(client: Any, outcomes: list[Outcome], model_name: str) -> list[str]:
    """Environment models an identity other than release could write before this run that already hold
    versions, aliases or release records: what they say may be forged, so the run does not vouch for it."""
    found = []
    for outcome in outcomes:
        grant = outcome.grant
        could_write = RANK.get(outcome.before or "", 0) > RANK[READ]
        if grant.resource_type != REGISTERED_MODEL or grant.resource == model_name or grant.role == "release":
            continue
        if not could_write:
            continue
        model = client.get_registered_model(grant.resource)
        versions = client.search_model_versions(f"name = '{grant.resource}'")
        records = [
            key for key in model.tags if key.startswith((registry.HISTORY_PREFIX, registry.PENDING_PREFIX))
        ]
        if versions or model.aliases or records:
            found.append(
                f"{grant.username} ({grant.role}) could write {grant.resource} ({outcome.before}) before this"
                f" run, and it holds {len(versions)} version(s), aliases {sorted(model.aliases)} and"
                f" {len(records)} release record(s) that may be forged: as an admin, delete that registered"
                " model (the release pipeline re-creates it on its next promotion), then re-run"
            )
    return found
