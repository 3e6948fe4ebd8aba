"""The consumer half on a rendered project: `make release-demo` walks every gate on the embedded SQLite store."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from conftest import DEFAULT_PACKAGE, VENV, make, render, run, tool, use_rendered_package
from scoring import post_raw, post_rows, predict_in_process, read_rows
from servers import https_api

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory, installed_project):
    project = render(tmp_path_factory.mktemp("release"))
    return project, make(project, "release-demo")


def test_every_gate_behaves_as_expected(demo):
    _, result = demo
    table = result.stdout[result.stdout.index("step ") :]
    rows = [line for line in table.splitlines() if line.endswith(("  yes", "  NO"))]
    assert len(rows) == 14
    assert all(row.endswith("  yes") for row in rows), table
    assert "back-test v2 vs champion v1                  refuse    refused" in table
    assert "promote v2 to staging                        refuse    refused" in table
    assert "production now runs version 1" in table


def test_the_worse_model_is_refused_for_its_failed_back_test(demo):
    project, result = demo
    assert "Promotion refused: version 2 failed its back-test" in result.stderr
    report = (project / "reports" / "backtest-v2.md").read_text()
    assert "FAILED" in report and "| window |" in report and "(the floor)" in report
    plot = (project / "reports" / "backtest-v2.svg").read_text()
    assert "Version 2: back-test FAILED" in plot and "champion v1" in plot and "floor 0.15" in plot


def test_git_records_every_promotion_and_the_rollback(demo):
    project, _ = demo
    log = subprocess.run(
        ["git", "log", "--format=%s", "--", "deploy"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert log == [
        "Roll back demand-forecast-model v1 to production (approved by bob.release-manager)",
        "Promote demand-forecast-model v3 to production (approved by bob.release-manager)",
        "Promote demand-forecast-model v3 to staging (approved by alice.reviewer)",
        "Promote demand-forecast-model v1 to production (approved by bob.release-manager)",
        "Promote demand-forecast-model v1 to staging (approved by alice.reviewer)",
        "Start the project from the template",
    ]
    assert 'newTag: "v1"' in (project / "deploy" / "production" / "kustomization.yaml").read_text()
    assert "MODEL_VERSION=3" in (project / "deploy" / "staging" / "model.env").read_text()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True)
    assert status.stdout == ""


def test_each_version_names_one_commit_the_run_recorded_as_its_source(demo):
    # given the demo's three trainings, run in one process with promotion commits in between
    from mlflow.tracking import MlflowClient

    project, _ = demo
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    versions = client.search_model_versions("name = 'demand-forecast-model'")
    assert len(versions) == 3
    for version in versions:
        # then the version's git_sha is the commit MLflow recorded as the run's source
        run_tags = client.get_run(version.run_id).data.tags
        assert version.tags["git_sha"] == run_tags["mlflow.source.git.commit"], version.version


def test_each_back_test_starts_one_server_that_hosts_candidate_and_champion(demo):
    # given the demo's three back-tests (v1 alone, then v2 and v3 each against champion v1)
    _, result = demo
    starts = re.findall(r"^Starting one scoring server for (.+) on http", result.stdout, re.MULTILINE)
    # then each back-test started exactly one server, and it loaded each version once
    assert starts == ["v1", "v2 and v1", "v3 and v1"], result.stdout


def test_one_server_answers_each_version_like_that_version_in_process_under_concurrent_requests(demo):
    # given one scoring server hosting v1 and the deliberately worse v2 (different models)
    project, _ = demo
    use_rendered_package(project)
    from demand_forecast.serve import serving
    from demand_forecast.settings import Settings

    settings = Settings.in_folder(project, "demand-forecast-model")
    settings = replace(settings, tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    rows = read_rows(project).tail(40).drop(columns="units_sold").reset_index(drop=True)
    expected = {version: predict_in_process(project, rows, version) for version in ("1", "2")}
    assert expected["1"] != pytest.approx(expected["2"]), "the two versions must differ for this test to mean anything"
    requests = [(version, index) for index in range(len(rows)) for version in ("1", "2")]
    with serving(settings, "1", "2") as (url_v1, url_v2):
        urls = {"1": url_v1, "2": url_v2}
        # when single rows of both versions arrive concurrently (batched together by the server) ...
        with ThreadPoolExecutor(max_workers=8) as pool:
            singles = list(pool.map(lambda r: post_rows(f"{urls[r[0]]}/invocations", rows.iloc[[r[1]]]), requests))
        # ... and whole batches, the default route included
        batch_v2 = post_rows(f"{url_v2}/invocations", rows)
        default = post_rows(f"{url_v1.rsplit('/', 1)[0]}/invocations", rows)
        refused = post_raw(f"{url_v1}/invocations", {"dataframe_split": {"columns": ["price"], "data": [[1.0]]}})
        metrics = urllib.request.urlopen(f"{url_v1.rsplit('/', 1)[0]}/metrics", timeout=10).read().decode()
    # then every prediction is the in-process prediction of the version that was asked
    for (version, index), served in zip(requests, singles, strict=True):
        assert served == pytest.approx([expected[version][index]], rel=1e-9), (version, index)
    assert batch_v2 == pytest.approx(expected["2"], rel=1e-9)
    assert default == pytest.approx(expected["1"], rel=1e-9)
    # and a request with the wrong columns gets a 400 naming them, and the server counts what it served
    assert refused[0] == 400 and "columns must be exactly" in refused[1]
    assert "adaptive_batch_size" in metrics or "batch_size" in metrics


def test_lineage_shows_the_append_only_release_history(demo):
    project, _ = demo
    text = make(project, "lineage", "VERSION=1").stdout
    assert "releases (append-only history):" in text
    assert "rollback  production v3 -> v1  approved by bob.release-manager" in text
    assert "promotion staging    none -> v1  approved by alice.reviewer" in text


# ---- the evidence page a reviewer opens, in a real browser -----------------------------------------------


@pytest.fixture(scope="module")
def evidence(demo):
    """`make evidence VERSION=1` after the demo: v1 was back-tested, promoted twice and restored by a rollback."""
    project, _ = demo
    result = make(project, "evidence", "VERSION=1")
    return project / "reports" / "evidence-v1.html", result


def test_evidence_prints_markdown_for_the_ci_summary_and_names_its_files_on_stderr(evidence):
    page, result = evidence
    assert result.stdout.startswith("## Evidence of demand-forecast-model version 1: back-test PASSED")
    assert "| Latest approval | rollback to production approved by bob.release-manager" in result.stdout
    assert result.stdout == page.with_suffix(".md").read_text()
    assert result.stderr.strip() == (
        "Evidence of version 1: reports/evidence-v1.md and reports/evidence-v1.html (logged to its run under evidence/)"
    )


def test_evidence_links_the_data_docs_of_the_training_run_which_name_the_data_and_the_run(evidence):
    page, _ = evidence
    links = re.findall(r'<a href="(file://[^"]+)"', page.read_text())
    assert len(links) == 3, links  # one page per suite
    for link in links:
        docs = Path(unquote(urlsplit(link).path)).read_text()
        assert "data/raw/sales.parquet (sha256 " in docs and "Run Name" in docs and "train-" in docs


def chromium() -> str:
    """Debian's chromium: CI must have it (.ci/run installs it); elsewhere the browser checks are skipped."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser checks: apt-get install chromium")
        pytest.skip("chromium is not installed (apt-get install chromium): the browser checks need it")
    return path


