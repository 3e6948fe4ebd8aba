"""The deployment side: kustomize packages build, validate and pin the contract; the image lints clean.

Validators come from the template's tools virtualenv (conftest.tool); the Flux and Flagger objects are
checked against the JSON schemas of their CRDs in shared/schemas/crds. Each validator also gets a broken input
once, so a validator that silently accepts everything fails these tests. Besides the rendered repo's packages,
the template's own platform stack (platform/: the shared MLflow server, never rendered) gets the same checks.
"""

from __future__ import annotations

import base64
import configparser
import json
import re
import shutil
import stat
import subprocess
import sys
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
    "gate": "deploy/gate",
}
# The template's platform stack, built from the template checkout itself (it is not rendered).
PLATFORM = TEMPLATE / "platform"
PLATFORM_PACKAGES = {"platform": PLATFORM / "mlflow", "flux-platform": PLATFORM / "flux"}
SERVING_KINDS = {"Namespace", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "NetworkPolicy"}
# deploy/base: serving and the weekly batch forecast (infra/backtest builds on the same base and leaves the
# forecast out); production adds Flagger's canary with its autoscaler and ingress, and leaves the Services to
# Flagger. The release gate is its own package (deploy/gate), out of reach of a promotion's pins.
BASE_KINDS = SERVING_KINDS | {"CronJob"}
EXPECTED_KINDS = {
    "staging": BASE_KINDS,
    "production": BASE_KINDS - {"Service"} | {"Canary", "HorizontalPodAutoscaler", "Ingress"},
    "gate": {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "NetworkPolicy"},
    "backtest": SERVING_KINDS | {"Job"},
    "flux-staging": {"GitRepository", "Kustomization"},
    "flux-production": {"GitRepository", "Kustomization"},
    "platform": SERVING_KINDS,
    "flux-platform": {"GitRepository", "Kustomization"},
}
PRODUCT_PACKAGES = ("staging", "production", "backtest")
GATE = f"{DEFAULT_SLUG}-gate"
# Checks skipped in the manifests, each with its reason beside it (checkov.io/skipN annotations).
JUSTIFIED_SKIPS = {"CKV_K8S_43", "CKV_K8S_35", "CKV_K8S_38"}
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


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def serving(docs: list[dict]) -> dict:
    """The serving Deployment (the release gate is a Deployment too)."""
    return one(docs, "Deployment", DEFAULT_SLUG)


def build(package: Path) -> list[dict]:
    """A kustomize package as kubectl builds it."""
    return [doc for doc in yaml.safe_load_all(ok(validator("kubectl", "kustomize", package))) if doc]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="module")
