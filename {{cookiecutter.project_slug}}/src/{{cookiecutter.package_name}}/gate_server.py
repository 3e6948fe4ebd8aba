"""`<package> gate-server`: the small web service the cluster's gates call.

- `POST /confirm-promotion`: Flagger's confirm-promotion webhook; 200 or 403 with one line (promotion_gate).
- `POST /registry-events`: MLflow's registry webhooks, verified, start the release pipeline (registry_events).
- `GET /livez`, `GET /readyz` (ready when the registry answers).

Starlette under uvicorn, both already installed with BentoML; every decision is printed as one line, which
is the audit trail in the pod's log.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from {{ cookiecutter.package_name }} import promotion_gate, registry, registry_events
from {{ cookiecutter.package_name }}.settings import Settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

MAX_BODY_BYTES = 1 << 20


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
        print(f"gate: {status} {line}", flush=True)
        return PlainTextResponse(line + "\n", status_code=status)

    async def confirm_promotion(request: Request) -> PlainTextResponse:
        body = await request.body()
        try:
            payload = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
        except ValueError:
            payload = None

        def decide() -> tuple[int, str]:
            try:
                registry_client = client()
            except Exception as error:  # unreachable or misconfigured registry: refuse, never approve
                return 403, f"refused: the registry cannot be read ({' '.join(str(error).split())[:200]})"
            return promotion_gate.decide(registry_client, settings.model_name, payload)

        return answer(*await run_in_threadpool(decide))

    async def registry_event(request: Request) -> PlainTextResponse:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return answer(413, "refused: the delivery is larger than any registry event")
        status, line = await run_in_threadpool(registry_events.handle_delivery, body, dict(request.headers))
        return answer(status, line)

    async def livez(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> PlainTextResponse:
        try:  # asks the server every time: a gate that cannot read the registry would only refuse
            await run_in_threadpool(registry.connect, settings)
        except Exception as error:
            return PlainTextResponse(f"registry unreachable: {error}\n", status_code=503)
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
