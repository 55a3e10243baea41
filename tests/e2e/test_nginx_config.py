"""deploy/nginx.conf as rendered: accepted by nginx, in step with gunicorn, and its command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from deploy import nginx
from deploy.processes import PROJECT_DIR, gunicorn_setting, manage
from tests.conftest import require_program
from tests.processes import service_environment

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = ("Strict-Transport-Security", '"max-age=63072000"')


def _render(tmp_path, **overrides):
    kwargs = {
        "prefix": tmp_path,
        "listen": "127.0.0.1:8080",
        "upstreams": ["127.0.0.1:8001", "127.0.0.1:8002"],
        "static_root": tmp_path / "static",
        "gunicorn_timeout_seconds": 30,
    } | overrides
    return nginx.render_nginx_conf(**kwargs)


def _directives(conf_text: str, name: str) -> list[str]:
    return re.findall(r"^\s*" + name + r"\s+([^;{]*);", conf_text, flags=re.MULTILINE)


def _seconds(value: str) -> int:
    """An nginx time in whole seconds ("35s" or "35")."""
    match = re.fullmatch(r"(\d+)s?", value)
    assert match, f"not a time in seconds: {value!r}"
    return int(match.group(1))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m deploy ...` from the checkout, as the deployment docs run it."""
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


RENDER_ARGS = (
    *("--server-name", "api.example.com"),
    *("--upstream", "10.0.0.2:8000", "--static-root", "/srv/fibonacci/static"),
)


def test_rendered_config_passes_nginx_t(e2e_programs, e2e_workdir):
    layout = nginx.NginxLayout(e2e_workdir / "config-check")
    nginx.prepare_nginx(layout, conf_text=_render(layout.prefix))


@pytest.mark.parametrize("edge", [True, False], ids=["edge", "no-edge"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_production_render_passes_nginx_t(e2e_programs, e2e_workdir, tls, edge):
    prefix = nginx.make_world_readable_dir(e2e_workdir / f"production-render-{tls}-{edge}")
    if edge:
        # The production steps: the app writes the policy, render names the edge's files.
        manage("edge_policy", "--output", str(prefix / "policy.lua"), env=service_environment())
        edge_args = [
            *["--edge-policy", str(prefix / "policy.lua"), "--edge-log", str(prefix / "edge.log")],
            *["--edge-cache-dir", str(prefix / "cache")],
        ]
    else:
        edge_args = ["--no-edge"]
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
    result = _cli(
        *["render", "--gunicorn-timeout", "30", *RENDER_ARGS, "--upstream", "10.0.0.3:8000"],
        *["--prefix", str(prefix), "--log-dir", str(prefix)],
        *["--pid-file", str(prefix / "nginx.pid"), *tls_args, *edge_args],
    )
    assert result.returncode == 0, result.stderr
    rendered = result.stdout
    assert ("access_by_lua_block" in rendered) is edge
    assert ("proxy_cache fib_answers;" in rendered) is edge
    assert "server 10.0.0.2:8000" in rendered and "server 10.0.0.3:8000" in rendered
    assert ("return 301 https://" in rendered) is tls
    # Wherever the security headers are set (a server, each error location), HSTS too.
    hsts_lines = rendered.count('add_header Strict-Transport-Security "max-age=63072000" always;')
    assert hsts_lines == rendered.count("add_header X-Frame-Options DENY always;") * tls
    # Production names Debian's www-data; this check runs wherever nginx -t can.
    (prefix / "nginx.conf").write_text(rendered.replace("user www-data;", ""))
    nginx.check_nginx_conf(prefix / "nginx.conf", prefix=prefix)


def _blocks(conf_text: str, opening: str) -> list[str]:
    """The text of each `opening {` block (up to its closing brace), nested blocks included."""
    found = []
    for match in re.finditer(re.escape(opening) + r"[^{;]*\{", conf_text):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(conf_text[end], 0)
            end += 1
        found.append(conf_text[match.end() : end - 1])
    return found


def _own_headers(block: str) -> dict[str, str]:
    """add_header name -> value set directly in a block (not in the blocks nested in it)."""
    flat = re.sub(r"\{[^{}]*\}", "", block)
    while re.search(r"\{[^{}]*\}", flat):
        flat = re.sub(r"\{[^{}]*\}", "", flat)
    return {
        name: value.removesuffix(" always")
        for name, value in (line.split(None, 1) for line in _directives(flat, "add_header"))
    }


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_the_server_and_every_error_location_set_the_security_headers(tmp_path, tls):
    certificate = nginx.TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem") if tls else None
    conf_text = _render(tmp_path, tls=certificate)
    expected = SECURITY_HEADERS | (dict([HSTS]) if tls else {})
    (server,) = [block for block in _blocks(conf_text, "server") if "proxy_pass" in block]
    assert _own_headers(server) == expected
    error_locations = _blocks(server, "location @") + _blocks(server, "location = /_errors")
    assert len(error_locations) >= 3, "413, 429 and 502-504 at least"
    for location in error_locations:
        headers = _own_headers(location)
        assert {name: headers.get(name) for name in expected} == expected, location
    # The server's other locations set none of their own, so the server's apply to them.
    for location in _blocks(server, "location /"):
        assert _own_headers(location) == {}


def test_the_security_headers_are_written_once_in_the_template():
    template = nginx.NGINX_TEMPLATE.read_text()
    for name in SECURITY_HEADERS:
        assert f"add_header {name}" not in template
    snippet = nginx.SECURITY_HEADERS_TEMPLATE.read_text()
    for name, value in SECURITY_HEADERS.items():
        assert snippet.count(f"add_header {name} {value} always;") == 1


@pytest.mark.parametrize("gunicorn_timeout", [30, 45, 120])
def test_proxy_timeouts_outlast_the_gunicorn_timeout_given(tmp_path, gunicorn_timeout):
    conf_text = _render(tmp_path, gunicorn_timeout_seconds=gunicorn_timeout)
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = _directives(conf_text, name)
        assert _seconds(value) > gunicorn_timeout, (
            f"{name} {value} vs gunicorn {gunicorn_timeout} s"
        )
    graceful = gunicorn_setting("graceful_timeout", {})
    assert graceful >= 30, "a reload must give in-flight requests gunicorn's timeout to finish"


@pytest.mark.parametrize("file_timeout", [45, 90])
def test_render_takes_gunicorns_timeout_from_the_env_file_not_the_shell(tmp_path, file_timeout):
    env_file = tmp_path / "env"
    env_file.write_text(
        f"# as /etc/fibonacci/env\nDJANGO_SECRET_KEY='x'\n\nGUNICORN_TIMEOUT = {file_timeout}\n"
    )
    # The shell that renders says otherwise; gunicorn under systemd never sees it.
    shell = {**os.environ, "GUNICORN_TIMEOUT": "10"}
    result = _cli("render", "--env-file", str(env_file), *RENDER_ARGS, env=shell)
    assert result.returncode == 0, result.stderr
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = _directives(result.stdout, name)
        assert _seconds(value) > file_timeout, f"{name} {value} vs gunicorn {file_timeout} s"


def test_render_with_an_env_file_without_a_timeout_outlasts_gunicorns_default(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("DATABASE_URL=postgres://fibonacci@127.0.0.1/fibonacci\n")
    result = _cli("render", "--env-file", str(env_file), *RENDER_ARGS)
    assert result.returncode == 0, result.stderr
    (value,) = _directives(result.stdout, "proxy_read_timeout")
    assert _seconds(value) > 30, "gunicorn's documented default timeout is 30 s"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "one of the arguments --env-file --gunicorn-timeout is required"),
        (("--gunicorn-timeout", "0"), "--gunicorn-timeout: must be an integer >= 1, not '0'"),
        (("--gunicorn-timeout", "soon"), "--gunicorn-timeout: must be an integer >= 1"),
        (("--env-file", "/nonexistent/env"), "--env-file /nonexistent/env: "),
        (("--env-file", "{bad_timeout}"), "GUNICORN_TIMEOUT must be an integer >= 1, not '0'"),
        (("--env-file", "{not_a_variable}"), "expected NAME=value"),
        (
            ("--env-file", "{bad_timeout}", "--gunicorn-timeout", "30"),
            "not allowed with argument",
        ),
    ],
    ids=["none", "zero", "words", "missing-file", "zero-in-file", "bad-line", "both"],
)
def test_render_refuses_a_missing_or_bad_gunicorn_timeout(tmp_path, args, message):
    (tmp_path / "bad-timeout").write_text("GUNICORN_TIMEOUT=0\n")
    (tmp_path / "not-a-variable").write_text("GUNICORN_TIMEOUT\n")
    files = {
        "bad_timeout": str(tmp_path / "bad-timeout"),
        "not_a_variable": str(tmp_path / "not-a-variable"),
    }
    result = _cli("render", *RENDER_ARGS, *(arg.format(**files) for arg in args))
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr, result.stderr


