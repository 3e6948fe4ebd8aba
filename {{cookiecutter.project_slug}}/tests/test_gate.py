"""The cluster's promotion gate answers Flagger from the registry alone: 200 only for the approved version
and image, 403 with one line for anything else, including a registry it cannot read."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from {{ cookiecutter.package_name }} import registry
from {{ cookiecutter.package_name }}.gate_server import create_app
from {{ cookiecutter.package_name }}.promote import promote
from {{ cookiecutter.package_name }}.settings import Settings
from releases import new_version, open_registry

APPROVED_DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
IMAGE = "ghcr.io/acme/demand-forecast"


@pytest.fixture
def client(settings, tmp_path, blank_store):
    return open_registry(settings, tmp_path, blank_store)


@pytest.fixture
def gate(settings):
    with TestClient(create_app(settings)) as http:
        yield http


def released_to_production(client, settings, **evidence: str) -> str:
    version = new_version(client, settings, image_digest=APPROVED_DIGEST, **evidence)
    assert promote(settings, version, "staging", "dave") == 0
    assert promote(settings, version, "production", "erin") == 0
    return version


def rollout(version: str, image: str = f"{IMAGE}:v1@{APPROVED_DIGEST}", **metadata: object) -> dict:
    """Flagger's confirm-promotion payload, with the metadata the Canary's webhook carries."""
    return {
        "name": "demand-forecast",
        "namespace": "demand-forecast-production",
        "phase": "Progressing",
        "checksum": "85d557f47b",
        "metadata": {"model_version": version, "image": image, **metadata},
    }


def ask(gate, payload) -> tuple[int, str]:
    response = gate.post("/confirm-promotion", json=payload)
    return response.status_code, response.text


def test_the_approved_version_and_image_may_reach_full_traffic(client, settings, gate, capsys):
    version = released_to_production(client, settings)
    approved_at = registry.environment_copy(client, settings.model_name, "production").tags[
        "approved_at_production"
    ]
    status, line = ask(gate, rollout(version))
    assert status == 200
    assert line == (
        f"approved: demand-forecast-production/demand-forecast v{version} {APPROVED_DIGEST} approved for"
        f" production by erin at {approved_at}\n"
    )
    assert f"gate: 200 {line}" in capsys.readouterr().out  # the pod log is the audit trail


def bypassed_pin(client, settings) -> dict:
    """A newer version merged into deploy/production by hand: only in staging in the registry."""
    champion = released_to_production(client, settings)
    challenger = new_version(client, settings, image_digest=APPROVED_DIGEST, backtest_champion=champion)
    assert promote(settings, challenger, "staging", "dave") == 0
    return rollout(challenger)


def other_image(client, settings) -> dict:
    """`kubectl set image` to another build of the approved version."""
    return rollout(released_to_production(client, settings), image=f"{IMAGE}:v1@{OTHER_DIGEST}")


def copied_by_hand(client, settings, **tags: str) -> dict:
    """Someone with write access to the production model copies a version and moves the alias."""
    version = new_version(client, settings, image_digest=APPROVED_DIGEST)
    source = client.get_model_version(settings.model_name, version)
    copy = registry.copy_version(client, source, "production", tags)
    client.set_registered_model_alias(f"{settings.model_name}-production", "production", copy.version)
    return rollout(version)


def unapproved_copy(client, settings) -> dict:
    registry.ensure_model(client, f"{settings.model_name}-production")
    return copied_by_hand(client, settings)


def self_approved_copy(client, settings) -> dict:
    registry.ensure_model(client, f"{settings.model_name}-production")
    return copied_by_hand(client, settings, approved_by_production="carol", released_by="carol")


def copy_without_data_gate(client, settings) -> dict:
    registry.ensure_model(client, f"{settings.model_name}-production")
    version = new_version(client, settings, image_digest=APPROVED_DIGEST, data_validation=None)
    source = client.get_model_version(settings.model_name, version)
    copy = registry.copy_version(
        client, source, "production", {"approved_by_production": "erin", "released_by": "erin"}
    )
    client.set_registered_model_alias(f"{settings.model_name}-production", "production", copy.version)
    return rollout(version)


def approved_without_digest(client, settings) -> dict:
    version = new_version(client, settings)
    assert promote(settings, version, "staging", "dave") == 0
    assert promote(settings, version, "production", "erin") == 0
    return rollout(version)


def nothing_released(client, settings) -> dict:
    return rollout(new_version(client, settings, image_digest=APPROVED_DIGEST))


REFUSED = {
    bypassed_pin: "the registry's production release is v1, not v2: this rollout bypassed the gate",
    other_image: f"image {OTHER_DIGEST} is not the image approved for v1 ({APPROVED_DIGEST})",
    unapproved_copy: "v1 has no production approval on record",
    self_approved_copy: "four-eyes",
    copy_without_data_gate: "missing evidence: data_validation",
    approved_without_digest: "v1 was approved without an image digest",
    nothing_released: "the registry's production release is nothing, not v1",
}


@pytest.mark.parametrize("arrange", list(REFUSED), ids=lambda f: f.__name__)
def test_anything_but_the_approved_version_and_image_is_refused_in_one_line(client, settings, gate, arrange):
    payload = arrange(client, settings)
    status, line = ask(gate, payload)
    assert status == 403
    assert line.startswith("refused: ") and line.count("\n") == 1, line
    assert REFUSED[arrange] in line


HOSTILE = {
    "no metadata": {"name": "demand-forecast", "namespace": "demand-forecast-production"},
    "not an object": ["1"],
    "version with a newline": rollout("1\n"),
    "version with a command": rollout("1; rm -rf /"),
    "version in Arabic-Indic digits": rollout("\u0661"),
    "version missing": rollout(None),
    "empty version": rollout(""),
    "huge version": rollout("1" * 100_000),
    "image without a digest": rollout("1", image=f"{IMAGE}:v1"),
    "short digest": rollout("1", image=f"{IMAGE}@sha256:{'a' * 63}"),
    "digest with a newline": rollout("1", image=f"{IMAGE}@{APPROVED_DIGEST}\n"),
    "two digests": rollout("1", image=f"{IMAGE}@{OTHER_DIGEST}@{APPROVED_DIGEST}"),
}


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_malformed_or_hostile_payload_is_refused_even_when_v1_is_approved(client, settings, gate, payload):
    released_to_production(client, settings)
    status, line = ask(gate, payload)
    assert status == 403
    assert line.startswith("refused: ") and line.count("\n") == 1, line


def test_a_body_that_is_not_json_is_refused(client, settings, gate):
    released_to_production(client, settings)
    response = gate.post("/confirm-promotion", content=b"model_version=1")
    assert response.status_code == 403 and "not Flagger's webhook payload" in response.text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_registry_the_gate_cannot_reach_means_refused_and_not_ready(tmp_path):
    local = Settings.in_folder(tmp_path, "test-model")
    unreachable = replace(local, tracking_uri=f"http://127.0.0.1:{closed_port()}")
    with TestClient(create_app(unreachable)) as http:
        status, line = ask(http, rollout("1"))
        assert status == 403 and "unreachable" in line
        assert http.get("/readyz").status_code == 503
        assert http.get("/livez").status_code == 200
