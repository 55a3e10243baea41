"""Fixtures of the edge-log shipper's tests: the log file as nginx holds it open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge_log_lines import EdgeLogFile


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """Where the edge log is."""
    return tmp_path / "edge.log"


@pytest.fixture
def nginx_log(log_path: Path) -> Iterator[EdgeLogFile]:
    """The edge log as nginx holds it open (O_APPEND, one write per line)."""
    log = EdgeLogFile(log_path)
    yield log
    log.close()
