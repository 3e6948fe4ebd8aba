"""`<package> gate-server`: the small web service the cluster's gates call.

- `POST /confirm-promotion`: Flagger's confirm-promotion webhook; 200 or 403 with one line (promotion_gate).
- `POST /registry-events`: MLflow's registry webhooks, verified, start the release pipeline (registry_events).
- `GET /livez`, `GET /readyz` (ready when the registry answers).

Starlette under uvicorn, both already installed with BentoML; every decision is printed as one line, which
is the audit trail in the pod's log (credentials in the tracking URI never reach it: see `redact`).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }} import promotion_gate, registry, registry_events
from {{ cookiecutter.package_name }}.settings import Settings, shareable_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

MAX_BODY_BYTES = 1 << 20
# Flagger waits 30 s for the webhook (deploy/production/canary.yaml): answer before it gives up.
DECISION_SECONDS = 20
USERINFO = re.compile(r"(?<=://)[^/\s@]+@")


class BodyTooLarge(Exception):
    """A request body past MAX_BODY_BYTES: refused before it is read whole."""


def redact(text: str, tracking_uri: str) -> str:
    """A line fit for the pod log: the tracking URI as shareable_uri shows it, no user:pass@ in any URL, and
    its password nowhere (an error may quote a fragment of the URI, e.g. "nonnumeric port: 'pass@host'")."""
    if tracking_uri and tracking_uri != shareable_uri(tracking_uri):
        text = text.replace(tracking_uri, shareable_uri(tracking_uri))
    text = USERINFO.sub("", text)
    password = urllib.parse.urlsplit(tracking_uri).password
    for secret in {password, urllib.parse.unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")
    return text


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read in chunks and never past `limit` (a Content-Length above it is refused unread)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def create_app(settings: Settings) -> Starlette:
    """The gate's routes; the registry client is made on first use, so the pod starts without the server."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    clients: list[MlflowClient] = []

    def client() -> MlflowClient:
        if not clients:
            clients.append(registry.connect(settings))
        return clients[0]

    def answer(status: int, line: str) -> PlainTextResponse:
        line = redact(line, settings.tracking_uri)
        print(f"gate: {status} {line}", flush=True)
        return PlainTextResponse(line + "\n", status_code=status)

    async def confirm_promotion(request: Request) -> PlainTextResponse:
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return answer(413, "refused: the request is larger than any Flagger webhook payload")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None

        def decide() -> tuple[int, str]:
            try:
                registry_client = client()
            except Exception as error:  # unreachable or misconfigured registry: refuse, never approve
                return 403, f"refused: the registry cannot be read ({' '.join(str(error).split())[:200]})"
            return promotion_gate.decide(registry_client, settings.model_name, payload)

        try:  # the thread may run on; its late answer is dropped, the refusal stands
            return answer(*await asyncio.wait_for(run_in_threadpool(decide), DECISION_SECONDS))
        except TimeoutError:
            return answer(
                403,
                f"refused: the registry did not answer within {DECISION_SECONDS} s (or the Kubernetes API"
                " did not): Flagger asks again at its next interval",
            )

    async def registry_event(request: Request) -> PlainTextResponse:
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return answer(413, "refused: the delivery is larger than any registry event")
        status, line = await run_in_threadpool(registry_events.handle_delivery, body, dict(request.headers))
        return answer(status, line)

    async def livez(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> PlainTextResponse:
        try:  # asks the server every time: a gate that cannot read the registry would only refuse
            await run_in_threadpool(registry.connect, settings)
        except Exception as error:
            reason = redact(" ".join(str(error).split())[:200], settings.tracking_uri)
            return PlainTextResponse(f"registry unreachable: {reason}\n", status_code=503)
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route("/confirm-promotion", confirm_promotion, methods=["POST"]),
            Route("/registry-events", registry_event, methods=["POST"]),
            Route("/livez", livez),
            Route("/readyz", readyz),
        ]
    )


def serve(settings: Settings, host: str, port: int) -> int:
    """Entry point of `gate-server`: serve until stopped."""
    import uvicorn

    print(f"Gate for {settings.model_name} on http://{host}:{port} (confirm-promotion, registry-events)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    return 0
