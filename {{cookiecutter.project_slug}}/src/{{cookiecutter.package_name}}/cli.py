"""Command-line entry point: one subcommand per pipeline stage.

CI runs these through `make <target>`; each subcommand calls the entry function of one stage module.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.settings import Settings


def show_settings(args: argparse.Namespace) -> int:
    """Print the resolved settings, so a user can see which store and model a command would use."""
    print(json.dumps(asdict(Settings.from_env()), default=str, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="{{ cookiecutter.package_name }}", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    settings = commands.add_parser("settings", help="print the resolved settings")
    settings.set_defaults(handler=show_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
