"""Command-line entry point: one subcommand per pipeline stage.

CI runs these through `make <target>`; each subcommand calls the entry function of one stage module.
Values come from options or from the environment (VERSION, ENV, APPROVER, CONFIG, PORT: what `make` passes
on) and are checked whole by `inputs` before anything else. Stage modules are imported only when their
subcommand runs, after its values are checked, so `--help` and a refusal stay fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from {{ cookiecutter.package_name }} import __version__, inputs
from {{ cookiecutter.package_name }}.settings import Settings, shareable_uri, variable


def show_settings(settings: Settings, args: argparse.Namespace) -> int:
    """Print the resolved settings, so a user can see which store and model a command would use."""
    print(json.dumps(asdict(settings), default=str, indent=2))
    return 0


def generate_data(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.data import generate_data

    return generate_data(settings, inputs.scenarios(args.scenarios))


def validate_data(settings: Settings, args: argparse.Namespace) -> int:
    config_path = inputs.config(args.config)
    from {{ cookiecutter.package_name }}.fitting import TrainConfig
    from {{ cookiecutter.package_name }}.validation import validate_data

    return validate_data(settings, TrainConfig.from_toml(config_path).min_series_weeks)


def train(settings: Settings, args: argparse.Namespace) -> int:
    config_path = inputs.config(args.config)
    from {{ cookiecutter.package_name }}.train import train

    return train(settings, config_path, args.granularity, inputs.engine(args.engine))


def lineage(settings: Settings, args: argparse.Namespace) -> int:
    version = inputs.version(args.version, required=False)
    scenario = inputs.scenario(args.scenario)
    from {{ cookiecutter.package_name }}.lineage import show_lineage

    return show_lineage(settings, version, as_json=args.json, scenario=scenario)


def reproduce(settings: Settings, args: argparse.Namespace) -> int:
    version = inputs.version(args.version)
    from {{ cookiecutter.package_name }}.reproduce import reproduce

    return reproduce(settings, version)


def versions(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.lineage import show_versions

    return show_versions(settings)


def init_git(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from {{ cookiecutter.package_name }}.gitops import PinError, initialise_repository

    try:
        initialise_repository(Path.cwd())
    except PinError as error:
        print(f"init-git: {error}", file=sys.stderr)
        return 1
    return 0


def candidate(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.registry import (
        TRAINING_EVIDENCE,
        RegistryError,
        connect,
        get_version,
        latest_version,
        missing_evidence,
    )

    # VERSION (a run started to release a registered version, e.g. by the registry webhook): that version,
    # checked whole, registered and complete; otherwise the newest complete version.
    given = inputs.version(None, required=False)
    client = connect(settings)
    if given is not None:
        missing = missing_evidence(get_version(client, settings.model_name, given).tags, TRAINING_EVIDENCE)
        if missing:
            raise RegistryError(
                f"version {given} is incomplete (missing evidence: {', '.join(missing)}): only versions"
                " registered by `make train` (which records it) can be released"
            )
        print(given)
        return 0
    newest = latest_version(client, settings.model_name)
    if newest is None:
        print(f"No versions of {settings.model_name} yet: run `make train` first.", file=sys.stderr)
        return 1
    print(str(newest.version))
    return 0


def backtest(settings: Settings, args: argparse.Namespace) -> int:
    version = inputs.version(args.version)
    from {{ cookiecutter.package_name }}.backtest import run_backtest

    return run_backtest(settings, version, args.candidate_url, args.champion_url)


def evidence(settings: Settings, args: argparse.Namespace) -> int:
    version = inputs.version(args.version)
    from {{ cookiecutter.package_name }}.evidence import write_evidence

    return write_evidence(settings, version)


def promote(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.ci import release_approvers
    from {{ cookiecutter.package_name }}.promote import promote

    version, environment = inputs.version(args.version), inputs.environment(args.to)
    return promote(settings, version, environment, ",".join(release_approvers(os.environ, environment)))


def rollback(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.ci import release_approvers
    from {{ cookiecutter.package_name }}.promote import rollback

    environment = inputs.environment(args.to)
    return rollback(settings, environment, ",".join(release_approvers(os.environ, environment)))


def serve(settings: Settings, args: argparse.Namespace) -> int:
    version, port = inputs.version(args.version), inputs.port(args.port)
    from {{ cookiecutter.package_name }}.serve import serve_version

    return serve_version(settings, version, port)


def gate_server(settings: Settings, args: argparse.Namespace) -> int:
    host, port = inputs.host(args.host), inputs.port(args.port, default=8080)
    from {{ cookiecutter.package_name }}.gate_server import serve

    return serve(settings, host, port)


def adopt_releases(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.adopt_releases import adopt_releases

    return adopt_releases(settings)


def registry_permissions(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.registry_permissions import apply

    return apply(settings)


def image(settings: Settings, args: argparse.Namespace) -> int:
    version = inputs.version(args.version)
    from {{ cookiecutter.package_name }}.image import build_image

    return build_image(settings, version)


def approver(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.ci import resolve_approver

    print(resolve_approver(os.environ))
    return 0


def pinned(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.gitops import read_pins

    print(read_pins(settings.deploy_dir / inputs.environment(args.env)).model_version)
    return 0


def release_pr(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.gitops import read_pins
    from {{ cookiecutter.package_name }}.release_pr import open_release_pr

    environment = inputs.environment(args.env)
    version = inputs.version(args.version, required=False)
    pins = read_pins(settings.deploy_dir / environment)
    if version is not None and version != pins.model_version:
        raise inputs.InputError(
            f"VERSION={version} but deploy/{environment}/ pins version {pins.model_version}: promote it first"
        )
    print(open_release_pr(environment, pins.model_version, os.environ))
    return 0


def forecast(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.forecast import run_forecast

    version = inputs.version(args.version, required=False)
    given = args.env if args.env is not None else variable("ENV")  # neither: MODEL_VERSION (the CronJob)
    environment = None if version is not None or given is None else inputs.environment(given)
    run_forecast(settings, environment=environment, version=version)
    return 0


def monitor(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.monitoring import run_monitor

    return run_monitor(settings, inputs.environment(args.env))


def template_update(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.template_update import update

    update(Path.cwd(), os.environ)
    return 0


def template_pull_request(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.template_update import propose

    propose(Path.cwd(), os.environ)
    return 0


def release_demo(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.release_demo import run_release_demo

    return run_release_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="{{ cookiecutter.package_name }}", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help: str, usage: str | None = None) -> argparse.ArgumentParser:
        """`usage` is the make line a missing value is answered with (the CLI's own options also work)."""
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler, make_usage=usage)
        return sub

    command("settings", show_settings, "print the resolved settings")
    command("init-git", init_git, "make this folder a git repository with a first commit, if it is not one")
    command("generate-data", generate_data, "write the synthetic example data set to DATA_URI").add_argument(
        "--scenarios", help="store x category series to generate (default: $SCENARIOS, else 40)"
    )
    # Each option falls back to the environment variable make passes on (named in its help).
    version_help = "registry version number (default: $VERSION)"
    config_help = "training parameters, TOML (default: $CONFIG or config/train.toml)"
    command("validate-data", validate_data, "run the Great Expectations data gate on DATA_URI").add_argument(
        "--config", help=config_help
    )
    train_parser = command("train", train, "gate the data, train, log to MLflow, register a version")
    train_parser.add_argument("--config", help=config_help)
    train_parser.add_argument(
        "--granularity",
        choices=inputs.GRANULARITIES,
        help="one global model, or one per scenario (default: the config's)",
    )
    train_parser.add_argument(
        "--engine", help="where per-scenario fits run: local or spark (default: $ENGINE)"
    )
    lineage_parser = command("lineage", lineage, "show what a version was built from and its evidence")
    lineage_parser.add_argument("--version", help="registry version (default: $VERSION, else the newest)")
    lineage_parser.add_argument("--json", action="store_true", help="machine-readable output")
    lineage_parser.add_argument(
        "--scenario", help="one scenario of a per-scenario version, STORE:CATEGORY (default: $SCENARIO)"
    )
    command("versions", versions, "list every registered version with its stage, aliases and verdict")
    command(
        "reproduce", reproduce, "retrain a version from its snapshot and compare", "make reproduce VERSION=N"
    ).add_argument("--version", help=version_help)
    command("candidate", candidate, "print VERSION if it is complete, else the newest complete version")
    backtest_parser = command(
        "backtest",
        backtest,
        "replay history through candidate and champion; record verdict",
        "make backtest VERSION=N",
    )
    backtest_parser.add_argument("--version", help=version_help)
    backtest_parser.add_argument(
        "--candidate-url", help="score against this running server instead of starting one"
    )
    backtest_parser.add_argument("--champion-url", help="the champion's running server, if any")
    command(
        "evidence",
        evidence,
        "write a version's evidence report (Markdown and one HTML page); print the Markdown",
        "make evidence VERSION=N",
    ).add_argument("--version", help=version_help)
    # The approver is never an option: the CI gate supplies it, or APPROVER outside CI (see `ci`).
    promote_parser = command(
        "promote",
        promote,
        "promote a version to staging or production",
        "make promote VERSION=N ENV=staging|production APPROVER=<your name>",
    )
    promote_parser.add_argument("--version", help=version_help)
    promote_parser.add_argument("--to", help="staging or production (default: $ENV)")
    rollback_parser = command(
        "rollback",
        rollback,
        "return an environment to its previous release",
        "make rollback ENV=staging|production APPROVER=<your name>",
    )
    rollback_parser.add_argument("--to", help="staging or production (default: $ENV)")
    serve_parser = command(
        "serve",
        serve,
        "serve a registry version on 127.0.0.1 (BentoML, adaptive batching)",
        "make serve VERSION=N [PORT=5001]",
    )
    serve_parser.add_argument("--version", help=version_help)
    serve_parser.add_argument("--port", help="TCP port (default: $PORT or 5001)")
    gate_parser = command(
        "gate-server",
        gate_server,
        "serve the cluster's promotion gate (Flagger confirm-promotion) and the registry-event receiver",
    )
    gate_parser.add_argument("--host", help="IP address to listen on (default: 127.0.0.1)")
    gate_parser.add_argument("--port", help="TCP port (default: $PORT or 8080)")
    command(
        "image",
        image,
        "build (and push) the serving image of a version",
        "make image VERSION=N [PUSH_IMAGE=1]",
    ).add_argument("--version", help=version_help)
    command(
        "adopt-releases",
        adopt_releases,
        "move releases recorded before template 1.2 into the environment models (once, after upgrading)",
    )
    command(
        "registry-permissions",
        registry_permissions,
        "give each identity least privilege on the tracking server (admin credentials); print the matrix",
    )
    command("approver", approver, "print the approver of the current CI gate")
    command(
        "pinned", pinned, "print the model version deploy/<env>/ pins", "make pinned ENV=staging|production"
    ).add_argument("--env", help="staging or production (default: $ENV)")
    release_pr_parser = command(
        "release-pr",
        release_pr,
        "open a pull request with the release's manifest change",
        "make release-pr ENV=staging|production [VERSION=N]",
    )
    release_pr_parser.add_argument("--env", help="staging or production (default: $ENV)")
    release_pr_parser.add_argument("--version", help="must be what deploy/<env>/ pins (default: it)")
    command("release-demo", release_demo, "run the whole local release flow and print a summary")
    forecast_parser = command(
        "forecast",
        forecast,
        "forecast the next horizon_weeks of every series with the version an environment runs",
        "make forecast ENV=staging|production (or VERSION=N)",
    )
    forecast_parser.add_argument("--env", help="staging or production: the version deploy/<env>/ pins")
    forecast_parser.add_argument("--version", help="a registry version instead of an environment's")
    command(
        "monitor",
        monitor,
        "check drift and realised accuracy of the version an environment runs (exit 3 on a breach)",
        "make monitor ENV=production",
    ).add_argument("--env", help="staging or production (default: $ENV)")
    command(
        "template-update",
        template_update,
        "apply the newest template release on a branch and commit it (nothing when up to date)",
        "make template-update",
    )
    command(
        "template-pull-request",
        template_pull_request,
        "push the template-update branch and open its pull request (nothing when there is none)",
        "make template-pull-request",
    )
    return parser


