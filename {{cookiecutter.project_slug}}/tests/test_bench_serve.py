"""`make bench-serve`: what it reads from wrk, what it refuses, and what it says when wrk is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bench import wrk
from bench.serving_throughput import main

from conftest import serving_in_thread

# What wrk prints around the Lua script's RESULT line.
WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:5001/invocations
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    38.10ms    4.02ms  61.22ms   80.00%
  2105 requests in 10.00s, 290.00KB read
Requests/sec:    210.45
Transfer/sec:     29.00KB
RESULT requests=2105 duration_us=10002500 p50_us=37510 p99_us=49020 non2xx=0 socket_errors=0
"""


def test_the_figures_are_read_from_the_result_line():
    load = wrk.parse(WRK_OUTPUT)

    assert load.requests == 2105
    assert load.rps == pytest.approx(210.45, abs=0.01)
    assert (load.p50_ms, load.p99_ms) == (37.51, 49.02)


@pytest.mark.parametrize(
    ("failures", "named"),
    [("non2xx=3 socket_errors=0", "3 non-2xx answers"), ("non2xx=0 socket_errors=2", "2 socket errors")],
)
def test_a_run_with_failed_requests_is_refused(failures, named):
    with pytest.raises(wrk.LoadError, match=named):
        wrk.parse(WRK_OUTPUT.replace("non2xx=0 socket_errors=0", failures))


def test_without_wrk_the_bench_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))

    assert main([]) == 2
    assert capsys.readouterr() == (
        "",
        "bench-serve: wrk is not installed: apt-get install wrk (Debian/Ubuntu) or brew install wrk\n",
    )


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST with the server's status and records its path, content type and body."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.server.seen.add((self.path, self.headers["Content-Type"], body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen, server.status = set(), 200
    with serving_in_thread(server):
        yield server


needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed: apt-get install wrk"
)


@needs_wrk
def test_wrk_posts_every_body_in_turn(stub_server):
    url = f"http://127.0.0.1:{stub_server.server_port}/v3/invocations"
    bodies = ['{"row": 1}', '{"row": 2}', '{"text": "]]"}']

    load = wrk.run(url, bodies, connections=2, seconds=1)

    assert load.requests > 0
    assert stub_server.seen == {("/v3/invocations", "application/json", body) for body in bodies}


@needs_wrk
def test_a_server_that_answers_errors_fails_the_run(stub_server):
    stub_server.status = 500

    with pytest.raises(wrk.LoadError, match="non-2xx"):
        wrk.run(f"http://127.0.0.1:{stub_server.server_port}/invocations", ['{"row": 1}'], 1, 1)
