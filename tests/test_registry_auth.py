"""Least privilege on a real `mlflow server --app-name basic-auth`: the rendered `registry-permissions` sets it,
and each identity then meets the server's own refusals.

One server for the module (127.0.0.1, SQLite stores, default_permission READ). The platform team's admin creates
the users; a trainer pre-creates `<model>-production` (so MLflow makes it MANAGE there) and shares it with an
accomplice; the command lowers the trainer, refuses while the accomplice can write, and changes nothing on its
next run. Then the whole gated flow runs as the pipeline identities (train and back-test as the trainer,
promotions as the release identity), the gate reads the approval as its own identity, and every row of MATRIX
is tried as its identity through MlflowClient. The matrix is written to
`permission-matrix.md` in the module's temporary folder.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from conftest import DEFAULT_PACKAGE, make, render, run, use_rendered_package
from servers import AuthTrackingServer, mlflow_auth_server, mlflow_server

pytestmark = pytest.mark.e2e

MODEL = "demand-forecast-model"  # the template's default model name (and the experiment's)
STAGING, PRODUCTION = f"{MODEL}-staging", f"{MODEL}-production"
ADMIN_PASSWORD = "admin-password-for-tests"
USERS = {  # the platform team's accounts: CI identities under their default names, one reviewer, an accomplice
    "trainer": "trainer-password-1",
    "release": "release-password-1",
    "gate": "gate-password-123",
    "alice": "alice-password-1",
    "mallory": "mallory-password-1",
}
IDENTITIES = {"MLFLOW_REVIEWERS": "alice"}  # trainer, release and gate are the defaults
APPROVAL = "approved_by_production"


@contextmanager
def signed_in(user: str, password: str) -> Iterator[None]:
    """MLflow's client reads MLFLOW_TRACKING_USERNAME/PASSWORD on every request: act as `user` meanwhile."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def as_admin() -> AbstractContextManager[None]:
    return signed_in(AuthTrackingServer.ADMIN, ADMIN_PASSWORD)