# Chromium's own services (updates, accounts, time) call Google hosts at start-up whatever the page: not the page.
BROWSER_SERVICES = re.compile(r"(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com|gvt2\.com)$")


@contextmanager
def proxy() -> Iterator[tuple[int, list[str]]]:
    """A proxy that answers nothing and records the host of every request a browser sends it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    hosts: list[str] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                request = connection.recv(4096).decode(errors="replace").split(" ")
                target = request[1] if len(request) > 1 else ""
                hosts.append(urlsplit(target).hostname or target.rsplit(":", 1)[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], hosts
    finally:
        done.set()
        thread.join()
        server.close()


def browse(url: str, tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Open a URL in headless Chromium with every request sent to `proxy`; the result and the hosts asked for."""
    with proxy() as (port, hosts):
        result = subprocess.run(
            [
                chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}", "--disable-background-networking",
                "--disable-component-update", "--disable-features=NetworkTimeServiceQuerying",
                f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>",
                "--window-size=1100,1400", *flags, url,
            ],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    return result, [host for host in hosts if not BROWSER_SERVICES.search(host)]


def test_a_reviewer_sees_the_verdict_floor_plot_and_approvals_and_the_page_fetches_nothing(evidence, tmp_path):
    # given the page written for version 1, opened from disk as a reviewer would
    page, _ = evidence
    # when a browser renders it
    result, requested = browse(page.as_uri(), tmp_path, "--dump-dom")
    # then what it shows is the verdict, the policy, the plot and the approval history
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", result.stdout))
    assert "Evidence of demand-forecast-model version 1" in text and "Back-test PASSED" in text
    assert "at most 0.15 (the floor)" in text and "floor 0.15" in text and "candidate v1" in text
    for approval in ("promotion staging none → 1 alice.reviewer", "rollback production 3 → 1 bob.release-manager"):
        assert approval in text, approval
    # and it asked the network for nothing
    assert requested == []