def _store_failure(error: Exception) -> bool:
    """Errors raised by MLflow or its HTTP client: the tracking store failed underneath a command."""
    return type(error).__module__.split(".")[0] in ("mlflow", "requests", "urllib3")


# Library messages this project has decided are noise on every run, and why.
QUIET_LOGGERS = {
    # Models are pickled on purpose (the pipeline and its feature code) and only ever loaded from this
    # project's own registry; MLflow warns about pickle on every training.
    "mlflow.sklearn": logging.ERROR,
    # Creating the local SQLite store and the experiment on first use is expected, not news.
    "mlflow.store.db.utils": logging.WARNING,
    "mlflow.tracking.fluent": logging.WARNING,
}


def quiet_known_library_messages() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def _refusal(command: str, error: Exception, make_usage: str | None) -> str:
    """One line: what is wrong and the fix; a missing value is answered with the command's usage."""
    if isinstance(error, inputs.MissingInput) and make_usage:
        return f"{command}: {error}. Usage: {make_usage}"
    return f"{command}: {error}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a refusal or a failing store ends it with one line, never a traceback."""
    from {{ cookiecutter.package_name }}.ci import ApprovalError
    from {{ cookiecutter.package_name }}.registry import RegistryError

    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    quiet_known_library_messages()
    try:
        return args.handler(settings, args)
    except (inputs.InputError, ApprovalError, RegistryError) as error:
        print(_refusal(args.command, error, args.make_usage), file=sys.stderr)
        return 2 if isinstance(error, inputs.InputError) else 1
    except Exception as error:
        if not _store_failure(error):
            raise
        if getattr(error, "error_code", "") in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "no user"
            print(
                f"{args.command}: the tracking store refused {user!r} ({error.error_code}): run this step as"
                " the identity its pipeline job has (training, release or gate; docs/platform-team.md); the"
                " refused write changed nothing",
                file=sys.stderr,
            )
            return 1
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        store = shareable_uri(settings.tracking_uri)
        print(
            f"{args.command}: the tracking store {store} failed: {first_line} — check that it is up and"
            " re-run the same command (it completes or refuses; nothing is half-released)",
            file=sys.stderr,
        )
        return 1