def client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def registry_permissions(project: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The rendered project's command, as the admin, the way `make registry-permissions` runs it."""
    credentials = {"MLFLOW_TRACKING_USERNAME": AuthTrackingServer.ADMIN, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    variables = {"MLFLOW_TRACKING_URI": url, **credentials, **IDENTITIES, **env}
    return run(["python", "-m", DEFAULT_PACKAGE, "registry-permissions"], project, check=False, **variables)


def snapshot(url: str) -> dict:
    """Everything a refused write could have changed: each model's tags, aliases and versions with their tags."""
    with as_admin():
        registry = client(url)
        state = {}
        for name in (MODEL, STAGING, PRODUCTION):
            model = registry.get_registered_model(name)
            versions = registry.search_model_versions(f"name = '{name}'")
            state[name] = {
                "tags": dict(model.tags),
                "aliases": dict(model.aliases),
                "versions": {v.version: (dict(v.tags), v.description) for v in versions},
            }
        return state


@pytest.fixture(scope="module")
def project(tmp_path_factory, installed_project) -> Path:
    project = render(tmp_path_factory.mktemp("registry-auth"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "Initial commit"]):
        subprocess.run([*git, *args], cwd=project, check=True)
    make(project, "data")
    use_rendered_package(project)  # the tests read the registry through its code, as the gate does
    return project


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """The shared tracking server with the platform team's users; its URL."""
    from mlflow.server import get_app_client

    workdir = tmp_path_factory.mktemp("auth-server")
    with mlflow_auth_server(workdir, ADMIN_PASSWORD) as running:
        with as_admin():
            accounts = get_app_client("basic-auth", tracking_uri=running.url)
            for user, password in USERS.items():
                accounts.create_user(user, password)
        yield running.url


@pytest.fixture(scope="module")
def runs(project, server) -> dict[str, subprocess.CompletedProcess[str]]:
    """A trainer squats on the production model and shares it; the command runs, the admin revokes the
    accomplice, the command runs again."""
    from mlflow.server import get_app_client

    with signed_in("trainer", USERS["trainer"]):
        client(server).create_registered_model(PRODUCTION)  # MLflow makes its creator MANAGE it
        get_app_client("basic-auth", tracking_uri=server).grant_user_permission(
            "mallory", "registered_model", PRODUCTION, "EDIT"
        )
    first = registry_permissions(project, server)
    with as_admin():
        get_app_client("basic-auth", tracking_uri=server).revoke_user_permission(
            "mallory", "registered_model", PRODUCTION
        )
    second = registry_permissions(project, server)
    return {"first": first, "second": second}


def as_identity(user: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": USERS[user]}


IMAGE_DIGEST = "sha256:" + "c" * 64


def cli(project: Path, server: str, user: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The rendered package's command as one identity, the way its pipeline job runs it."""
    return run(["python", "-m", DEFAULT_PACKAGE, *args], project, check=False, MLFLOW_TRACKING_URI=server,
               **as_identity(user), **env)  # fmt: skip


@pytest.fixture(scope="module")
def released(project, server, runs) -> str:
    """The whole gated flow on the authenticated server, each step as the identity its pipeline job has: the
    trainer trains, back-tests and records the pushed image's digest (the training pipeline); the release
    identity promotes to staging and then production on two reviewers' approvals. The server's URL."""
    assert runs["second"].returncode == 0, runs["second"].stderr
    steps = [
        ("trainer", ("train",), {"TRAINED_BY": "trainer"}),
        ("trainer", ("backtest", "--version", "1"), {}),
        ("release", ("promote", "--version", "1", "--to", "staging"), {"APPROVER": "bob"}),
        ("release", ("promote", "--version", "1", "--to", "production"), {"APPROVER": "erin"}),
    ]
    for user, args, env in steps[:2]:
        done = cli(project, server, user, *args, **env)
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    with signed_in("trainer", USERS["trainer"]):  # what `make image` records after pushing the image
        client(server).set_model_version_tag(MODEL, "1", "image_digest", IMAGE_DIGEST)
    for user, args, env in steps[2:]:
        done = cli(project, server, user, *args, **env)
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    return server


# --- the gated flow as its identities -------------------------------------------------------------------


def test_the_gated_flow_ran_as_the_training_and_release_identities(project, released):
    from demand_forecast import registry

    with as_admin():
        store = client(released)
        production = registry.environment_copy(store, MODEL, "production")
        assert registry.source_of(production, MODEL) == "1"
        tags = production.tags
        assert (tags["trained_by"], tags["approved_by_production"], tags["backtest_verdict"]) == (
            "trainer",
            "erin",
            "passed",
        )
        history = registry.release_history(registry.release_tags(store, MODEL))
        assert [(entry["environment"], entry["approved_by"]) for entry in history] == [
            ("staging", "bob"), ("production", "erin")
        ]  # fmt: skip
    assert "MODEL_VERSION=1" in (project / "deploy" / "production" / "model.env").read_text()


def test_the_training_identity_cannot_release_even_through_the_command(project, released):
    # given a version the trainer registered with evidence that would pass every check (forged or not)
    with signed_in("trainer", USERS["trainer"]):
        store = client(released)
        evidence = {**store.get_model_version(MODEL, "1").tags, "stage": "dev", "backtest_champion": "1"}
        version = new_version(store, MODEL).version
        for key, value in evidence.items():
            store.set_model_version_tag(MODEL, version, key, value)
    before, pins = snapshot(released), (project / "deploy" / "staging" / "model.env").read_text()
    # when the trainer runs the release command itself, with an accomplice as approver
    refused = cli(project, released, "trainer", "promote", "--version", version, "--to", "staging",
                  APPROVER="mallory")  # fmt: skip
    # then the server refuses the first write to the staging model, and nothing moved
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "promote: the tracking store refused 'trainer' (PERMISSION_DENIED)" in refused.stderr
    assert snapshot(released) == before
    assert (project / "deploy" / "staging" / "model.env").read_text() == pins


def rollout(digest: str) -> dict:
    image = f"ghcr.io/acme/demand-forecast:v1@{digest}"
    metadata = {"model_version": "1", "image": image}
    return {"name": "demand-forecast", "namespace": "demand-forecast-production", "metadata": metadata}


class Cluster:
    """What the Kubernetes API shows the gate of the canary target: its serving image and model ConfigMap."""

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def get(self, path: str) -> dict:
        if path.endswith("/deployments/demand-forecast"):
            serving = {
                "name": "serving",
                "image": f"ghcr.io/acme/demand-forecast:v1@{self.digest}",
                "envFrom": [{"configMapRef": {"name": "model-5f7c2"}}],
            }
            return {"spec": {"template": {"spec": {"containers": [serving]}}}}
        return {"data": {"MODEL_NAME": MODEL, "MODEL_VERSION": "1"}}


def test_the_gate_reads_the_approval_as_its_own_read_only_identity(released):
    from demand_forecast.promotion_gate import decide

    other_digest = "sha256:" + "d" * 64
    with signed_in("gate", USERS["gate"]):
        approved = decide(client(released), MODEL, rollout(IMAGE_DIGEST), Cluster(IMAGE_DIGEST))
        other = decide(client(released), MODEL, rollout(other_digest), Cluster(other_digest))
    with signed_in("gate", "not-the-password"):
        unauthenticated = decide(client(released), MODEL, rollout(IMAGE_DIGEST), Cluster(IMAGE_DIGEST))
    assert approved[0] == 200 and "v1 " + IMAGE_DIGEST + " approved for production by erin" in approved[1]
    assert other[0] == 403 and "is not the image approved for v1" in other[1]
    assert unauthenticated[0] == 403 and "the registry cannot be read" in unauthenticated[1]


# --- the command ------------------------------------------------------------------------------------------


def test_the_command_lowers_a_squatting_trainer_and_refuses_while_an_accomplice_can_write(runs):
    first = runs["first"]
    assert first.returncode == 1
    lines = first.stdout.splitlines()
    assert any(line.split()[:5] == ["training", "trainer", "registered_model", PRODUCTION, "READ"] for line in lines)
    assert f"registered_model {PRODUCTION}  READ        changed from MANAGE" in first.stdout
    assert f"created experiment {MODEL}, registered model {MODEL}, registered model {STAGING}" in first.stdout
    assert f"mallory is none of the identities but gets EDIT on registered_model {PRODUCTION}" in first.stderr
    assert "Traceback" not in first.stderr


def test_a_second_run_changes_nothing_and_says_so(runs):
    second = runs["second"]
    assert second.returncode == 0, second.stderr
    rows = [line for line in second.stdout.splitlines() if line.startswith(("training", "release", "gate", "reviewer"))]
    assert len(rows) == 16 and all(row.endswith("unchanged") for row in rows), second.stdout
    assert "nothing to change, every permission is already as planned" in second.stdout


def test_the_server_enforces_the_plan(runs, server):
    from mlflow.server import get_app_client

    with as_admin():
        accounts = get_app_client("basic-auth", tracking_uri=server)
        effective = {
            (user, name): accounts.get_user_permission(user, "registered_model", name).permission
            for user in ("trainer", "release", "gate", "alice", "mallory")
            for name in (MODEL, STAGING, PRODUCTION)
        }
    assert effective == {
        ("trainer", MODEL): "EDIT", ("trainer", STAGING): "READ", ("trainer", PRODUCTION): "READ",
        ("release", MODEL): "EDIT", ("release", STAGING): "EDIT", ("release", PRODUCTION): "EDIT",
        ("gate", MODEL): "READ", ("gate", STAGING): "READ", ("gate", PRODUCTION): "READ",
        ("alice", MODEL): "READ", ("alice", STAGING): "READ", ("alice", PRODUCTION): "READ",
        ("mallory", MODEL): "READ", ("mallory", STAGING): "READ", ("mallory", PRODUCTION): "READ",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"MLFLOW_REVIEWERS": "alice,bob"}, "no user 'bob' on http://127.0.0.1:"),
        ({"MLFLOW_TRACKING_PASSWORD": "not-the-password"}, "refused MLFLOW_TRACKING_USERNAME='admin'"),
        ({"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": USERS["alice"]}, "'alice' is not an admin"),
    ],
    ids=["missing-user", "wrong-password", "not-admin"],
)
def test_the_command_refuses_in_one_line_and_changes_nothing(project, released, variables, message):
    before = snapshot(released)
    result = registry_permissions(project, released, **variables)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert snapshot(released) == before


def test_an_environment_model_a_trainer_filled_first_is_not_vouched_for(project, server, runs):
    # given a trainer who created another product's production model first (MANAGE) and wrote a release record
    squatted = "squatted-model"
    with signed_in("trainer", USERS["trainer"]):
        client(server).create_registered_model(f"{squatted}-production")
        client(server).set_registered_model_tag(f"{squatted}-production", "release_history.x.production", "{}")
    # when the platform team runs the command for that product
    result = registry_permissions(project, server, MODEL_NAME=squatted)
    # then the trainer is lowered, and the run refuses to vouch for what the model already holds
    assert result.returncode == 1
    assert (
        f"trainer (training) could write {squatted}-production (MANAGE) before this run, and it holds 0"
        " version(s), aliases [] and 1 release record(s) that may be forged" in result.stderr
    )


def test_the_command_refuses_a_server_without_accounts(project, tmp_path):
    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path) as url:
        result = registry_permissions(project, url)
    assert result.returncode == 1
    assert "has no user accounts: start the shared tracking server with `mlflow server --app-name basic-auth`" in (
        result.stderr
    )


