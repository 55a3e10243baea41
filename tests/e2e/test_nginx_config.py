"""deploy/nginx.conf as rendered: accepted by nginx, and in step with gunicorn's settings."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from deploy import stack
from tests.conftest import require_program


def _render(tmp_path, **overrides):
    kwargs = {
        "prefix": tmp_path,
        "listen": "127.0.0.1:8080",
        "upstreams": ["127.0.0.1:8001", "127.0.0.1:8002"],
        "static_root": tmp_path / "static",
    } | overrides
    return stack.render_nginx_conf(**kwargs)


def _directives(conf_text: str, name: str) -> list[str]:
    return re.findall(r"^\s*" + name + r"\s+([^;{]*);", conf_text, flags=re.MULTILINE)


def test_rendered_config_passes_nginx_t(e2e_programs, e2e_workdir):
    layout = stack.NginxLayout(e2e_workdir / "config-check")
    stack.prepare_nginx(layout, conf_text=_render(layout.prefix))


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_production_render_passes_nginx_t(e2e_programs, e2e_workdir, tls):
    prefix = stack.make_world_readable_dir(e2e_workdir / f"production-render-{tls}")
    tls_args = []
    if tls:
        openssl = require_program("openssl")
        subprocess.run(
            [
                *[openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"],
                *["-subj", "/CN=localhost", "-keyout", str(prefix / "key.pem")],
                *["-out", str(prefix / "cert.pem")],
            ],
            capture_output=True,
            check=True,
        )
        tls_args = [
            "--tls-certificate",
            str(prefix / "cert.pem"),
            "--tls-key",
            str(prefix / "key.pem"),
        ]
    rendered = subprocess.run(
        [
            *[sys.executable, "deploy/stack.py", "render", "--upstream", "10.0.0.2:8000"],
            *["--upstream", "10.0.0.3:8000", "--static-root", "/srv/fibonacci/static"],
            *["--prefix", str(prefix), "--log-dir", str(prefix)],
            *["--pid-file", str(prefix / "nginx.pid"), *tls_args],
        ],
        cwd=stack.PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "server 10.0.0.2:8000" in rendered and "server 10.0.0.3:8000" in rendered
    assert ("return 301 https://" in rendered) is tls
    # On the server and again in each error location, whose own headers replace it.
    hsts_lines = rendered.count('add_header Strict-Transport-Security "max-age=63072000" always;')
    assert (
        hsts_lines
        == (1 + rendered.count("location @") + rendered.count("location = /_errors")) * tls
    )
    # Production names Debian's www-data; this check runs wherever nginx -t can.
    (prefix / "nginx.conf").write_text(rendered.replace("user www-data;", ""))
    check = subprocess.run(
        [stack.nginx_binary(), "-t", "-q", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("gunicorn_timeout", ["30", "45"])
def test_proxy_timeouts_outlast_gunicorns_timeout(tmp_path, gunicorn_timeout):
    timeout = stack.gunicorn_setting("timeout", {"GUNICORN_TIMEOUT": gunicorn_timeout})
    conf_text = _render(tmp_path, gunicorn_timeout=timeout)
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = _directives(conf_text, name)
        assert value == f"{int(gunicorn_timeout) + stack.PROXY_TIMEOUT_MARGIN_SECONDS}s"
    graceful = stack.runpy.run_path(str(stack.GUNICORN_CONF))["graceful_timeout"]
    assert graceful >= 30, "a reload must give in-flight requests gunicorn's timeout to finish"


def test_forwarding_headers_are_overwritten_with_the_peer_address(tmp_path):
    conf_text = _render(tmp_path)
    headers = dict(value.split(None, 1) for value in _directives(conf_text, "proxy_set_header"))
    assert headers["X-Real-IP"] == "$remote_addr"
    assert headers["X-Forwarded-For"] == "$remote_addr"


def test_every_upstream_is_listed_with_failover(tmp_path):
    conf_text = _render(tmp_path)
    assert _directives(conf_text, "server") == [
        "127.0.0.1:8001 max_fails=1 fail_timeout=5s",
        "127.0.0.1:8002 max_fails=1 fail_timeout=5s",
    ]
    assert _directives(conf_text, "proxy_next_upstream") == ["error timeout"]
    assert _directives(conf_text, "proxy_buffering") == ["on"]
    assert not _directives(conf_text, "proxy_cache")
    assert _directives(conf_text, "limit_req_status") == ["429"]
    assert _directives(conf_text, "limit_conn_status") == ["429"]
    assert _directives(conf_text, "server_tokens") == ["off"]
