"""Command-line entry point: one subcommand per pipeline stage.

CI runs these through `make <target>`; each subcommand calls the entry function of one stage module.
Stage modules are imported only when their subcommand runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.settings import Settings


def show_settings(settings: Settings, args: argparse.Namespace) -> int:
    """Print the resolved settings, so a user can see which store and model a command would use."""
    print(json.dumps(asdict(settings), default=str, indent=2))
    return 0


def generate_data(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.data import generate_data

    return generate_data(settings)


def validate_data(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.validation import validate_data

    return validate_data(settings)


def train(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.train import train

    return train(settings, args.config)


def lineage(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.lineage import show_lineage

    return show_lineage(settings, args.version, as_json=args.json)


def reproduce(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.reproduce import reproduce

    return reproduce(settings, args.version)


def candidate(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.registry import connect, latest_version

    newest = latest_version(connect(settings), settings.model_name)
    if newest is None:
        print(f"No versions of {settings.model_name} yet: run `make train` first.", file=sys.stderr)
        return 1
    print(str(newest.version))
    return 0


def backtest(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.backtest import run_backtest

    return run_backtest(settings, args.version, args.candidate_url, args.champion_url)


def promote(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.promote import promote

    return promote(settings, args.version, args.to, args.approver)


def rollback(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.promote import rollback

    return rollback(settings, args.to, args.approver)


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.serve import serve_version

    return serve_version(settings, args.version, args.port)


def image(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.image import build_image

    return build_image(settings, args.version)


def approver(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.approvals import resolve_approver

    print(resolve_approver(os.environ))
    return 0


def release_pr(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.release_pr import open_release_pr

    print(open_release_pr(args.env, args.version, os.environ))
    return 0


def release_demo(settings: Settings, args: argparse.Namespace) -> int:
    from {{ cookiecutter.package_name }}.release_demo import run_release_demo

    return run_release_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="{{ cookiecutter.package_name }}", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    command("settings", show_settings, "print the resolved settings")
    command("generate-data", generate_data, "write the synthetic example data set to DATA_URI")
    command("validate-data", validate_data, "run the Great Expectations data gate on DATA_URI")
    command("train", train, "gate the data, train, log to MLflow, register a version").add_argument(
        "--config", type=Path, default=Path("config/train.toml"), help="training parameters (TOML)"
    )
    lineage_parser = command("lineage", lineage, "show what a version was built from and its evidence")
    lineage_parser.add_argument("--version", help="registry version (default: the newest)")
    lineage_parser.add_argument("--json", action="store_true", help="machine-readable output")
    command("reproduce", reproduce, "retrain a version from its snapshot and compare").add_argument(
        "--version", required=True
    )
    command("candidate", candidate, "print the newest registered version number")
    backtest_parser = command(
        "backtest", backtest, "replay history through candidate and champion; record verdict"
    )
    backtest_parser.add_argument("--version", required=True)
    backtest_parser.add_argument(
        "--candidate-url", help="score against this running server instead of starting one"
    )
    backtest_parser.add_argument("--champion-url", help="the champion's running server, if any")
    promote_parser = command("promote", promote, "promote a version to staging or production")
    promote_parser.add_argument("--version", required=True)
    promote_parser.add_argument("--to", required=True, choices=["staging", "production"])
    promote_parser.add_argument("--approver", required=True, help="who approved (from the CI gate)")
    rollback_parser = command("rollback", rollback, "return an environment to its previous version")
    rollback_parser.add_argument("--to", required=True, choices=["staging", "production"])
    rollback_parser.add_argument(
        "--approver", default="", help="who approved (default: the current identity)"
    )
    serve_parser = command(
        "serve", serve, "serve a registry version with MLflow's scoring server on 127.0.0.1"
    )
    serve_parser.add_argument("--version", required=True)
    serve_parser.add_argument("--port", type=int, default=5001)
    command("image", image, "build (and push) the serving image of a version").add_argument(
        "--version", required=True
    )
    command("approver", approver, "print the approver of the current CI gate")
    release_pr_parser = command(
        "release-pr", release_pr, "open a pull request with the promotion's manifest change"
    )
    release_pr_parser.add_argument("--env", required=True, choices=["staging", "production"])
    release_pr_parser.add_argument("--version", required=True)
    command("release-demo", release_demo, "run the whole local release flow and print a summary")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(Settings.from_env(), args)