# --- the permission matrix, tried as each identity -------------------------------------------------------


def get_app_client(name: str, tracking_uri: str):
    from mlflow.server import get_app_client

    return get_app_client(name, tracking_uri=tracking_uri)


def new_version(registry, name: str):
    """A version of `name` from version 1's logged model, the way training registers one."""
    source = registry.get_model_version(MODEL, "1")  # its source is models:/<logged model id>
    model_id = source.source.removeprefix("models:/")
    return registry.create_model_version(name, source.source, run_id=source.run_id, model_id=model_id)


def copy_into(registry, name: str):
    """A copy of version 1 into an environment's model, the way promotion makes one (registry.copy_version)."""
    source = registry.get_model_version(MODEL, "1")
    return registry.create_model_version(
        name, f"models:/{MODEL}/1", run_id=source.run_id, tags={**source.tags, "source_version": "1"}
    )


def copy_of(registry, name: str) -> str:
    return registry.get_model_version_by_alias(name, name.rsplit("-", 1)[1]).version


ACTIONS: dict[str, Callable] = {
    # reads
    "read versions, aliases, tags and the run": lambda r: (
        [
            r.search_model_versions(f"name = '{name}'") and r.get_registered_model(name).aliases
            for name in (MODEL, STAGING, PRODUCTION)
        ]
        and r.get_run(r.get_model_version(MODEL, "1").run_id)
    ),
    # the dev model
    "create a version of <model>": lambda r: new_version(r, MODEL),
    "create a version of <model>-production from the run": lambda r: new_version(r, PRODUCTION),
    "set a tag on a <model> version": lambda r: r.set_model_version_tag(MODEL, "1", "note", "x"),
    "delete a tag on a <model> version": lambda r: r.delete_model_version_tag(MODEL, "1", "git_sha"),
    "set an alias on <model>": lambda r: r.set_registered_model_alias(MODEL, "production", "1"),
    "log an artifact to the training run": lambda r: r.log_text(
        r.get_model_version(MODEL, "1").run_id, "evidence", "evidence/check.txt"
    ),
    # the environments
    "copy a version into <model>-production": lambda r: copy_into(r, PRODUCTION),
    "set alias production on <model>-production": lambda r: r.set_registered_model_alias(
        PRODUCTION, "production", copy_of(r, PRODUCTION)
    ),
    "set alias staging on <model>-staging": lambda r: r.set_registered_model_alias(
        STAGING, "staging", copy_of(r, STAGING)
    ),
    "set the approval tag on a <model>-production copy": lambda r: r.set_model_version_tag(
        PRODUCTION, copy_of(r, PRODUCTION), APPROVAL, "mallory"
    ),
    "delete the approval tag on a <model>-production copy": lambda r: r.delete_model_version_tag(
        PRODUCTION, copy_of(r, PRODUCTION), APPROVAL
    ),
    "set a release-history tag on <model>-production": lambda r: r.set_registered_model_tag(
        PRODUCTION, "release_history.test", "{}"
    ),
    "grant someone EDIT on <model>-production": lambda r: get_app_client(
        "basic-auth", r.tracking_uri
    ).grant_user_permission("mallory", "registered_model", PRODUCTION, "EDIT"),
    "set and delete a pending-release tag on <model>-production": lambda r: (
        r.set_registered_model_tag(PRODUCTION, "release_pending.x", "{}"),
        r.delete_registered_model_tag(PRODUCTION, "release_pending.x"),
    ),
}

