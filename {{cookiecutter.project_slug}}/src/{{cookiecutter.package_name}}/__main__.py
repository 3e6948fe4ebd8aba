"""Allow `python -m {{ cookiecutter.package_name }}`, which is what the Makefile and CI run."""

from {{ cookiecutter.package_name }}.cli import main

raise SystemExit(main())
