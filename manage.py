#!/usr/bin/env python
"""Django's command line for this project. Run it with the project's Python,
`.venv/bin/python manage.py ...` (README); started by another Python that has no
Django (`python manage.py ...` outside the virtualenv), it re-runs itself under
the checkout's .venv."""
import os
import sys
from pathlib import Path


def _venv_python() -> Path | None:
    venv = Path(__file__).resolve().parent / ".venv"
    python = venv / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != venv.resolve():
        return python
    return None


def main() -> None:
    try:
        import django  # noqa: F401
    except ImportError:
        python = _venv_python()
        if python is None:
            sys.exit("Django is not installed for this Python. Run `make install` in the checkout, then "
                     "`.venv/bin/python manage.py ...`.")
        os.execv(python, [str(python), *sys.argv])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