ALLOWED, REFUSED = "allowed", "refused (403)"
MATRIX = [
    ("trainer", "read versions, aliases, tags and the run", ALLOWED),
    ("trainer", "create a version of <model>", ALLOWED),
    ("trainer", "set a tag on a <model> version", ALLOWED),
    ("trainer", "log an artifact to the training run", ALLOWED),
    ("trainer", "delete a tag on a <model> version", REFUSED),  # EDIT cannot delete: MLflow wants MANAGE
    ("trainer", "set alias production on <model>-production", REFUSED),
    ("trainer", "copy a version into <model>-production", REFUSED),
    ("trainer", "create a version of <model>-production from the run", REFUSED),
    ("trainer", "set the approval tag on a <model>-production copy", REFUSED),
    ("trainer", "delete the approval tag on a <model>-production copy", REFUSED),
    ("trainer", "set a release-history tag on <model>-production", REFUSED),
    ("trainer", "set alias staging on <model>-staging", REFUSED),
    ("trainer", "grant someone EDIT on <model>-production", REFUSED),  # its creator's MANAGE is gone
    ("release", "read versions, aliases, tags and the run", ALLOWED),
    ("release", "copy a version into <model>-production", ALLOWED),
    ("release", "set alias production on <model>-production", ALLOWED),
    ("release", "set alias staging on <model>-staging", ALLOWED),
    ("release", "set a release-history tag on <model>-production", ALLOWED),
    ("release", "set and delete a pending-release tag on <model>-production", ALLOWED),
    ("release", "set a tag on a <model> version", ALLOWED),
    ("release", "log an artifact to the training run", ALLOWED),
    *(
        (reader, action, REFUSED if action != "read versions, aliases, tags and the run" else ALLOWED)
        for reader in ("alice", "gate")
        for action in (
            "read versions, aliases, tags and the run",
            "set an alias on <model>",
            "set alias staging on <model>-staging",
            "set alias production on <model>-production",
            "set the approval tag on a <model>-production copy",
            "delete the approval tag on a <model>-production copy",
            "create a version of <model>",
            "copy a version into <model>-production",
            "set a tag on a <model> version",
            "log an artifact to the training run",
            "grant someone EDIT on <model>-production",
        )
    ),
]


