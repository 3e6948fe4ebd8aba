"""Template 1.1.0 renamed the back-test policy key `max_regression` to `max_wape_regression`.

Copier runs this in the product repo on `copier update` across 1.1.0 (cruft users run it by hand, see the
CHANGELOG). It renames the key in config/backtest.toml and keeps the team's value and comment; it is a no-op when
the file is gone or already renamed. Standard library only: it runs under the Python that runs copier.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

POLICY_FILE = Path("config/backtest.toml")
OLD_KEY = re.compile(r"^max_regression(?=\s*=)", re.MULTILINE)


def migrate(path: Path = POLICY_FILE) -> bool:
    """Rename the key in place; True when the file changed."""
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    renamed = OLD_KEY.sub("max_wape_regression", text)
    if renamed == text:
        return False
    path.write_text(renamed, encoding="utf-8")
    return True


if __name__ == "__main__":
    if migrate():
        print(f"Migration 1.1.0: renamed max_regression to max_wape_regression in {POLICY_FILE}", file=sys.stderr)
