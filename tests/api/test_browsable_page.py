"""The browsable API page: whole for small windows, a bounded preview for large ones."""

from __future__ import annotations

import html
import json
import re

from fibonacci.api.renderers import BROWSABLE_PREVIEW_BYTES
from tests.conftest import reference_fibonacci

URL = "/api/v1/fibonacci/"


def _shown(page: bytes) -> str:
    """The response body as the page shows it (DRF puts it in a <pre>, escaped)."""
    match = re.search(rb'class="response-info".*?<pre class="prettyprint">(.*?)</pre>', page, re.S)
    assert match is not None
    body = match.group(1).split(b"</span>")[-1]  # after the status line and headers
    return html.unescape(body.decode())


def test_a_small_window_is_shown_whole(client):
    page = client.get(URL, {"n": 20, "format": "api"})
    assert page.status_code == 200
    body = json.loads(_shown(page.content))
    assert body == {"n": 20, "offset": 0, "sequence": reference_fibonacci(20)}


def test_a_large_window_shows_a_bounded_preview_and_says_how_to_get_the_rest(client, settings):
    settings.FIB_MAX_N = 10_000
    page = client.get(URL, {"n": 10_000, "offset": 0, "format": "api"})
    assert page.status_code == 200
    assert len(page.content) < 2 * BROWSABLE_PREVIEW_BYTES
    shown = _shown(page.content)
    preview, note = shown.split("\n\n(", 1)
    body = json.loads(preview)
    count = len(body["sequence"])
    assert 0 < count < 10_000
    assert body["sequence"] == reference_fibonacci(count)
    assert f"The first {count} of 10000 terms" in note
    assert "format=json" in note