def attempt(url: str, user: str, action: str) -> str:
    """Try one action as `user`: ALLOWED, or REFUSED when the server answers 403 (any other error fails)."""
    from mlflow.exceptions import MlflowException
    from requests import HTTPError

    with signed_in(user, USERS[user]):
        try:
            ACTIONS[action](client(url))
        except MlflowException as error:
            if error.get_http_status_code() == 403:
                return REFUSED
            raise
        except HTTPError as error:  # artefact uploads go through requests, not MLflow's REST client
            if error.response is not None and error.response.status_code == 403:
                return REFUSED
            raise
    return ALLOWED


@pytest.fixture(scope="module")
def matrix_file(tmp_path_factory) -> Iterator[list[tuple[str, str, str]]]:
    """Rows as they are tried; written as a Markdown table when the module ends."""
    rows: list[tuple[str, str, str]] = []
    yield rows
    path = tmp_path_factory.getbasetemp() / "permission-matrix.md"
    lines = ["| identity | action | result |", "| --- | --- | --- |"]
    lines += [f"| {user} | {action} | {result} |" for user, action, result in rows]
    path.write_text("\n".join(lines) + "\n")
    print(f"\npermission matrix ({path}):\n" + "\n".join(lines))


@pytest.mark.parametrize("user", ["trainer", "release", "alice", "gate"])
def test_permission_matrix(released, matrix_file, user):
    """Every row of MATRIX for one identity: the refused actions first, which together leave the registry as
    it was (one snapshot before and after them: each snapshot asks the auth server a dozen times), then the
    allowed ones."""
    rows = {action: expected for who, action, expected in MATRIX if who == user}
    refused = [action for action, expected in rows.items() if expected == REFUSED]
    before = snapshot(released)
    results = {action: attempt(released, user, action) for action in refused}
    unchanged = snapshot(released) == before
    results |= {action: attempt(released, user, action) for action in rows if action not in results}
    matrix_file.extend((user, action, results[action]) for action in rows)
    assert results == rows
    assert unchanged, f"one of {user}'s refused actions changed the registry"