def test_the_network_check_sees_a_page_that_does_fetch(tmp_path):
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><img src="http://evidence-check.invalid/pixel.png">')
    _, requested = browse(page.as_uri(), tmp_path, "--dump-dom")
    assert requested == ["evidence-check.invalid"]


def test_the_evidence_page_renders_as_a_page_not_a_blank(evidence, tmp_path):
    from PIL import Image

    page, _ = evidence
    shot = tmp_path / "evidence.png"
    browse(page.as_uri(), tmp_path, f"--screenshot={shot}")
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is blank or nearly so"
    passed_banner = next((count for count, colour in colours if colour == (0xE3, 0xF4, 0xE8)), 0)
    assert passed_banner > 5000, "no green PASSED banner in view"


# ---- closing the loop: forecasts, monitoring and the retraining trigger, on what production runs (v1) ------

GITHUB_CI = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/demand-forecast", "GITHUB_TOKEN": "t0ken"}
DISPATCH = "/repos/acme/demand-forecast/actions/workflows/train.yml/dispatches"


def weeks_later(frame, weeks: int):
    """The same sales history, `weeks` newer (same generator and seed): the extraction once actuals arrived."""
    import pandas as pd
    from demand_forecast.data import generate_sales

    newest = frame["week_start"].max() + pd.Timedelta(weeks=weeks)
    return generate_sales(newest.date())


def shifted(frame, since, rng):
    """Prices up 30 % and promotions on half the weeks for half the stores since `since`; actuals after it at 40 %."""
    recent = frame["week_start"] >= since
    moved = recent & frame["store_id"].isin(["S01", "S02", "S03", "S04"])
    frame.loc[moved, "price"] = (frame.loc[moved, "price"] * 1.3).round(2)
    frame.loc[moved, "promo"] = (rng.random(int(moved.sum())) < 0.5).astype("int64")
    frame.loc[recent, "units_sold"] = (frame.loc[recent, "units_sold"] * 0.4).round().astype("int64")
    return frame