def built(project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Every package built with kubectl's kustomize, by short name (the rendered repo's, the platform's)."""
    out = tmp_path_factory.mktemp("built")
    docs = {}
    packages = {name: project / package for name, package in PACKAGES.items()} | PLATFORM_PACKAGES
    for name, package in packages.items():
        path = out / f"{name}.yaml"
        path.write_text(ok(validator("kubectl", "kustomize", package)))
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


@pytest.mark.parametrize("name", list(EXPECTED_KINDS))
def test_every_package_builds_with_the_expected_kinds(built, name):
    assert {doc["kind"] for doc in built[name]} == EXPECTED_KINDS[name]


def test_builtin_kinds_pass_kubernetes_validate_strict(builtin_manifests):
    # given
    files = sorted(builtin_manifests.glob("*.yaml"))
    expected = sum(len(documents(path)) for path in files)
    # when
    output = ok(validator("kubernetes-validate", "--strict", *files))
    # then every object was checked, none skipped for a missing schema
    # staging, production, backtest, gate, platform
    assert output.count(" passed for resource ") == expected == 8 + 9 + 8 + 6 + 7


def test_kubernetes_validate_rejects_an_unknown_field(built, tmp_path):
    # given a Deployment with a misspelt field
    deployment = serving(built["staging"])
    broken = write_docs(tmp_path / "broken.yaml", [{**deployment, "spec": {**deployment["spec"], "replica": 2}}])
    # when
    result = validator("kubernetes-validate", "--strict", broken)
    # then
    assert result.returncode != 0
    assert "replica" in result.stdout + result.stderr


def test_flux_and_flagger_objects_match_their_crd_schemas(built, tmp_path):
    # given the Flux sources and syncs (product and platform) and production's Flagger Canary
    custom = [doc for docs in built.values() for doc in docs if is_custom(doc)]
    assert sorted(doc["kind"] for doc in custom) == ["Canary"] + ["GitRepository"] * 3 + ["Kustomization"] * 4
    instances: dict[Path, list[Path]] = {}
    for index, doc in enumerate(custom):
        schema = crd_schema(doc)
        assert schema.is_file(), f"no CRD schema for {doc['apiVersion']} {doc['kind']}: see {CRD_SCHEMAS}/README.md"
        instance = tmp_path / f"{index}-{doc['kind']}.json"
        instance.write_text(json.dumps(doc))
        instances.setdefault(schema, []).append(instance)
    for schema, files in instances.items():
        # when one validator run checks every object of a kind
        result = ok(validator("check-jsonschema", "--schemafile", schema, *files))
        # then
        assert "ok -- validation done" in result, result


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


def test_the_canary_schema_rejects_a_misspelt_webhook_field(built, tmp_path):
    # given the Canary with its gate webhook's `url` misspelt (Flagger would call nothing)
    canary = one(built["production"], "Canary")
    (webhook,) = canary["spec"]["analysis"]["webhooks"]
    broken = {**webhook, "ulr": webhook.pop("url")}
    canary["spec"]["analysis"]["webhooks"] = [broken]
    instance = tmp_path / "broken.json"
    instance.write_text(json.dumps(canary))
    # when
    result = validator("check-jsonschema", "--schemafile", crd_schema(canary), instance)
    # then
    assert result.returncode != 0
    assert "ulr" in result.stdout


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


def test_checkov_fails_no_check_on_manifests_and_dockerfiles(project, builtin_manifests, tmp_path):
    # given the serving image's Dockerfile and the platform's MLflow server image's
    platform_docker = tmp_path / "platform-docker"
    platform_docker.mkdir()
    shutil.copy(PLATFORM / "mlflow" / "Dockerfile", platform_docker)
    # when
    result = validator(
        "checkov",
        *("-d", builtin_manifests, "-d", project / "docker", "-d", platform_docker),
        *("--framework", "kubernetes", "dockerfile"),
        *("--output", "json", "--skip-download", "--quiet"),
    )
    # then both frameworks ran, found something to check (both images), and failed nothing
    reports = json_values(result.stdout)
    summaries = {report["check_type"]: report["summary"] for report in reports}
    assert set(summaries) == {"kubernetes", "dockerfile"}, result.stdout[-3000:]
    assert all(summary["failed"] == 0 and summary["passed"] > 0 for summary in summaries.values()), summaries
    assert max(r["summary"]["resource_count"] for r in reports if r["check_type"] == "dockerfile") == 2
    assert result.returncode == 0
    # and the only skips are the justified ones, declared beside their reasons: image digests and
    # environment-variable credentials on the serving, forecast, gate, back-test and MLflow server workloads,
    # and the gate's API token
    assert summaries["dockerfile"]["skipped"] == 0
    assert summaries["kubernetes"]["skipped"] == 12


def test_checkov_skips_are_justified(built):
    skips = skip_annotations([doc for docs in built.values() for doc in docs])
    assert set(skips) == JUSTIFIED_SKIPS
    assert all(len(reason) > 40 for reason in skips.values()), skips


@pytest.mark.parametrize("image", ["serving", "platform-mlflow"])
def test_hadolint_reports_nothing(project, image):
    dockerfile = {"serving": project / "docker", "platform-mlflow": PLATFORM / "mlflow"}[image] / "Dockerfile"
    result = validator("hadolint", dockerfile)
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
    (container,) = containers([serving(docs)])
    # then the image is the pinned tag and the model.env values are the container's environment
    assert container["image"] == f"{IMAGE}:unreleased"
    assert config["data"] == {"MODEL_NAME": f"{DEFAULT_SLUG}-model", "MODEL_VERSION": "unreleased"}
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    assert all(doc["metadata"].get("namespace", doc["metadata"]["name"]) == f"{NAMESPACE}-{env}" for doc in docs)


def test_no_image_is_latest_or_unpinned(project, built):
    # serving and forecast in each environment; candidate, its wait and the replay in the back-test; the gate
    images = [c["image"] for name in (*PRODUCT_PACKAGES, "gate") for c in containers(built[name])]
    assert len(images) == 2 + 2 + 3 + 1
    assert all(re.fullmatch(rf"{IMAGE}:(unreleased|v\d+)(@sha256:[0-9a-f]{{64}})?", image) for image in images)
    (base_image,) = re.findall(r"^FROM (\S+)", (project / "docker" / "Dockerfile").read_text(), re.M)
    assert re.fullmatch(r"python:3\.1[12]\.\d+-slim-bookworm", base_image)
    # the platform's MLflow server: an exact MLflow release, its image built on an exact Python release
    assert {c["image"] for c in containers(built["platform"])} == {"ghcr.io/acme/mlflow-server:3.17.2"}
    dockerfile = (PLATFORM / "mlflow" / "Dockerfile").read_text()
    assert re.fullmatch(r"python:3\.1[12]\.\d+-slim-bookworm", re.findall(r"^FROM (\S+)", dockerfile, re.M)[0])
    assert '"mlflow[auth]==3.17.2"' in dockerfile


def test_production_runs_more_replicas_than_staging(built):
    # production's count is its autoscaler's floor: Flagger scales the canary and the primary from it
    staging = serving(built["staging"])["spec"]["replicas"]
    autoscaler = one(built["production"], "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == DEFAULT_SLUG
    assert autoscaler["spec"]["maxReplicas"] >= autoscaler["spec"]["minReplicas"] > staging >= 2


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_flux_syncs_the_overlay_from_the_default_branch(built, env):
    # given
    source = one(built[f"flux-{env}"], "GitRepository")
    sync = one(built[f"flux-{env}"], "Kustomization", f"{DEFAULT_SLUG}-{env}")
    # then
    assert source["spec"]["url"] == f"https://github.com/acme/{DEFAULT_SLUG}"
    assert source["spec"]["ref"] == {"branch": "main"}
    assert sync["spec"]["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert sync["spec"]["path"] == f"./deploy/{env}"
    assert (sync["spec"]["prune"], sync["spec"]["wait"]) == (True, True)
    assert sync["spec"]["targetNamespace"] == f"{NAMESPACE}-{env}"


def test_serving_pods_are_probed_and_hardened(built):
    for name in (*PRODUCT_PACKAGES, "gate", "platform"):
        for spec in pod_specs(built[name]):
            # only the gate gets an API token (it reads the canary target: see the gate's RBAC test)
            assert spec["automountServiceAccountToken"] is (name == "gate")
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"name": "tmp", "emptyDir": spec["volumes"][0]["emptyDir"]} in spec["volumes"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}
                assert container["resources"]["limits"] and container["resources"]["requests"]
    (container,) = containers([serving(built["staging"])])
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("package", ["staging", "backtest"])
def test_every_process_that_serves_keeps_its_scratch_in_tmp_on_one_thread(built, package):
    # given the containers that run the scoring service (the back-test Job serves the champion in its pod)
    for container in containers(built[package]):
        if container["name"] in {"wait-for-candidate", "gate"}:
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
    (scoring,) = containers([serving(docs)])
    # then once a week, never two at a time, the image's own CLI forecasts ...
    assert (cronjob["spec"]["schedule"], cronjob["spec"]["concurrencyPolicy"]) == ("0 5 * * 1", "Forbid")
    assert pod_template(cronjob)["spec"]["restartPolicy"] == "Never"
    assert forecast["command"] == ["python", "-m", "demand_forecast", "forecast"]
    # ... from the serving image and the model version the Deployment gets, whatever the overlay pins
    assert forecast["image"] == scoring["image"] == f"{IMAGE}:unreleased"
    model = {"configMapRef": {"name": one(docs, "ConfigMap")["metadata"]["name"]}}
    assert model in forecast["envFrom"] and model in scoring["envFrom"]
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
    forecast, (scoring,) = forecast_container(docs), containers([serving(docs)])
    assert forecast["image"] == scoring["image"] == f"{IMAGE}:v7@{digest}"
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


# ---------------------------------------------------------------- the release gate and the canary


def test_the_gate_runs_the_package_cli_from_its_own_pin_with_a_literal_model_name(project, built):
    # given
    docs = built["gate"]
    gate = one(docs, "Deployment", GATE)
    (container,) = containers([gate])
    # then the package CLI serves the gate, from the gate's own image entry (never the serving pin) ...
    assert container["command"] == [
        *("python", "-m", "demand_forecast", "gate-server", "--host", "0.0.0.0", "--port", "8080")
    ]
    assert container["image"] == f"{IMAGE}:unreleased"
    kustomization = yaml.safe_load((project / "deploy" / "gate" / "kustomization.yaml").read_text())
    assert [image["name"] for image in kustomization["images"]] == ["gate"]
    assert all(not resource.startswith("..") for resource in kustomization["resources"]), "nothing shared"
    # ... guarding the registered model named in its own manifest, not in the pinned `model` ConfigMap
    assert {"name": "MODEL_NAME", "value": f"{DEFAULT_SLUG}-model"} in container["env"]
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in container["env"]
    assert not [source for source in container["envFrom"] if source.get("configMapRef", {}).get("name") == "model"]
    # ... probed on its own endpoints, with the registry address and the gate identity from the namespace
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"configMapRef": {"name": "registry"}} in container["envFrom"]
    assert {"secretRef": {"name": GATE}} in container["envFrom"], "required: a missing Secret keeps the gate down"
    assert not [item for item in container["env"] if "PASSWORD" in item["name"] or "SECRET" in item["name"]]
    # ... in production only, behind a Service on port 80, the address the Canary's webhook names
    assert {doc["metadata"].get("namespace") for doc in docs} == {f"{NAMESPACE}-production"}
    service = one(docs, "Service", GATE)
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= pod_template(gate)["metadata"]["labels"].items()
    serving_labels = pod_template(serving(built["production"]))["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= serving_labels.items()


def test_the_gate_may_only_get_the_canary_target_and_configmaps(built):
    # given
    docs = built["gate"]
    account, role, binding = one(docs, "ServiceAccount"), one(docs, "Role"), one(docs, "RoleBinding")
    spec = pod_template(one(docs, "Deployment", GATE))["spec"]
    canary = one(built["production"], "Canary")
    # then the gate's pod runs as its own account, the only one that asks for a token ...
    assert spec["serviceAccountName"] == account["metadata"]["name"] == GATE
    assert (spec["automountServiceAccountToken"], account["automountServiceAccountToken"]) == (True, False)
    # ... bound to one Role in the Canary's namespace ...
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GATE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": GATE, "namespace": f"{NAMESPACE}-production"}]
    assert role["metadata"]["namespace"] == canary["metadata"]["namespace"] == f"{NAMESPACE}-production"
    # ... that may `get` the canary's target Deployment by name, and ConfigMaps (their names carry a hash)
    assert canary["spec"]["targetRef"]["name"] == canary["metadata"]["name"] == DEFAULT_SLUG
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resourceNames": [DEFAULT_SLUG], "resources": ["deployments"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
    ]
    # ... and no other pod of the project gets a token or a named account
    for name in (*PRODUCT_PACKAGES, "platform"):
        assert not [spec for spec in pod_specs(built[name]) if spec.get("serviceAccountName")]


def test_only_flagger_and_the_mlflow_server_reach_the_gate(built):
    # given
    docs = built["gate"]
    policy = one(docs, "NetworkPolicy", GATE)
    labels = pod_template(one(docs, "Deployment", GATE))["metadata"]["labels"]
    # then the policy selects the gate pods, restricts both directions ...
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # ... admits Flagger's namespace and the MLflow server's pods only, on the gate's port
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flagger-system"}}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlflow"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}},
        },
    ]
    # ... and lets it out only to named ports: DNS, the MLflow server, the Kubernetes API (443 or 6443 on a
    # private address), HTTPS outside private networks
    egress = policy["spec"]["egress"]
    assert all(rule["to"] and rule["ports"] for rule in egress)
    assert sorted(port["port"] for rule in egress for port in rule["ports"]) == [53, 53, 443, 443, 5000, 6443]
    blocks = [peer["ipBlock"] for rule in egress for peer in rule["to"] if "ipBlock" in peer]
    (public,) = [block for block in blocks if block["cidr"] == "0.0.0.0/0"]
    assert set(public["except"]) >= {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
    (api,) = [rule for rule in egress if any(port["port"] == 6443 for port in rule["ports"])]
    assert {peer["ipBlock"]["cidr"] for peer in api["to"]} == {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}


def test_the_canary_asks_the_gate_before_promoting_the_serving_deployment(built):
    # given
    docs = built["production"]
    canary = one(docs, "Canary")
    spec = canary["spec"]
    # then Flagger rolls the serving Deployment out through the NGINX ingress, scaled by the autoscaler ...
    assert spec["provider"] == "nginx"
    assert spec["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEFAULT_SLUG}
    assert spec["autoscalerRef"]["name"] == one(docs, "HorizontalPodAutoscaler")["metadata"]["name"]
    assert spec["ingressRef"]["name"] == one(docs, "Ingress")["metadata"]["name"]
    # ... judged on Flagger's builtin success rate and latency checks ...
    metrics = {metric["name"]: metric["thresholdRange"] for metric in spec["analysis"]["metrics"]}
    assert set(metrics) == {"request-success-rate", "request-duration"}
    assert metrics["request-success-rate"]["min"] >= 99 and metrics["request-duration"]["max"] > 0
    # ... and promoted only when the gate in the same namespace says yes, before Flagger's 30 s run out
    (webhook,) = spec["analysis"]["webhooks"]
    namespace = canary["metadata"]["namespace"]
    assert (webhook["name"], webhook["type"]) == ("confirm-promotion", "confirm-promotion")
    assert webhook["url"] == f"http://{GATE}.{namespace}/confirm-promotion"
    assert webhook["timeout"] == "30s"
    assert one(built["gate"], "Service", GATE)["metadata"]["namespace"] == namespace == f"{NAMESPACE}-production"
    assert set(webhook["metadata"]) == {"model_version", "image"}


def test_flux_applies_the_gate_on_its_own_in_production_only(built):
    # given
    source = one(built["flux-production"], "GitRepository")
    sync = one(built["flux-production"], "Kustomization", GATE)
    # then a Kustomization of its own applies deploy/gate into production, pruned and health-checked
    assert sync["spec"]["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert sync["spec"]["path"] == "./deploy/gate"
    assert (sync["spec"]["prune"], sync["spec"]["wait"]) == (True, True)
    assert sync["spec"]["targetNamespace"] == f"{NAMESPACE}-production"
    # ... and staging has neither the gate nor a sync of it (it has no canary to answer)
    assert not [doc for doc in built["flux-staging"] if doc["spec"].get("path") == "./deploy/gate"]
    assert not [doc for doc in built["staging"] if doc["metadata"]["name"] == GATE]


def test_staging_has_no_canary(built):
    assert not [doc for doc in built["staging"] if doc["kind"] in {"Canary", "HorizontalPodAutoscaler"}]


def primary_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels of Flagger's primary pods: the target's, with app.kubernetes.io/name suffixed -primary."""
    return {**labels, "app.kubernetes.io/name": labels["app.kubernetes.io/name"] + "-primary"}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and In expressions) applied to a pod's labels."""
    expressions = selector.get("matchExpressions", [])
    assert {expression["operator"] for expression in expressions} <= {"In"}
    return selector.get("matchLabels", {}).items() <= labels.items() and all(
        labels.get(expression["key"]) in expression["values"] for expression in expressions
    )


def test_production_leaves_the_services_and_the_replica_count_to_flagger(built):
    # given
    docs = built["production"]
    target = pod_template(serving(docs))["metadata"]["labels"]
    # then Flagger creates the serving Services (the base's would fight it) ...
    assert [doc["metadata"]["name"] for doc in docs if doc["kind"] == "Service"] == []
    # ... Flux does not scale the target back up after Flagger scaled it to zero ...
    assert "replicas" not in serving(docs)["spec"]
    # ... and the serving policy and disruption budget cover the canary's and the primary's pods, no others
    policy = one(docs, "NetworkPolicy", DEFAULT_SLUG)["spec"]["podSelector"]
    budget = one(docs, "PodDisruptionBudget")["spec"]["selector"]
    others = [pod_template(doc)["metadata"]["labels"] for doc in docs if doc["kind"] in {"CronJob", "Deployment"}]
    for selector in (policy, budget):
        assert selects(selector, target) and selects(selector, primary_labels(target))
        assert [labels for labels in others if selects(selector, labels)] == [target]


def promote(project: Path, tmp_path: Path, version: str, digest: str | None) -> list[dict]:
    """Production built after the rendered repo's own gitops.pinned_contents wrote the pins for `version`."""
    deploy = tmp_path / f"v{version}" / "deploy"
    shutil.copytree(project / "deploy", deploy)
    script = (
        "import sys; from pathlib import Path; from demand_forecast import gitops\n"
        "pins = gitops.pinned_contents(Path(sys.argv[1]), sys.argv[2], sys.argv[3] or None)\n"
        "for path, text in pins.items():\n"
        "    path.write_text(text)\n"
    )
    run([sys.executable, "-c", script, str(deploy / "production"), version, digest or ""], project)
    return build(deploy / "production")


def test_the_canary_webhook_carries_exactly_what_a_promotion_pins(project, tmp_path):
    sha = "sha256:" + "ab" * 32
    # given production as `make promote ENV=production` leaves it: version 7 with a digest, then 8 without
    for version, digest, image in [("7", sha, f"{IMAGE}:v7@{sha}"), ("8", None, f"{IMAGE}:v8")]:
        # when
        docs = promote(project, tmp_path, version, digest)
        # then the gate is asked about exactly the version and image Flux deploys, and the pins moved them
        (webhook,) = one(docs, "Canary")["spec"]["analysis"]["webhooks"]
        (scoring,) = containers([serving(docs)])
        assert webhook["metadata"] == {"model_version": version, "image": image}
        assert scoring["image"] == image
        assert one(docs, "ConfigMap")["data"]["MODEL_VERSION"] == version


def test_a_promotion_leaves_the_gate_byte_identical(project, tmp_path):
    # given the gate as the repository builds it before any release
    before = ok(validator("kubectl", "kustomize", project / "deploy" / "gate"))
    sha = "sha256:" + "cd" * 32
    for version, digest in [("7", sha), ("8", None)]:
        # when `make promote ENV=production` writes its pins (gitops.pinned_contents) into a copy of deploy/
        docs = promote(project, tmp_path, version, digest)
        after = ok(validator("kubectl", "kustomize", tmp_path / f"v{version}" / "deploy" / "gate"))
        # then the pins moved the serving Deployment, and not one byte of the gate: its code, its image and
        # the registered model it guards stay what the platform team reviewed
        assert containers([serving(docs)])[0]["image"].startswith(f"{IMAGE}:v{version}")
        assert after == before
        assert f":v{version}" not in after
        assert not [doc for doc in docs if doc["metadata"]["name"] == GATE]


def test_the_unpromoted_canary_asks_about_unreleased(built):
    (webhook,) = one(built["production"], "Canary")["spec"]["analysis"]["webhooks"]
    assert webhook["metadata"] == {"model_version": "unreleased", "image": f"{IMAGE}:unreleased"}


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


def test_the_backtest_leaves_out_the_forecast_the_gate_and_the_canary(built):
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in built["backtest"]}
    assert {name for kind, name in names if name.startswith(DEFAULT_SLUG) and kind != "Namespace"} == {DEFAULT_SLUG}
    assert ("Deployment", DEFAULT_SLUG) in names
    assert not {kind for kind, _ in names} & {"Canary", "CronJob", "HorizontalPodAutoscaler", "Ingress"}


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


# ---------------------------------------------------------------- the platform's shared MLflow server


def mlflow_server(built: dict[str, list[dict]]) -> tuple[dict, dict, dict[str, str]]:
    """The MLflow server's pod spec, its main container and its settings (ConfigMap mlflow-server)."""
    docs = built["platform"]
    spec = pod_template(one(docs, "Deployment", "mlflow"))["spec"]
    (container,) = spec["containers"]
    (settings,) = [
        doc["data"]
        for doc in docs
        if doc["kind"] == "ConfigMap" and "MLFLOW_SERVER_ALLOWED_HOSTS" in doc.get("data", {})
    ]
    return spec, container, settings


def test_the_platform_is_not_rendered_into_product_repos(project):
    assert PLATFORM.is_dir() and not (project / "platform").exists()


def test_the_mlflow_server_authenticates_on_postgres_and_proxies_an_object_store(built):
    # given
    spec, container, settings = mlflow_server(built)
    args = container["args"]
    # then every request is authenticated, artefacts are proxied to the bucket ...
    assert args[args.index("--app-name") + 1] == "basic-auth"
    assert "--serve-artifacts" in args
    assert args[args.index("--artifacts-destination") + 1] == "$(MLFLOW_ARTIFACTS_DESTINATION)"
    assert settings["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    # ... the stores and credentials come from the Secret, never from the manifests
    assert {"secretRef": {"name": "mlflow-server"}} in container["envFrom"]
    assert not any("postgresql" in arg for arg in args)
    committed = yaml.safe_dump([doc for doc in built["platform"] if doc["kind"] == "ConfigMap"])
    assert "postgresql://" not in committed and "admin_password" not in committed
    # ... and the auth config the server reads is the one the init container wrote into memory
    env = {item["name"]: item["value"] for item in container["env"]}
    auth = {volume["name"]: volume for volume in spec["volumes"]}["auth"]
    assert auth["emptyDir"]["medium"] == "Memory"
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/auth/basic_auth.ini"
    assert {"name": "auth", "mountPath": "/etc/mlflow/auth", "readOnly": True} in container["volumeMounts"]


def test_the_mlflow_server_delivers_webhooks_inside_the_cluster_and_no_further(built):
    # given
    _, container, settings = mlflow_server(built)
    policy = one(built["platform"], "NetworkPolicy")
    # then MLflow may call the gates' plain-http cluster addresses (it refuses both by default) ...
    assert settings["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == "http,https"
    assert settings["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    # ... while its egress is fenced: only the gates inside the cluster, never the link-local metadata address
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = policy["spec"]["egress"]
    assert all(rule["to"] and rule["ports"] for rule in egress)
    in_cluster = [peer for rule in egress for peer in rule["to"] if "podSelector" in peer and "ipBlock" not in peer]
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gate"}},
    } in in_cluster
    blocks = [peer["ipBlock"] for rule in egress for peer in rule["to"] if "ipBlock" in peer]
    assert blocks and all("169.254.0.0/16" in block["except"] for block in blocks)
    # ... and it answers the Service's in-cluster names (DNS-rebinding protection stays on)
    assert "mlflow.mlflow" in settings["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert one(built["platform"], "Service")["spec"]["ports"][0]["port"] == 80


def test_basic_auth_grants_read_by_default_and_holds_no_credential(built):
    # given the basic_auth.ini the ConfigMap carries
    (template,) = [
        doc["data"]["basic_auth.ini"] for doc in built["platform"] if "basic_auth.ini" in doc.get("data", {})
    ]
    config = configparser.ConfigParser()
    config.read_string(template)
    # then
    assert config["mlflow"]["default_permission"] == "READ"
    assert "admin_password" not in config["mlflow"]
    assert not config["mlflow"].getboolean("grant_default_workspace_access")


def init_script(built: dict[str, list[dict]], tmp_path: Path) -> tuple[str, Path]:
    """The auth-config init container's script, with its two mounts moved under tmp_path."""
    spec = pod_template(one(built["platform"], "Deployment", "mlflow"))["spec"]
    (init,) = spec["initContainers"]
    (template,) = [
        doc["data"]["basic_auth.ini"] for doc in built["platform"] if "basic_auth.ini" in doc.get("data", {})
    ]
    (tmp_path / "template").mkdir()
    (tmp_path / "auth").mkdir()
    (tmp_path / "template" / "basic_auth.ini").write_text(template)
    script = init["command"][-1]
    script = script.replace("/etc/mlflow/auth-template", str(tmp_path / "template"))
    return script.replace("/etc/mlflow/auth/", f"{tmp_path / 'auth'}/"), tmp_path / "auth" / "basic_auth.ini"


def test_the_init_container_writes_the_auth_database_uri_from_the_secret(built, tmp_path):
    # given an auth database URI whose password holds a "%" (URL-encoded characters do)
    script, written = init_script(built, tmp_path)
    uri = "postgresql://mlflow:p%40ss@db.example:5432/mlflow_auth"
    # when the init container runs with the Secret's value
    subprocess.run([sys.executable, "-c", script], check=True, env={"MLFLOW_AUTH_DATABASE_URI": uri}, timeout=60)
    # then MLflow's reader (configparser with interpolation) gets exactly that URI, and READ by default
    config = configparser.ConfigParser()
    config.read(written)
    assert config["mlflow"]["database_uri"] == uri
    assert config["mlflow"]["default_permission"] == "READ"


def test_the_init_container_refuses_to_start_without_the_secret(built, tmp_path):
    script, written = init_script(built, tmp_path)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={}, timeout=60)
    assert result.returncode != 0 and "MLFLOW_AUTH_DATABASE_URI" in result.stderr
    assert not written.exists()


def test_flux_syncs_the_platform_package(built):
    source = one(built["flux-platform"], "GitRepository")
    sync = one(built["flux-platform"], "Kustomization")
    assert sync["spec"]["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert sync["spec"]["path"] == "./platform/mlflow"
    assert (sync["spec"]["prune"], sync["spec"]["wait"]) == (True, True)
