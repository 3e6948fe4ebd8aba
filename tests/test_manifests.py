"""The deployment side: kustomize packages build, validate and pin the contract; the image lints clean.

Validators come from the template's tools virtualenv (conftest.tool); the Flux objects are checked against
the JSON schemas of their CRDs in shared/schemas/crds. Each validator also gets a broken input once, so a
validator that silently accepts everything fails these tests.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import DEFAULT_SLUG, TEMPLATE, VENV, make, render, run, tool

CRD_SCHEMAS = TEMPLATE.parent / "shared" / "schemas" / "crds"
NAMESPACE = DEFAULT_SLUG
IMAGE = f"ghcr.io/acme/{DEFAULT_SLUG}"
ENVIRONMENTS = ("staging", "production")
# Every kustomize package the rendered repo holds, by a short name.
PACKAGES = {
    "staging": "deploy/staging",
    "production": "deploy/production",
    "backtest": "infra/backtest",
    "flux-staging": "deploy/flux/staging",
    "flux-production": "deploy/flux/production",
}
SERVING_KINDS = {"Namespace", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "NetworkPolicy"}
# deploy/base: serving plus the weekly batch forecast (infra/backtest builds on the same base and leaves it out).
BASE_KINDS = SERVING_KINDS | {"CronJob"}
EXPECTED_KINDS = {
    "staging": BASE_KINDS,
    "production": BASE_KINDS,
    "backtest": SERVING_KINDS | {"Job"},
    "flux-staging": {"GitRepository", "Kustomization"},
    "flux-production": {"GitRepository", "Kustomization"},
}
# Checks skipped in the manifests, each with its reason beside it (checkov.io/skipN annotations).
JUSTIFIED_SKIPS = {"CKV_K8S_43", "CKV_K8S_35"}
PIN_BLOCK = f'images:\n  - name: serving\n    newName: {IMAGE}\n    newTag: "unreleased"\n'
MODEL_ENV = f"MODEL_NAME={DEFAULT_SLUG}-model\nMODEL_VERSION=unreleased\n"


# ---------------------------------------------------------------- helpers


def validator(name: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a validator from the tools virtualenv; the caller asserts on its exit code and output."""
    return subprocess.run(
        [tool(name), *map(str, args)], capture_output=True, text=True, check=False, cwd=cwd, timeout=600
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a validator that must have passed; its whole output otherwise."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def is_custom(doc: dict) -> bool:
    """A custom resource: its API group is one of the CRD groups we hold schemas for."""
    group = doc["apiVersion"].rpartition("/")[0]
    return bool(group) and (CRD_SCHEMAS / group).is_dir()


def crd_schema(doc: dict) -> Path:
    group, _, version = doc["apiVersion"].rpartition("/")
    return CRD_SCHEMAS / group / f"{doc['kind'].lower()}_{version}.json"


def write_docs(path: Path, docs: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def pod_template(doc: dict) -> dict:
    """The pod template of a workload; a CronJob's sits inside its job template."""
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]


def pod_specs(docs: list[dict]) -> list[dict]:
    return [pod_template(doc)["spec"] for doc in docs if doc["kind"] in {"Deployment", "Job", "CronJob"}]


def containers(docs: list[dict]) -> list[dict]:
    return [c for spec in pod_specs(docs) for c in spec.get("initContainers", []) + spec["containers"]]


def one(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="module")
def built(project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Every package built with kubectl's kustomize, by short name."""
    out = tmp_path_factory.mktemp("built")
    docs = {}
    for name, package in PACKAGES.items():
        path = out / f"{name}.yaml"
        path.write_text(ok(validator("kubectl", "kustomize", project / package)))
        docs[name] = documents(path)
    return docs


@pytest.fixture(scope="module")
def builtin_manifests(built: dict[str, list[dict]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file per package with its built-in kinds: what kubernetes-validate and checkov read."""
    out = tmp_path_factory.mktemp("builtin")
    for name, docs in built.items():
        if builtin := [doc for doc in docs if not is_custom(doc)]:
            write_docs(out / f"{name}.yaml", builtin)
    return out


# ---------------------------------------------------------------- kustomize and schema validation


@pytest.mark.parametrize("name", list(PACKAGES))
def test_every_package_builds_with_the_expected_kinds(built, name):
    assert {doc["kind"] for doc in built[name]} == EXPECTED_KINDS[name]


def test_builtin_kinds_pass_kubernetes_validate_strict(builtin_manifests):
    # given
    files = sorted(builtin_manifests.glob("*.yaml"))
    expected = sum(len(documents(path)) for path in files)
    # when
    output = ok(validator("kubernetes-validate", "--strict", *files))
    # then every object was checked, none skipped for a missing schema
    assert output.count(" passed for resource ") == expected == 8 + 8 + 8


def test_kubernetes_validate_rejects_an_unknown_field(built, tmp_path):
    # given a Deployment with a misspelt field
    deployment = one(built["staging"], "Deployment")
    broken = write_docs(tmp_path / "broken.yaml", [{**deployment, "spec": {**deployment["spec"], "replica": 2}}])
    # when
    result = validator("kubernetes-validate", "--strict", broken)
    # then
    assert result.returncode != 0
    assert "replica" in result.stdout + result.stderr


def test_flux_objects_match_their_crd_schemas(built, tmp_path):
    # given
    custom = [doc for name in PACKAGES for doc in built[name] if is_custom(doc)]
    assert len(custom) == 4
    for index, doc in enumerate(custom):
        # when
        schema = crd_schema(doc)
        assert schema.is_file(), f"no CRD schema for {doc['apiVersion']} {doc['kind']}: see {CRD_SCHEMAS}/README.md"
        instance = tmp_path / f"{index}-{doc['kind']}.json"
        instance.write_text(json.dumps(doc))
        # then
        assert "ok -- validation done" in ok(validator("check-jsonschema", "--schemafile", schema, instance))


def test_crd_schemas_reject_an_unknown_field(built, tmp_path):
    # given a Flux Kustomization with a field its CRD does not have
    sync = one(built["flux-staging"], "Kustomization")
    instance = tmp_path / "broken.json"
    instance.write_text(json.dumps({**sync, "spec": {**sync["spec"], "prunne": True}}))
    # when
    result = validator("check-jsonschema", "--schemafile", crd_schema(sync), instance)
    # then
    assert result.returncode != 0
    assert "prunne" in result.stdout


# ---------------------------------------------------------------- security scanners


def json_values(text: str) -> list[dict]:
    """Checkov prints one JSON value per scanned root, back to back; flatten them into one list."""
    decoder, values, index = json.JSONDecoder(), [], 0
    while index < len(text.rstrip()):
        value, index = decoder.raw_decode(text, index)
        values += value if isinstance(value, list) else [value]
        while index < len(text) and text[index].isspace():
            index += 1
    return values


def skip_annotations(docs: list[dict]) -> dict[str, str]:
    """The checkov skips declared in manifests (`checkov.io/skipN: CHECK_ID=reason`), by check id."""
    skips = {}
    for doc in docs:
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                skips[check] = reason
    return skips


def test_checkov_fails_no_check_on_manifests_and_dockerfile(project, builtin_manifests):
    # when
    result = validator(
        "checkov",
        *("-d", builtin_manifests, "-d", project / "docker"),
        *("--framework", "kubernetes", "dockerfile"),
        *("--output", "json", "--skip-download", "--quiet"),
    )
    # then both frameworks ran, found something to check, and failed nothing
    summaries = {report["check_type"]: report["summary"] for report in json_values(result.stdout)}
    assert set(summaries) == {"kubernetes", "dockerfile"}, result.stdout[-3000:]
    assert all(summary["failed"] == 0 and summary["passed"] > 0 for summary in summaries.values()), summaries
    assert result.returncode == 0
    # and the only skips are the justified ones, declared beside their reasons
    assert summaries["dockerfile"]["skipped"] == 0
    assert summaries["kubernetes"]["skipped"] == 7


def test_checkov_skips_are_justified(built):
    skips = skip_annotations([doc for docs in built.values() for doc in docs])
    assert set(skips) == JUSTIFIED_SKIPS
    assert all(len(reason) > 40 for reason in skips.values()), skips


def test_hadolint_reports_nothing(project):
    result = validator("hadolint", project / "docker" / "Dockerfile")
    assert (result.returncode, result.stdout) == (0, "")


def test_hadolint_flags_an_unpinned_image(tmp_path):
    # given
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:latest\nRUN pip install flask\n")
    # when
    result = validator("hadolint", dockerfile)
    # then
    assert result.returncode != 0
    assert "DL3007" in result.stdout
    assert "DL3013" in result.stdout


def test_make_image_without_a_docker_engine_points_to_serve_and_fails_closed_in_ci(project, tmp_path):
    # given a docker CLI whose engine does not answer
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\nexit 1\n")
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    path = f"{tmp_path}:{VENV / 'bin'}:/usr/bin:/bin"
    # when / then: locally it says what to do instead and succeeds; in CI the stage fails
    local = make(project, "image", "VERSION=4", PATH=path, CI="")
    assert "no Docker engine answers" in local.stdout
    assert "make serve VERSION=4" in local.stdout
    in_ci = make(project, "image", "VERSION=4", check=False, PATH=path, CI="true")
    assert in_ci.returncode != 0
    assert "make serve VERSION=4" in in_ci.stdout


# ---------------------------------------------------------------- the GitOps pin contract


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_overlays_pin_exactly_the_contract_strings(project, env):
    kustomization = (project / "deploy" / env / "kustomization.yaml").read_text()
    assert kustomization.count("images:") == 1
    assert PIN_BLOCK in kustomization
    assert (project / "deploy" / env / "model.env").read_text() == MODEL_ENV


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_pins_reach_the_serving_container(built, env):
    # given
    docs = built[env]
    config = one(docs, "ConfigMap")
    (serving,) = containers([one(docs, "Deployment")])
    # then the image is the pinned tag and the model.env values are the container's environment
    assert serving["image"] == f"{IMAGE}:unreleased"
    assert config["data"] == {"MODEL_NAME": f"{DEFAULT_SLUG}-model", "MODEL_VERSION": "unreleased"}
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in serving["envFrom"]
    assert all(doc["metadata"].get("namespace", doc["metadata"]["name"]) == f"{NAMESPACE}-{env}" for doc in docs)


def test_no_image_is_latest_or_unpinned(project, built):
    images = [c["image"] for docs in built.values() for c in containers(docs)]
    assert len(images) == 2 * 2 + 3
    assert all(re.fullmatch(rf"{IMAGE}:(unreleased|v\d+)(@sha256:[0-9a-f]{{64}})?", image) for image in images)
    (base_image,) = re.findall(r"^FROM (\S+)", (project / "docker" / "Dockerfile").read_text(), re.M)
    assert re.fullmatch(r"python:3\.1[12]\.\d+-slim-bookworm", base_image)


def test_production_runs_more_replicas_than_staging(built):
    staging, production = (one(built[env], "Deployment")["spec"]["replicas"] for env in ENVIRONMENTS)
    assert production > staging >= 2


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_flux_syncs_the_overlay_from_the_default_branch(built, env):
    # given
    source = one(built[f"flux-{env}"], "GitRepository")
    sync = one(built[f"flux-{env}"], "Kustomization")
    # then
    assert source["spec"]["url"] == f"https://github.com/acme/{DEFAULT_SLUG}"
    assert source["spec"]["ref"] == {"branch": "main"}
    assert sync["spec"]["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert sync["spec"]["path"] == f"./deploy/{env}"
    assert (sync["spec"]["prune"], sync["spec"]["wait"]) == (True, True)
    assert sync["spec"]["targetNamespace"] == f"{NAMESPACE}-{env}"


def test_serving_pods_are_probed_and_hardened(built):
    for name in ("staging", "production", "backtest"):
        for spec in pod_specs(built[name]):
            assert spec["automountServiceAccountToken"] is False
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"name": "tmp", "emptyDir": spec["volumes"][0]["emptyDir"]} in spec["volumes"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}
                assert container["resources"]["limits"] and container["resources"]["requests"]
    (serving,) = containers([one(built["staging"], "Deployment")])
    assert serving["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert serving["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert serving["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert serving["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert {"mountPath": "/tmp", "name": "tmp"} in serving["volumeMounts"]


@pytest.mark.parametrize("package", ["staging", "backtest"])
def test_every_process_that_serves_keeps_its_scratch_in_tmp_on_one_thread(built, package):
    # given the containers that run the scoring service (the back-test Job serves the champion in its pod)
    for container in containers(built[package]):
        if container["name"] == "wait-for-candidate":
            continue
        env = {item["name"]: item["value"] for item in container["env"]}
        # then BentoML writes only under the emptyDir at /tmp (the root filesystem is read-only)
        assert env["BENTOML_HOME"].startswith("/tmp/"), container["name"]
        assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]
        assert (env["OMP_NUM_THREADS"], env["BENTOML_DO_NOT_TRACK"]) == ("1", "true")


# ---------------------------------------------------------------- the weekly batch forecast


def forecast_container(docs: list[dict]) -> dict:
    (container,) = pod_template(one(docs, "CronJob"))["spec"]["containers"]
    return container


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_forecast_cronjob_runs_the_package_cli_weekly_with_what_the_deployment_serves(built, env):
    # given
    docs = built[env]
    cronjob = one(docs, "CronJob")
    forecast = forecast_container(docs)
    (serving,) = containers([one(docs, "Deployment")])
    # then once a week, never two at a time, the image's own CLI forecasts ...
    assert (cronjob["spec"]["schedule"], cronjob["spec"]["concurrencyPolicy"]) == ("0 5 * * 1", "Forbid")
    assert pod_template(cronjob)["spec"]["restartPolicy"] == "Never"
    assert forecast["command"] == ["python", "-m", "demand_forecast", "forecast"]
    # ... from the serving image and the model version the Deployment gets, whatever the overlay pins
    assert forecast["image"] == serving["image"] == f"{IMAGE}:unreleased"
    model = {"configMapRef": {"name": one(docs, "ConfigMap")["metadata"]["name"]}}
    assert model in forecast["envFrom"] and model in serving["envFrom"]
    # ... reading DATA_URI and FORECAST_URI from the ConfigMap the platform team provides, and no Secret
    assert {"configMapRef": {"name": "forecast-store"}} in forecast["envFrom"]
    assert not [source for source in forecast["envFrom"] if "secretRef" in source]


def test_one_promotion_pins_both_the_deployment_and_the_forecast_cronjob(project, tmp_path):
    # given the production overlay as `make promote VERSION=7 ENV=production` leaves it (with a digest)
    deploy = tmp_path / "deploy"
    shutil.copytree(project / "deploy", deploy)
    digest = "sha256:" + "ab" * 32
    overlay = deploy / "production" / "kustomization.yaml"
    overlay.write_text(overlay.read_text().replace('newTag: "unreleased"', f'newTag: "v7"\n    digest: {digest}'))
    (deploy / "production" / "model.env").write_text(MODEL_ENV.replace("unreleased", "7"))
    # when
    docs = yaml.safe_load_all(ok(validator("kubectl", "kustomize", deploy / "production")))
    docs = [doc for doc in docs if doc]
    # then both workloads run the pinned image with the ConfigMap that says version 7
    forecast, (serving,) = forecast_container(docs), containers([one(docs, "Deployment")])
    assert forecast["image"] == serving["image"] == f"{IMAGE}:v7@{digest}"
    config = one(docs, "ConfigMap")
    assert config["data"]["MODEL_VERSION"] == "7"
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in forecast["envFrom"]


def test_the_forecast_pods_take_no_ingress(built):
    # given
    docs = built["production"]
    labels = pod_template(one(docs, "CronJob"))["metadata"]["labels"]
    policies = [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
    (policy,) = [doc for doc in policies if doc["metadata"]["name"] == f"{DEFAULT_SLUG}-forecast"]
    # then the policy selects exactly the forecast pods and allows no ingress at all
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "forecast"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in policy["spec"]


# ---------------------------------------------------------------- the ephemeral back-test environment


def test_backtest_job_replays_against_the_candidate_service(built):
    docs = built["backtest"]
    job = one(docs, "Job")
    (wait,) = job["spec"]["template"]["spec"]["initContainers"]
    (replay,) = job["spec"]["template"]["spec"]["containers"]
    assert '"http://candidate:8080/readyz"' in wait["command"][-1]
    assert replay["command"] == [
        *("python", "-m", "demand_forecast", "backtest", "--version", "$(MODEL_VERSION)"),
        *("--candidate-url", "http://candidate:8080"),
    ]
    assert one(docs, "Service")["metadata"]["name"] == "candidate"
    assert one(docs, "Namespace")["metadata"]["name"] == f"{NAMESPACE}-backtest"


# A stand-in kubectl: logs calls; `apply -k DIR` builds DIR with the real kustomize; the Job is in JOB_STATE.
FAKE_KUBECTL = """#!/bin/sh
echo "$*" >> "$KUBECTL_LOG"
case "$1 $3" in
  "apply "*) "$REAL_KUBECTL" kustomize "$3" > "$APPLIED" ;;
  "-n get") echo "$JOB_STATE" ;;
  "-n logs") echo "logs of $4" ;;
esac
"""


def run_backtest_script(project: Path, tmp_path: Path, job_state: str, tracking_uri: str, version: str = "7"):
    """Run infra/backtest/run.sh with the stand-in kubectl; return the result, calls and applied objects."""
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    env = {
        "KUBECTL": str(kubectl),
        "REAL_KUBECTL": tool("kubectl"),
        "KUBECTL_LOG": str(tmp_path / "calls.log"),
        "APPLIED": str(tmp_path / "applied.yaml"),
        "JOB_STATE": job_state,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "REPORTS_DIR": str(tmp_path / "reports"),
        "BACKTEST_TIMEOUT": "0",
    }
    result = run(["infra/backtest/run.sh"], project, check=False, VERSION=version, **env)
    calls = (tmp_path / "calls.log").read_text().splitlines() if (tmp_path / "calls.log").exists() else []
    applied = documents(tmp_path / "applied.yaml") if (tmp_path / "applied.yaml").exists() else []
    return result, calls, applied


DELETE_NAMESPACE = f"delete namespace {NAMESPACE}-backtest --ignore-not-found --wait=false"


def test_backtest_script_deploys_the_candidate_and_always_cleans_up(project, tmp_path):
    # when the Job completes
    result, calls, applied = run_backtest_script(
        project, tmp_path, "SuccessCriteriaMet Complete ", "https://mlflow.example"
    )
    # then the candidate image and version were applied, logs kept, the namespace deleted
    assert result.returncode == 0, result.stdout + result.stderr
    assert {c["image"] for c in containers(applied)} == {f"{IMAGE}:v7"}
    assert one(applied, "ConfigMap")["data"]["MODEL_VERSION"] == "7"
    secret = one(applied, "Secret")["data"]
    assert base64.b64decode(secret["MLFLOW_TRACKING_URI"]).decode() == "https://mlflow.example"
    assert calls[0].startswith("apply -k ") and calls[-1] == DELETE_NAMESPACE
    assert "logs of job/backtest" in (tmp_path / "reports" / "backtest-cluster-v7.log").read_text()
    assert not list((project / "build").glob("backtest.*")), "the temporary overlay (with the secret) is removed"


def test_backtest_script_fails_when_the_job_fails_or_times_out(project, tmp_path):
    for state in ("FailureTarget Failed ", ""):
        result, calls, _ = run_backtest_script(project, tmp_path, state, "https://mlflow.example")
        assert result.returncode == 1
        assert calls[-1] == DELETE_NAMESPACE
        assert ("failed" if state else "timeout") in result.stdout


def test_backtest_script_refuses_a_store_the_cluster_cannot_reach(project, tmp_path):
    result, calls, _ = run_backtest_script(project, tmp_path, "", "sqlite:///mlflow.db")
    assert result.returncode == 2
    assert "make backtest VERSION=7" in result.stderr
    assert calls == []
