"""The docs stay true: the configuration table is what the settings read; links resolve.

The variables are found by running fibproject/settings.py and
deploy/gunicorn.conf.py in this process with an os.environ that records every
name looked up, not by searching their text for strings.
"""

from __future__ import annotations

import os
import re
import runpy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
SETTINGS_FILE = PROJECT_DIR / "fibproject" / "settings.py"
GUNICORN_CONF = PROJECT_DIR / "deploy" / "gunicorn.conf.py"
CONFIGURATION_DOC = PROJECT_DIR / "docs" / "configuration.md"
DOC_FILES = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").rglob("*.md"))]

# The configuration tables' header; other tables on the page are not the reference.
TABLE_HEADER = ("variable", "default", "production", "what it does")

# Environments that between them take every branch of the settings that reads
# a variable: development, production (debug off, the required variables set),
# and with Redis and PostgreSQL configured.
_PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "configuration-docs-test-key",
    "DJANGO_ALLOWED_HOSTS": "api.example.com",
}
ENVIRONMENTS: list[dict[str, str]] = [
    {"DJANGO_DEBUG": "true"},
    _PRODUCTION,
    {
        **_PRODUCTION,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATABASE_URL": "postgres://fibonacci@127.0.0.1:5432/fibonacci",
        "GUNICORN_CONTROL_SOCKET": "/run/fibonacci/gunicorn.ctl",
    },
]


class RecordingEnviron(dict[str, str]):
    """A stand-in for os.environ that remembers every name looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.looked_up: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.looked_up.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.looked_up.add(key)
        return super().__contains__(key)


def variables_read(path: Path, environment: Mapping[str, str]) -> set[str]:
    """The names `path` looks up in the environment when run under `environment`."""
    recording = RecordingEnviron(environment)
    with pytest.MonkeyPatch.context() as patch:
        # os.getenv and every `os.environ` lookup go through this module attribute.
        patch.setattr(os, "environ", recording)
        runpy.run_path(str(path), run_name="configuration_docs_probe")
    return recording.looked_up


def documented_variables(markdown: str) -> list[str]:
    """The first column of every configuration table in `markdown`, backticks removed."""
    names: list[str] = []
    in_table = False
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|"):
            in_table = False
        elif tuple(cell.lower() for cell in cells) == TABLE_HEADER:
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            names.append(cells[0].strip("`"))
    return names


@pytest.fixture(scope="module")
def read_by_settings() -> set[str]:
    """Every variable the settings and the gunicorn config read, in any of ENVIRONMENTS."""
    names: set[str] = set()
    for environment in ENVIRONMENTS:
        names |= variables_read(SETTINGS_FILE, environment)
        names |= variables_read(GUNICORN_CONF, environment)
    return names


def test_the_probe_sees_what_the_settings_read(read_by_settings):
    # Guards the method itself: if lookups stopped being recorded, the table
    # test below would compare two empty sets' worth of nothing.
    assert {"DJANGO_DEBUG", "DATABASE_URL", "FIB_MAX_N", "GUNICORN_WORKERS"} <= read_by_settings
    # Read only when REDIS_URL is set: the environments reach that branch.
    assert "FIB_CACHE_KEY_PREFIX" in read_by_settings


def test_every_variable_read_is_in_the_configuration_table(read_by_settings):
    documented = set(documented_variables(CONFIGURATION_DOC.read_text()))
    missing = sorted(read_by_settings - documented)
    assert not missing, f"add these to {CONFIGURATION_DOC.name}: {missing}"


def test_every_variable_in_the_configuration_table_is_read(read_by_settings):
    documented = set(documented_variables(CONFIGURATION_DOC.read_text()))
    unread = sorted(documented - read_by_settings)
    assert not unread, f"{CONFIGURATION_DOC.name} documents variables nothing reads: {unread}"


def test_each_variable_has_one_row():
    names = documented_variables(CONFIGURATION_DOC.read_text())
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)


def test_the_table_parser_reads_the_first_column():
    markdown = (
        "| variable | default | production | what it does |\n"
        "|---|---|---|---|\n"
        "| `FIB_A` | `1` | `1` | a |\n"
        "| FIB_B | | | b |\n"
        "\n"
        "| status | when |\n"
        "|---|---|\n"
        "| `FIB_NOT_A_VARIABLE` | elsewhere |\n"
    )
    assert documented_variables(markdown) == ["FIB_A", "FIB_B"]


# --- Links ------------------------------------------------------------------

# [text](target) and [text](target "title"); images too. Code spans are removed first.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, - for spaces."""
    headings = _HEADING.findall(_FENCED.sub("", markdown))  # a shell comment is no heading
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_links(path: Path) -> Iterator[tuple[str, Path, str]]:
    """(target as written, file it names, anchor) for each relative link in a page."""
    text = _CODE.sub("", path.read_text())
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        yield target, linked, anchor


def test_there_are_docs_to_check():
    assert CONFIGURATION_DOC in DOC_FILES
    assert any(True for _ in relative_links(PROJECT_DIR / "README.md"))


@pytest.mark.parametrize("page", DOC_FILES, ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_every_relative_link_resolves(page):
    broken = []
    for target, linked, anchor in relative_links(page):
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif (
            anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text())
        ):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, broken
