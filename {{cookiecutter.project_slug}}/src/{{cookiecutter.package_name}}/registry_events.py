"""Release what the registry announces: verify an MLflow webhook delivery, then start the release pipeline.

Teams that train outside CI (a notebook, another scheduler) register versions directly. MLflow (3.3+, SQL
backend, through its tracking server) then POSTs `model_version.created` to a webhook; `handle_delivery`
answers it. A delivery counts only when it is signed with the shared secret (MLFLOW_WEBHOOK_SECRET) exactly as
MLflow signs (`mlflow/webhooks/delivery.py`: HMAC-SHA256 over `<delivery id>.<timestamp>.<body>`, sent as
`X-MLflow-Signature: v1,<base64>`), is at most five minutes old or early, and has not been seen before. Only a
new version of this project's model starts anything: the training pipeline, through the CI provider's API
(`retrain_trigger.start_pipeline`), with the version as its `version` input, so the version goes through the
same image build, back-test and approval gates as one trained in CI. Every answer is (HTTP status, one line);
a release that could not be started is a 502, which MLflow retries and records, never a silent success.

Replays are refused from an in-memory record of the delivery ids seen within the time window: it holds for
one receiver process. Several replicas behind a load balancer need a shared store for it (Redis SET NX with
an expiry, a database table with a unique key), or one replica. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from {{ cookiecutter.package_name }}.ci import ApprovalError, Send, send_json
from {{ cookiecutter.package_name }}.registry import RegistryError, parse_version
from {{ cookiecutter.package_name }}.retrain_trigger import start_pipeline
from {{ cookiecutter.package_name }}.settings import Settings, variable

SECRET_VARIABLE = "MLFLOW_WEBHOOK_SECRET"  # nosec B105 # the variable's name, not a secret
# The CI system whose training pipeline releases a version (github|azure|jenkins); the receiver runs outside
# CI, so it is configured, not detected. Default: the template answer.
PROVIDER_VARIABLE = "CI_PROVIDER"
DEFAULT_PROVIDER = "{{ cookiecutter.ci_provider }}"
# mlflow/webhooks/constants.py
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024  # a model_version.created payload is well under 4 KiB
MAX_SEEN = 10_000  # deliveries remembered per window: beyond that, refuse rather than forget one
TIMESTAMP = re.compile(r"[0-9]{1,12}")
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")  # MLflow sends a UUID
EVENT = "model_version.created"

Answer = tuple[int, str]  # (HTTP status, one line)


class SeenDeliveries:
    """Delivery ids already accepted, each kept until its timestamp leaves the window (then it is refused as
    stale anyway). Thread-safe; one process only (see the module docstring)."""

    def __init__(self, limit: int = MAX_SEEN) -> None:
        self.limit = limit
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, delivery_id: str, timestamp: int, now: float) -> bool | None:
        """Record the id: True if new, False if seen, None if the record is full of live ids."""
        with self._lock:
            if delivery_id in self._until and self._until[delivery_id] >= now:
                return False
            if len(self._until) >= self.limit:
                self._until = {key: until for key, until in self._until.items() if until >= now}
                if len(self._until) >= self.limit:
                    return None
            # Kept a second past the window: the age check works in whole seconds, so a delivery stays
            # "fresh" until int(now) leaves it, and its id must be remembered at least that long.
            self._until[delivery_id] = timestamp + TOLERANCE_SECONDS + 1
            return True

    def release(self, delivery_id: str) -> None:
        """Forget an id whose release could not be started, so MLflow's retry (same id) may start it."""
        with self._lock:
            self._until.pop(delivery_id, None)


DELIVERIES = SeenDeliveries()


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature MLflow sends for this delivery (mlflow.webhooks.delivery._generate_hmac_signature)."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def _signed_by(secret: str, sent: str, delivery_id: str, timestamp: str, body: bytes) -> bool:
    """Does any of the header's space-separated signatures match? Compared in constant time."""
    expected = signature(secret, delivery_id, timestamp, body).encode()
    return any(hmac.compare_digest(candidate.encode(), expected) for candidate in sent.split())


class Refused(Exception):
    """A delivery answered without starting anything: its HTTP status and one line saying why."""

    def __init__(self, status: int, line: str) -> None:
        super().__init__(line)
        self.status = status


