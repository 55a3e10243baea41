"""Fixtures that run the production stack for real: nginx in front of gunicorn on loopback.

Processes are started with deploy/processes.py and nginx is rendered with
deploy/nginx.py (what `make stack` runs), on free ports, against the real
PostgreSQL (a database created for the session and dropped after it) and the
real Redis (database 13, a key prefix of the session's own). Every process is
stopped by its pid at teardown; every test has a timeout (pytest-timeout).

Clients connect to 127.0.0.1 from distinct loopback source addresses
(127.0.x.y), so nginx sees, and the rate limiter counts, a different client
per test without any forwarding header being involved.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from deploy import nginx, processes
from deploy.nginx import NginxLayout, make_world_readable_dir
from tests.conftest import TEST_DATABASE_URL, require_file, require_program, require_service
from tests.processes import free_port, service_environment

E2E_REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/13")
# Enough for the load the tests make, so that only the tests that mean to meet
# a limit do.
UNLIMITED_ENV = {"FIB_RATE_LIMIT": "1000000/m", "FIB_RATE_LIMIT_LARGE": "1000000/m"}
GENEROUS_NGINX: dict[str, Any] = {
    "limit_req_rate": "100000r/s",
    "limit_req_burst": 100000,
    "limit_conn": 1000,
}
# Every test here starts real processes; none may hang the suite.
E2E_TIMEOUT_SECONDS = 120


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this directory `e2e`, with a timeout (pytest-timeout) of its own."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_SECONDS))


_addresses = (f"127.0.{third}.{fourth}" for third in range(10, 250) for fourth in range(2, 255))
_address_lock = threading.Lock()


def new_client_address() -> str:
    """A loopback source address no other test in this session has used."""
    with _address_lock:
        return next(_addresses)


@pytest.fixture
def client_address() -> str:
    """A fresh client address: its own rate-limit budget, its own rows in the log."""
    return new_client_address()


# --- HTTP through nginx -------------------------------------------------------


@dataclass
class Reply:
    """One HTTP answer: status, headers (all values per name) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The single value of a header, None when absent; fails if it appears twice."""
        values = self.header_values(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times: {values}"
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value sent for a header name."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def http_request(
    port: int,
    path: str,
    *,
    source: str = "127.0.0.1",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout_seconds: float = 15.0,
    host: str = "127.0.0.1",
) -> Reply:
    """One request to host:port (127.0.0.1, or [::1]) from the loopback address `source`."""
    connection = http.client.HTTPConnection(
        host.strip("[]"), port, timeout=timeout_seconds, source_address=(source, 0)
    )
    try:
        connection.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


@dataclass
class LoadResult:
    """What one request of a load run got: status (0 for a transport error) and request id."""

    status: int
    request_id: str | None
    error: str | None = None


class LoadGenerator:
    """Client threads sending GETs through nginx until stopped, or a count or time bound."""

    def __init__(
        self,
        *,
        port: int,
        path: str,
        source: str,
        threads: int = 4,
        max_requests: int = 20_000,
        max_seconds: float = 30.0,
        keepalive: bool = True,
    ) -> None:
        self.port, self.path, self.source = port, path, source
        self.headers = {"Host": "127.0.0.1"} | ({} if keepalive else {"Connection": "close"})
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.results: list[LoadResult] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> list[LoadResult]:
        """Stop the threads (each finishes its request) and return every result."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.results

    def wait_for(self, count: int, *, timeout_seconds: float = 10.0) -> None:
        """Block until at least count requests were answered."""
        deadline = time.monotonic() + timeout_seconds
        while len(self.results) < count:
            assert time.monotonic() < deadline, f"only {len(self.results)} of {count} answered"
            time.sleep(0.02)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.results) >= self.max_requests:
                    return
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=15, source_address=(self.source, 0)
                )
            try:
                connection.request("GET", self.path, headers=self.headers)
                response = connection.getresponse()
                response.read()
                result = LoadResult(response.status, response.getheader("X-Request-ID"))
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                result = LoadResult(0, None, f"{type(exc).__name__}: {exc}")
                if connection is not None:
                    connection.close()
                connection = None
            with self._lock:
                self.results.append(result)
        if connection is not None:
            connection.close()


