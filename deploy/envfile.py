"""The service's environment file (/etc/fibonacci/env) read as systemd's EnvironmentFile= reads it.

`python -m deploy render --env-file /etc/fibonacci/env` takes gunicorn's
timeout from here, so nginx is rendered for the gunicorn that systemd starts
with this file, not for the shell that renders.
"""

from __future__ import annotations

from pathlib import Path


class EnvFileError(ValueError):
    """A line that is not `NAME=value`, a comment or blank."""


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def read_env_file(path: Path) -> dict[str, str]:
    """NAME -> value of each `NAME=value` line; blank lines and `#` or `;` comments skipped.

    As systemd does: whitespace around the name and the value is dropped, and
    one pair of matching quotes around the value is removed. (systemd's rarer
    forms, backslash continuations and escapes, are not used in our file.)
    """
    variables: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        name, equals, value = stripped.partition("=")
        name = name.strip()
        valid_name = name.isascii() and name.replace("_", "a").isalnum() and not name[0].isdigit()
        if not equals or not valid_name:
            raise EnvFileError(f"{path}:{number}: expected NAME=value, not {stripped!r}")
        variables[name] = _unquoted(value.strip())
    return variables