def verified_delivery(body: bytes, headers: Mapping[str, str], now: float, seen: SeenDeliveries) -> str:
    """The delivery id of an authentic, fresh, first-seen delivery; raises Refused otherwise."""
    secret = os.environ.get(SECRET_VARIABLE, "")
    if not secret.strip():
        raise Refused(
            503,
            f"refused: {SECRET_VARIABLE} is not set, so no delivery can be verified; set it to the secret the"
            " webhook was created with (MlflowClient().create_webhook(..., secret=...))",
        )
    if len(body) > MAX_BODY_BYTES:
        raise Refused(
            413, f"refused: the body is over {MAX_BODY_BYTES} bytes; MLflow's events are far smaller"
        )
    lowered = {key.lower(): value for key, value in headers.items()}
    names = (SIGNATURE_HEADER, DELIVERY_ID_HEADER, TIMESTAMP_HEADER)
    missing = [name for name in names if not lowered.get(name.lower())]
    if missing:
        raise Refused(
            401, f"refused: no {', '.join(missing)} header; only signed MLflow deliveries are accepted"
        )
    sent, delivery_id, timestamp = (lowered[name.lower()] for name in names)
    if not DELIVERY_ID.fullmatch(delivery_id) or not TIMESTAMP.fullmatch(timestamp):
        raise Refused(400, f"refused: malformed {DELIVERY_ID_HEADER} or {TIMESTAMP_HEADER} header")
    if not _signed_by(secret, sent, delivery_id, timestamp, body):
        raise Refused(
            401,
            f"refused: {SIGNATURE_HEADER} does not match: forged, or {SECRET_VARIABLE} is not the"
            " webhook's secret",
        )
    age = int(now) - int(timestamp)
    if abs(age) > TOLERANCE_SECONDS:
        raise Refused(
            401,
            f"refused: {TIMESTAMP_HEADER} is {age} s from now, outside ±{TOLERANCE_SECONDS} s"
            " (a replay, or a clock to fix)",
        )
    claimed = seen.claim(delivery_id, int(timestamp), now)
    if claimed is None:
        raise Refused(503, f"refused: over {seen.limit} deliveries in {TOLERANCE_SECONDS} s; retry later")
    if not claimed:
        raise Refused(409, f"refused: delivery {delivery_id} was already received (a replay)")
    return delivery_id


def event_of(body: bytes) -> tuple[str, Mapping[str, Any]]:
    """("entity.action", data) of a well-formed MLflow event; raises Refused otherwise."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "refused: the body is not JSON") from None
    if not isinstance(payload, dict):
        raise Refused(400, "refused: the body is not a JSON object")
    entity, action, data = payload.get("entity"), payload.get("action"), payload.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, dict):
        raise Refused(400, "refused: not an MLflow webhook event (entity, action and data are required)")
    return f"{entity}.{action}", data


def version_of(data: Mapping[str, Any]) -> str:
    """The version number a model_version.created event names, checked whole; raises Refused otherwise."""
    number = data.get("version")
    if not isinstance(number, str) or len(number) > 20:
        raise Refused(400, "refused: the event's version is not a registry version number")
    try:
        return parse_version(number, "version")
    except RegistryError as error:
        raise Refused(400, f"refused: {error}") from None


def request_release(version: str, env: Mapping[str, str] = os.environ, send: Send = send_json) -> str:
    """Start the training pipeline of the configured CI provider with `version`: it releases that version."""
    provider = variable(PROVIDER_VARIABLE, env) or DEFAULT_PROVIDER
    return start_pipeline(provider, f"the release of v{version}", {"version": version}, env, send)


def handle_delivery(
    body: bytes,
    headers: Mapping[str, str],
    now: float | None = None,
    *,
    send: Send = send_json,
    seen: SeenDeliveries = DELIVERIES,
) -> Answer:
    """Answer one webhook delivery: (HTTP status, one line). Starts the release pipeline for a new version of
    this project's model; acknowledges other events with "ignored"; refuses anything unverified."""
    try:
        delivery_id = verified_delivery(body, headers, time.time() if now is None else now, seen)
        kind, data = event_of(body)
        model = Settings.from_env().model_name
        if kind != EVENT:
            return 200, f"ignored: {kind[:80]!r} events start nothing; only {EVENT} does"
        name = data.get("name")
        if name != model:
            shown = repr(name)[:100]
            return 200, f"ignored: a version of {shown}, not of {model!r}"
        version = version_of(data)
    except Refused as refused:
        return refused.status, str(refused)
    try:
        started = request_release(version, os.environ, send)
    except Exception as error:  # any failure to start: MLflow retries a 502 with the same delivery id
        seen.release(delivery_id)
        unplanned = f"{type(error).__name__}: {str(error)[:300]}"
        return 502, " ".join((str(error) if isinstance(error, ApprovalError) else unplanned).split())
    return 202, f"release pipeline started for v{version}: {started}"