# --- Real PostgreSQL and Redis ------------------------------------------------


def _postgres_url(database: str) -> str:
    parts = urlsplit(TEST_DATABASE_URL)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def e2e_programs() -> None:
    """nginx and the edge's modules must be installed: skipped locally without, a failure in CI."""
    require_program("nginx")
    for module in ("ndk_http_module.so", "ngx_http_lua_module.so"):
        require_file(nginx.MODULE_DIR / module, "nginx's Lua module (docs/edge.md)")
    require_file(Path("/usr/share/lua/5.1/ngx/semaphore.lua"), "lua-resty-core")


@pytest.fixture(scope="session")
def e2e_database_url() -> Iterator[str]:
    """A PostgreSQL database of this session's own, migrated; dropped afterwards."""
    import psycopg

    require_service("PostgreSQL", TEST_DATABASE_URL)
    name = f"e2e_{secrets.token_hex(6)}"
    admin_url = _postgres_url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _postgres_url(name)
    try:
        processes.manage(
            "migrate", "--no-input", "--verbosity", "0", env=service_environment(DATABASE_URL=url)
        )
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def e2e_redis() -> Iterator[tuple[str, str]]:
    """(REDIS_URL, key prefix): the real Redis, keys of this session only, deleted afterwards."""
    import redis

    require_service("Redis", E2E_REDIS_URL)
    prefix = f"e2e-{secrets.token_hex(6)}"
    yield E2E_REDIS_URL, prefix
    client = redis.Redis.from_url(E2E_REDIS_URL)
    # The cache's keys and the rate-limit counters' (KEY_PREFIX "<prefix>-rl").
    for pattern in (f"{prefix}:*", f"{prefix}-rl:*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    client.close()


@dataclass
class PrivateRedis:
    """A redis-server of one test's own, on a Unix socket and with a password."""

    socket: Path
    password: str

    def url(self, *, db: int, credentials: str | None = None) -> str:
        """A REDIS_URL for the app: `user:password`, or the server's password."""
        return f"unix://{credentials or ':' + self.password}@{self.socket}?db={db}"

    def client(self, *, db: int = 0) -> Any:
        """A redis-py client, logged in (a context manager that closes it)."""
        import redis

        return redis.Redis(unix_socket_path=str(self.socket), password=self.password, db=db)

    def calls(self, command: str) -> int:
        """How many times the server has run `command` (INFO commandstats)."""
        with self.client() as client:
            stats = client.info("commandstats").get(f"cmdstat_{command.lower()}", {})
        return int(stats.get("calls", 0))


@pytest.fixture
def private_redis(e2e_workdir: Path) -> Iterator[PrivateRedis]:
    """A Redis that only this test talks to: its command counts are the test's alone.

    On a Unix socket that nginx's workers (`nobody`) may use, with a password,
    keeping nothing on disk; stopped at teardown.
    """
    program = require_program("redis-server")
    directory = new_workdir(e2e_workdir, "redis")
    server = PrivateRedis(socket=directory / "redis.sock", password=secrets.token_hex(8))
    process = subprocess.Popen(
        [
            program,
            *("--port", "0", "--unixsocket", str(server.socket), "--unixsocketperm", "777"),
            *("--requirepass", server.password, "--save", "", "--appendonly", "no"),
            *("--dir", str(directory)),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not server.socket.exists():
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not open its socket"
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def e2e_workdir() -> Iterator[Path]:
    """A directory for the session's prefixes and logs that nginx's workers can enter.

    Run as root, nginx's workers are `nobody`; pytest's own tmp_path is private
    to its user, so this one is made world-readable (0755) under /tmp.
    """
    workdir = make_world_readable_dir(Path(tempfile.mkdtemp(prefix="fibonacci-e2e-")))
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


def new_workdir(parent: Path, name: str) -> Path:
    """A fresh world-readable directory under parent."""
    return make_world_readable_dir(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent)))


@pytest.fixture(scope="session")
def e2e_static_root(e2e_programs: None, e2e_workdir: Path) -> Path:
    """collectstatic once, into a directory nginx's workers can read."""
    static_root = make_world_readable_dir(e2e_workdir / "static")
    env = service_environment(DATABASE_URL="sqlite:///:memory:") | {
        "DJANGO_STATIC_ROOT": str(static_root)
    }
    processes.manage("collectstatic", "--no-input", "--verbosity", "0", env=env)
    return static_root


def logged_requests(database_url: str, *, client_ip: str) -> list[tuple[str, str, int]]:
    """(request_id, client_ip, status) of the request-log rows for one client address."""
    import psycopg

    with psycopg.connect(database_url) as connection:
        return connection.execute(
            "SELECT request_id, client_ip, status FROM fibonacci_requestlog WHERE client_ip = %s",
            (client_ip,),
        ).fetchall()


def wait_for_log(
    database_url: str, *, client_ip: str, done: Callable[[list[tuple[str, str, int]]], bool]
) -> list[tuple[str, str, int]]:
    """Poll the request log (written about once a second) until done(rows), for 10 s at most."""
    deadline = time.monotonic() + 10
    while True:
        rows = logged_requests(database_url, client_ip=client_ip)
        if done(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.25)


# --- The stack ------------------------------------------------------------------


@dataclass
class AppInstance:
    """One gunicorn instance (a master and its workers) on a loopback port."""

    port: int
    process: subprocess.Popen[bytes]
    access_log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """host:port, as nginx's upstream and access log name it."""
        return f"127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        """Send signum to the master, by its pid."""
        self.process.send_signal(signum)

    def kill_instance(self) -> None:
        """SIGKILL the master and its workers at once, as a machine dies: its process group."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def access_log_text(self) -> str:
        """gunicorn's access log so far."""
        return self.access_log.read_text() if self.access_log.exists() else ""

    def access_log_entries(self) -> list[dict[str, Any]]:
        """gunicorn's access log so far: one JSON object per request (FIB_LOG_FORMAT=json)."""
        return [json.loads(line) for line in self.access_log_text().splitlines()]


@dataclass
class NginxInstance:
    """A rendered nginx in its own prefix, listening on a loopback port."""

    port: int
    layout: NginxLayout
    process: subprocess.Popen[bytes]
    edge: nginx.EdgeFiles | None = None
    # Where its edge log shipper serves the edge's metrics (start_nginx's shipper_metrics).
    shipper_metrics_port: int | None = None

    def get(self, path: str, **kwargs: Any) -> Reply:
        """A request through this nginx."""
        return http_request(self.port, path, **kwargs)

    def access_log_entries(self) -> list[dict[str, Any]]:
        """nginx's access log: one JSON object per request, with its upstream and request id."""
        return [json.loads(line) for line in self.layout.access_log.read_text().splitlines()]

    def upstreams_for(self, client_ip: str) -> list[str]:
        """The upstream that answered each logged request from client_ip, in order."""
        return [
            entry["upstream"]
            for entry in self.access_log_entries()
            if entry["client_ip"] == client_ip
        ]


@dataclass
class StackFactory:
    """Starts gunicorn instances and nginx in front of them; stops all of it by pid."""

    workdir: Path
    base_env: dict[str, str]
    static_root: Path
    database_url: str
    apps: list[AppInstance] = field(default_factory=list)
    nginxes: list[NginxInstance] = field(default_factory=list)
    shippers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_apps(
        self, count: int, *, workers: int = 2, ports: list[int] | None = None, **env: str
    ) -> list[AppInstance]:
        """count gunicorn instances with the same settings, started in parallel, ready."""
        started = []
        for port in ports or [free_port() for _ in range(count)]:
            access_log = self.workdir / f"gunicorn-{port}.log"
            process_env = (
                self.base_env
                | {
                    "GUNICORN_BIND": f"127.0.0.1:{port}",
                    "GUNICORN_WORKERS": str(workers),
                    "GUNICORN_ACCESS_LOG": str(access_log),
                }
                | env
            )
            process = processes.start_gunicorn(
                env=process_env, log_path=self.workdir / f"gunicorn-{port}.out"
            )
            instance = AppInstance(port, process, access_log, process_env)
            self.apps.append(instance)
            started.append(instance)
        for instance in started:
            processes.wait_until_ready(
                f"http://{instance.address}/healthz", process=instance.process, timeout_seconds=60
            )
        return started

    def start_nginx(
        self,
        apps: list[AppInstance],
        *,
        edge: bool = False,
        ship: bool = True,
        shipper_metrics: bool = False,
        **render: Any,
    ) -> NginxInstance:
        """nginx rendered from deploy/nginx.conf in a prefix of its own, in front of apps.

        Its proxy timeouts are rendered for gunicorn's timeout under the apps'
        environment, as `make stack` does; with `edge`, the edge's policy is
        written by the app under the first app's environment and (unless not
        `ship`) the edge log is shipped into its request log, as `make stack` does;
        with `shipper_metrics`, the shipper serves the edge's metrics on a port of its own.
        """
        port = free_port()
        layout = NginxLayout(make_world_readable_dir(self.workdir / f"nginx-{port}"))
        edge_files = None
        if edge:
            edge_files = nginx.EdgeFiles(
                policy=layout.prefix / "edge-policy.lua",
                log=layout.prefix / "edge.log",
                cache_dir=layout.prefix / "cache",
            )
            processes.manage("edge_policy", "--output", str(edge_files.policy), env=apps[0].env)
            nginx.prepare_edge_files(edge_files)
        conf_text = nginx.render_nginx_conf(
            prefix=layout.prefix,
            listen=nginx.loopback_listen(port),
            upstreams=[app.address for app in apps],
            static_root=self.static_root,
            gunicorn_timeout_seconds=processes.gunicorn_setting("timeout", self.base_env),
            edge=edge_files,
            **render,
        )
        nginx.prepare_nginx(layout, conf_text=conf_text)
        process = processes.start_nginx(layout)
        instance = NginxInstance(port, layout, process, edge_files)
        if edge_files is not None and ship:
            instance.shipper_metrics_port = free_port() if shipper_metrics else None
            self.shippers.append(
                processes.start_edge_log_shipper(
                    edge_files.log,
                    env=apps[0].env,
                    log_path=layout.prefix / "shipper.out",
                    metrics_port=instance.shipper_metrics_port,
                )
            )
        self.nginxes.append(instance)
        processes.wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=process)
        if instance.shipper_metrics_port is not None:
            processes.wait_until_ready(
                f"http://127.0.0.1:{instance.shipper_metrics_port}/metrics",
                process=self.shippers[-1],
            )
        return instance

    def stop_all(self) -> None:
        """nginx first, then gunicorn gracefully; anything left is killed by its pid."""
        for front in self.nginxes:
            processes.stop_nginx(front.process)
        for shipper in self.shippers:
            processes.stop_process(shipper)
        for app in self.apps:
            processes.stop_gunicorn(app.process, graceful_timeout=15)


