"""Real servers for server-mode tests: PostgreSQL and an MLflow tracking server, on 127.0.0.1 only.

Both are started by a fixture and stopped by it; nothing outlives the test session. `KillSwitch` sits in
front of a tracking server and kills the server's process (by PID) just before a chosen write reaches it,
the way a crash would.
"""

from __future__ import annotations

import glob
import http.client
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving_in_thread(server: http.server.ThreadingHTTPServer) -> Iterator[http.server.ThreadingHTTPServer]:
    """Serve a stand-in on a thread for the block, then stop it. Polling every 10 ms, not `serve_forever`'s
    default 500, because every test that stops one would otherwise wait out half a second."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def postgres_bin() -> Path | None:
    """Debian installs PostgreSQL's server programs outside PATH, under /usr/lib/postgresql/<major>/bin."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as its own system user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields its SQLAlchemy URL.

    Its folder sits directly under the system temp dir (pytest's are private to root) and is removed after.
    """
    binaries = postgres_bin()
    assert binaries is not None
    workdir = Path(tempfile.mkdtemp(prefix="template-test-pg-"))
    data, sockets = workdir / "data", workdir / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (workdir, sockets):
            shutil.chown(path, "postgres")
    port = free_port()

    def run(program: str, *args: str) -> None:
        subprocess.run(_as_postgres_user([str(binaries / program), *args]), check=True, capture_output=True)

    try:
        run("initdb", "-D", str(data), "--auth=trust", "--username=postgres", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(workdir / "postgres.log"), "-w", "start")
        try:
            run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
            yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


class TrackingServer:
    """`mlflow server` on a loopback port with proxied artifacts; `pid` is the process that serves HTTP."""

    def __init__(self, backend_store_uri: str, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"mlflow-server-{self.port}.log"
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(workdir / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no background job workers: faster, fewer processes
        }
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + 180
        while True:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not start in 180 s"
                time.sleep(0.5)

    @property
    def pid(self) -> int:
        """The uvicorn process `mlflow server` started: the one holding the socket and the store."""
        children = _children(self.process.pid)
        return children[0] if children else self.process.pid

    def kill(self) -> None:
        """SIGKILL the serving process by its PID, then the launcher: a crash, not a shutdown."""
        for pid in (self.pid, self.process.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        with suppress(ProcessLookupError):  # the serving child shares the session: nothing outlives the test
            os.killpg(self.process.pid, signal.SIGKILL)


@contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path) -> Iterator[str]:
    """`mlflow server` with the given backend store and proxied artifacts; yields its http URL."""
    server = TrackingServer(backend_store_uri, workdir)
    try:
        yield server.url
    finally:
        server.stop()


class ServerForks:
    """One warm process that forks real tracking servers in about a second (see tracking_server_fork.py)."""

    def __init__(self) -> None:
        script = Path(__file__).with_name("tracking_server_fork.py")
        self.process = subprocess.Popen(
            [sys.executable, "-W", "ignore", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: it kills that group, and only that, when done
        )
        assert self.process.stdout.readline().strip() == "ready"

    def start(self, backend_store_uri: str, workdir: Path) -> ForkedServer:
        return ForkedServer(self, backend_store_uri, workdir)

    def fork(self, port: int, backend_store_uri: str, artifacts: Path, log: Path) -> int:
        self.process.stdin.write(f"{port}\t{backend_store_uri}\t{artifacts}\t{log}\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


class ForkedServer:
    """A tracking server forked by `ServerForks`: the same app and store as `mlflow server`; `pid` serves."""

    def __init__(self, forks: ServerForks, backend_store_uri: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"mlflow-server-{self.port}.log"
        self.pid = forks.fork(self.port, backend_store_uri, workdir / "artifacts", self.log_path)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                assert Path(f"/proc/{self.pid}").exists(), self.log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "forked tracking server did not answer in 60 s"
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL by PID: a crash, not a shutdown."""
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        while Path(f"/proc/{self.pid}").exists():
            time.sleep(0.05)

    stop = kill


# Requests that change the store: every method but GET, except the searches MLflow sends as POST.
READ_ONLY_POST = re.compile(r"/(search|get|get-by-name)$")


def is_write(method: str, path: str) -> bool:
    return method != "GET" and not READ_ONLY_POST.search(path.split("?")[0])


def kind_of(write: str) -> str:
    """A write's endpoint without ids and file names: every artefact upload is one kind."""
    method, path = write.split(" ", 1)
    if "/mlflow-artifacts/" in path:
        return f"{method} artifact upload"
    return f"{method} {re.sub(r'/m-[0-9a-f]+$', '/<model id>', path)}"


class KillSwitch:
    """A loopback HTTP proxy to a tracking server: it records every write and, just before write number
    `kill_at` (or the first write of kind `kill_on`) is forwarded, kills the server's process, so that
    write and everything after it fail."""

    def __init__(
        self, server: TrackingServer | ForkedServer, kill_at: int | None = None, kill_on: str | None = None
    ) -> None:
        self.server, self.kill_at, self.kill_on, self.writes = server, kill_at, kill_on, []
        self.killed = threading.Event()
        switch = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _forward(self) -> None:
                body = self._body()
                if is_write(self.command, self.path):
                    switch.writes.append(f"{self.command} {self.path.split('?')[0]}")
                    due = len(switch.writes) == switch.kill_at or kind_of(switch.writes[-1]) == switch.kill_on
                    if due and not switch.killed.is_set():
                        switch.server.kill()
                        switch.killed.set()
                if switch.killed.is_set():  # a dead server answers nothing
                    self.close_connection = True
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", switch.server.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "transfer-encoding")}
                headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                upstream.close()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.serving = ExitStack()
        self.httpd = self.serving.enter_context(
            serving_in_thread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.serving.close()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, so a stand-in speaks the HTTPS the project's API client requires
    (ci.send_json refuses plain HTTP); clients trust it through SSL_CERT_FILE."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "stand-in.crt", folder / "stand-in.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@contextmanager
def https_api(folder: Path, status: int = 201, answer: dict | None = None) -> Iterator[tuple[str, Path, list[dict]]]:
    """An HTTPS stand-in for a provider's REST API (a git host, a CI system) on 127.0.0.1: records each request
    (method, path, headers, body) and answers `status` with `answer` as JSON (no body when None). Yields its base
    URL, the certificate to trust and the records."""
    import json
    import ssl

    records: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            is_json = self.headers.get("Content-Type", "").startswith("application/json")
            body = json.loads(raw or b"null") if is_json else raw.decode()
            records.append({"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body})
            payload = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    cert_file, key_file = self_signed_certificate(folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving_in_thread(server):
        yield f"https://127.0.0.1:{server.server_address[1]}", cert_file, records


class AuthTrackingServer(TrackingServer):
    """`mlflow server --app-name basic-auth` on a loopback port: MLflow's user accounts and permissions, with
    SQLite stores for runs and users under `workdir`, `default_permission` for objects nobody was granted, and
    one admin (`ADMIN`, `admin_password`) created on first start."""

    ADMIN = "admin"

    def __init__(self, workdir: Path, admin_password: str, default_permission: str = "READ") -> None:
        import secrets

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"mlflow-auth-server-{self.port}.log"
        config = workdir / "basic_auth.ini"
        config.write_text(
            "[mlflow]\n"
            f"default_permission = {default_permission}\n"
            f"database_uri = sqlite:///{workdir / 'auth.db'}\n"
            f"admin_username = {self.ADMIN}\n"
            f"admin_password = {admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 600\n"  # check each password once, not on every request (seconds each)
        )
        command = [
            sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination", str(workdir / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),  # the auth app's CSRF protection needs one
        }
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_until_ready()


@contextmanager
def mlflow_auth_server(workdir: Path, admin_password: str) -> Iterator[AuthTrackingServer]:
    """A basic-auth tracking server (see `AuthTrackingServer`), stopped on exit."""
    server = AuthTrackingServer(workdir, admin_password)
    try:
        yield server
    finally:
        server.stop()