def test_limit_options_after_render_are_rendered():
    result = _cli(
        *["render", "--gunicorn-timeout", "30", *RENDER_ARGS],
        *["--limit-req-rate", "7r/s", "--limit-req-burst", "8", "--limit-conn", "9"],
    )
    assert result.returncode == 0, result.stderr
    shield_zone = [
        zone for zone in _directives(result.stdout, "limit_req_zone") if "fib_req_per_ip" in zone
    ]
    assert shield_zone == ["$binary_remote_addr zone=fib_req_per_ip:10m rate=7r/s"]
    shield = [
        limit for limit in _directives(result.stdout, "limit_req") if "fib_req_per_ip" in limit
    ]
    assert shield and set(shield) == {"zone=fib_req_per_ip burst=8 nodelay"}
    # The API's location and the rest's.
    assert _directives(result.stdout, "limit_conn") == ["fib_conn_per_ip 9"] * 2


@pytest.mark.parametrize("command", ["render", "stack"])
@pytest.mark.parametrize(
    "option", [("--limit-req-rate", "7r/s"), ("--limit-req-burst", "8"), ("--limit-conn", "9")]
)
def test_limit_options_before_the_subcommand_are_refused_not_ignored(command, option):
    result = _cli(*option, command, "--gunicorn-timeout", "30", *RENDER_ARGS)
    assert result.returncode == 2 and result.stdout == ""
    assert "usage: python -m deploy" in result.stderr


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


def test_render_trusts_x_real_ip_only_from_the_proxies_it_is_given():
    plain = _cli("render", "--gunicorn-timeout", "30", *RENDER_ARGS)
    behind = _cli(
        *["render", "--gunicorn-timeout", "30", *RENDER_ARGS],
        *["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "2001:db8::1"],
    )
    refused = _cli("render", "--gunicorn-timeout", "30", *RENDER_ARGS, "--trusted-proxy", "lb")

    assert plain.returncode == 0 and behind.returncode == 0, plain.stderr + behind.stderr
    assert _directives(plain.stdout, "set_real_ip_from") == []
    assert _directives(behind.stdout, "set_real_ip_from") == ["10.0.0.0/8", "2001:db8::1"]
    assert _directives(behind.stdout, "real_ip_header") == ["X-Real-IP"]
    assert refused.returncode == 2 and "--trusted-proxy" in refused.stderr