@contextmanager
def _running_factory(
    workdir: Path, static_root: Path, database_url: str, redis: tuple[str, str]
) -> Iterator[StackFactory]:
    """A StackFactory whose processes are all stopped when the block ends."""
    redis_url, key_prefix = redis
    base_env = service_environment(DATABASE_URL=database_url) | {
        "DJANGO_STATIC_ROOT": str(static_root),
        "DJANGO_SECURE_COOKIES": "false",
        "REDIS_URL": redis_url,
        "FIB_CACHE_KEY_PREFIX": key_prefix,
        # nginx reaches gunicorn from loopback: only it may name the client.
        "FIB_TRUSTED_PROXIES": "127.0.0.1",
    }
    factory = StackFactory(workdir, base_env, static_root, database_url)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def stack_factory(
    e2e_workdir: Path, e2e_static_root: Path, e2e_database_url: str, e2e_redis: tuple[str, str]
) -> Iterator[StackFactory]:
    """Start processes for one test; all stopped when it ends."""
    workdir = new_workdir(e2e_workdir, "test")
    with _running_factory(workdir, e2e_static_root, e2e_database_url, e2e_redis) as factory:
        yield factory


@pytest.fixture(scope="module")
def module_stack_factory(
    e2e_workdir: Path, e2e_static_root: Path, e2e_database_url: str, e2e_redis: tuple[str, str]
) -> Iterator[StackFactory]:
    """Start processes shared by one test module; all stopped after it."""
    workdir = new_workdir(e2e_workdir, "module")
    with _running_factory(workdir, e2e_static_root, e2e_database_url, e2e_redis) as factory:
        yield factory
