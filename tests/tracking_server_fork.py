"""Fork real MLflow tracking servers from one warm process, so fault tests can crash and restart them fast.

`mlflow server` spends ~25 s here importing before it serves. This process imports MLflow's server app once;
for each line `port<TAB>backend store URI<TAB>artifacts folder<TAB>log file` on stdin it forks a child that
serves that same app with uvicorn (what `mlflow server` runs) on 127.0.0.1, and prints the child's PID. Tests
kill a child by its PID with SIGKILL, like a crash, and fork a new one on the same store to look at what is
left. Run by `servers.ServerForks` in a process group of its own; when its stdin closes (the tests are done, or
died) it kills that group, so no server a failed test left running outlives the session.
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.update(DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")

import uvicorn  # noqa: E402
from mlflow import server  # noqa: E402
from mlflow.server.fastapi_app import app  # noqa: E402


def serve(port: int, backend_store_uri: str, artifacts: str, log: str) -> None:
    """In the child: the environment `mlflow server` gives its workers, then serve until killed."""
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.environ.update(
        {
            server.BACKEND_STORE_URI_ENV_VAR: backend_store_uri,
            server.REGISTRY_STORE_URI_ENV_VAR: backend_store_uri,
            server.ARTIFACT_ROOT_ENV_VAR: "mlflow-artifacts:/",
            server.SERVE_ARTIFACTS_ENV_VAR: "true",
            server.ARTIFACTS_DESTINATION_ENV_VAR: artifacts,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        port, backend_store_uri, artifacts, log = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            try:
                serve(int(port), backend_store_uri, artifacts, log)
            finally:
                os._exit(0)
        print(pid, flush=True)
    os.killpg(0, signal.SIGKILL)  # every server still running, and this process


if __name__ == "__main__":
    main()
