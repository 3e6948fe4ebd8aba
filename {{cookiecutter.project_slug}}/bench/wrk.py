"""The load generator of `make bench-serve`: wrk, fed real one-row requests by a Lua script written here.

wrk keeps N connections busy for S seconds and measures on its own clock, so the figures do not depend on a
Python client's speed. The script rotates through the request bodies (a server may not answer one cached row)
and its `done()` prints one RESULT line, parsed here; any non-2xx answer or socket error fails the run.
"""

from __future__ import annotations

import re
import shutil
import subprocess  # nosec B404 # wrk: fixed argument list, no shell
import tempfile
from dataclasses import dataclass
from pathlib import Path

MISSING = "bench-serve: wrk is not installed: apt-get install wrk (Debian/Ubuntu) or brew install wrk"
TIMEOUT_S = 10  # a request slower than this counts as a socket error, which fails the run

SCRIPT = """\
-- Written by bench/wrk.py: POST the bodies below in turn, then print one RESULT line.
local bodies = {
%(bodies)s
}
local formatted = {}
local turn = 0

function init(args)
  for index, body in ipairs(bodies) do
    formatted[index] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
  end
end

function request()
  turn = turn %% #formatted + 1
  return formatted[turn]
end

function done(summary, latency, requests)
  local errors = summary.errors
  local failed = errors.connect + errors.read + errors.write + errors.timeout
  local line = "RESULT requests=%%d duration_us=%%d p50_us=%%d p99_us=%%d non2xx=%%d socket_errors=%%d\\n"
  io.write(string.format(line, summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), errors.status, failed))
end
"""


class LoadError(Exception):
    """A load run that measured nothing trustworthy: wrk failed, or the server refused requests."""


@dataclass(frozen=True)
class Load:
    """What one load run measured."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float


def installed() -> bool:
    return shutil.which("wrk") is not None


def lua_string(text: str) -> str:
    """A Lua long-bracket literal: no escaping, at a level the text itself never closes."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def script(bodies: list[str]) -> str:
    return SCRIPT % {"bodies": ",\n".join(lua_string(body) for body in bodies)}


def parse(output: str) -> Load:
    """wrk's output -> what it measured; refuses a run in which any request failed."""
    found = re.search(r"^RESULT (.+)$", output, re.MULTILINE)
    if not found:
        raise LoadError("wrk printed no RESULT line (did the Lua script run?)")
    figures = {key: int(float(value)) for key, value in re.findall(r"(\w+)=(\S+)", found.group(1))}
    if figures["non2xx"] or figures["socket_errors"]:
        raise LoadError(
            f"the server failed under load: {figures['non2xx']} non-2xx answers, {figures['socket_errors']}"
            " socket errors (run `make serve` to see its log)"
        )
    if not figures["requests"]:
        raise LoadError("no request completed (is the server answering?)")
    return Load(
        requests=figures["requests"],
        rps=figures["requests"] / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
    )


def run(url: str, bodies: list[str], connections: int, seconds: int) -> Load:
    """POST the bodies in turn to url over `connections` keep-alive connections for `seconds`."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as folder:
        lua = Path(folder) / "rotate.lua"
        lua.write_text(script(bodies))
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={TIMEOUT_S}s", "-s", lua]
        try:
            result = subprocess.run(  # nosec B603 # wrk from PATH, fixed arguments, loopback URL
                [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False
            )
        except subprocess.TimeoutExpired:
            raise LoadError(f"wrk did not finish a {seconds} s run within a minute more") from None
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LoadError(f"wrk exited with code {result.returncode}: {last[0]}")
    return parse(result.stdout)