def monitor(project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`make monitor ENV=production`'s command itself: make exits 2 on any failing recipe (and names the
    command's status in its "Error N" line), so the 0 / 3 / 2 verdict is read from the command."""
    return run(
        [str(VENV / "bin" / "python"), "-m", DEFAULT_PACKAGE, "monitor"], project, False, ENV="production", **env
    )


@pytest.fixture(scope="module")
def monitored(demo, tmp_path_factory):
    """Forecast with production's version, let four weeks of actuals arrive, monitor as a GitHub job would
    (unchanged data), then again after the market moved and the model decayed."""
    import numpy as np
    import pandas as pd

    project, _ = demo
    use_rendered_package(project)
    data_uri = project / "data" / "raw" / "sales.parquet"
    forecasted = make(project, "forecast", ENV="production")
    history = pd.read_parquet(data_uri)
    forecast_from = history["week_start"].max() + pd.Timedelta(weeks=1)
    weeks_later(history, 4).to_parquet(data_uri, index=False)
    results = {}
    with https_api(tmp_path_factory.mktemp("ci-api"), 204) as (api, certificate, requests):
        ci = {**GITHUB_CI, "GITHUB_API_URL": api, "SSL_CERT_FILE": str(certificate)}
        results["unchanged"] = monitor(project, **ci)
        requests_when_healthy = list(requests)
        moved = shifted(pd.read_parquet(data_uri), forecast_from - pd.Timedelta(weeks=4), np.random.default_rng(3))
        moved.to_parquet(data_uri, index=False)
        results["shifted"] = monitor(project, **ci)
    return project, forecasted, results, requests_when_healthy, requests


def test_the_forecast_covers_every_series_for_the_horizon_with_production_s_version(monitored):
    import pandas as pd

    project, forecasted, *_ = monitored
    (written,) = (project / "data" / "forecasts").glob("*.parquet")
    forecasts = pd.read_parquet(written)
    assert set(forecasts.columns) >= {"store_id", "category", "week_start", "forecast", "model_version", "generated_at"}
    assert len(forecasts) == 8 * 5 * 8  # stores x categories x horizon_weeks (config/monitor.toml)
    assert set(forecasts["model_version"].astype(str)) == {"1"}
    assert "of version 1" in forecasted.stdout


def test_unchanged_data_is_healthy_and_triggers_nothing(monitored):
    _, _, results, requests_when_healthy, _ = monitored
    assert results["unchanged"].returncode == 0, results["unchanged"].stdout + results["unchanged"].stderr
    assert results["unchanged"].stdout.strip().splitlines()[-1] == "Verdict: healthy"
    assert requests_when_healthy == []


def test_drift_and_decay_breach_name_the_features_and_the_wape_and_trigger_training_once(monitored):
    project, _, results, _, requests = monitored
    result = results["shifted"]
    assert result.returncode == 3, result.stdout + result.stderr
    verdict = [line for line in result.stdout.splitlines() if line.startswith("Verdict: breach")]
    assert verdict and "price" in verdict[0] and "promo" in verdict[0] and "WAPE" in verdict[0], result.stdout
    assert (project / "reports" / "monitor-v1.html").stat().st_size > 10_000
    summary = json.loads((project / "reports" / "monitor-v1.json").read_text())
    assert summary["version"] == "1"
    (request,) = requests
    assert (request["method"], request["path"]) == ("POST", DISPATCH)
    assert request["headers"]["Authorization"] == "Bearer t0ken"
    assert request["body"]["ref"] == "main"
    assert request["body"]["inputs"]["reason"] == verdict[0].removeprefix("Verdict: breach — ")


def test_the_forecast_cronjob_is_pinned_by_promotion_and_moves_with_the_rollback(demo, tmp_path):
    # given the demo's history: v3 promoted to production, then rolled back to v1
    project, _ = demo
    promoted = subprocess.run(
        ["git", "log", "-1", "--format=%H", "--grep=Promote demand-forecast-model v3 to production"],
        cwd=project, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # when production is built at the promotion and now
    at_promotion = tmp_path / "at-promotion"
    subprocess.run(["git", "worktree", "add", "--quiet", str(at_promotion), promoted], cwd=project, check=True)
    try:
        pins = {"promotion": cronjob_pins(at_promotion), "rollback": cronjob_pins(project)}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(at_promotion)], cwd=project, check=True)
    # then the CronJob runs the image and model version the Deployment runs, at each commit
    assert pins == {"promotion": ("v3", "3", "v3", "3"), "rollback": ("v1", "1", "v1", "1")}


def cronjob_pins(project: Path) -> tuple[str, str, str, str]:
    """(image tag, MODEL_VERSION) of the production Deployment and of the forecast CronJob, as kustomize builds."""
    built = subprocess.run(
        [tool("kubectl"), "kustomize", str(project / "deploy" / "production")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    model = next(doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("model"))
    version = model["data"]["MODEL_VERSION"]
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
    cronjob = next(doc for doc in docs if doc["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    tags = [spec["containers"][0]["image"].rpartition(":")[2] for spec in (deployment, cronjob)]
    uses_model = [model["metadata"]["name"] in yaml.safe_dump(spec) for spec in (deployment, cronjob)]
    assert all(uses_model), "both must read MODEL_VERSION from the pinned model ConfigMap"
    return tags[0], version, tags[1], version
