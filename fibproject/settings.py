"""Settings for the Fibonacci service, read from the environment.

Every variable has a default that makes `make run` work on a laptop with
nothing installed; production-only requirements fail loudly at start-up.
docs/configuration.md has the table of every variable (tests/unit/test_configuration_docs.py
keeps it equal to what is read here).
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from fibproject.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_str,
    env_trusted_proxies,
)
from fibproject.logging_config import LOG_FORMATS, default_log_format, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


# --- Core -------------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set DJANGO_SECRET_KEY (a long random string) or DJANGO_DEBUG=true for development."
        )
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
if not ALLOWED_HOSTS and not DEBUG:
    raise ImproperlyConfigured(
        "Set DJANGO_ALLOWED_HOSTS to the comma-separated host names the service answers."
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "fibonacci",
    "requestlog",
]

MIDDLEWARE = [
    # Outermost, so that it times and records every answer, 429s and 500s included.
    "requestlog.middleware.RequestLogMiddleware",
    # Next, so that it compresses last what every other middleware has written,
    # and the request log records the bytes sent (fibonacci/api/compression.py).
    "fibonacci.api.compression.ApiGZipMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Django's session, CSRF, auth and message middleware, skipped under /api/:
    # only the admin needs them (see fibproject/middleware.py).
    "fibproject.middleware.SiteSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "fibproject.middleware.SiteCsrfViewMiddleware",
    "fibproject.middleware.SiteAuthenticationMiddleware",
    "fibproject.middleware.SiteMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fibproject.urls"
WSGI_APPLICATION = "fibproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
# SQLite in the project directory by default; PostgreSQL in production, e.g.
# DATABASE_URL=postgres://user@db-host:5432/fibonacci

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", default=60),
        conn_health_checks=True,
    )
}
# A database that does not answer must not hold a worker: connecting gives up
# after DJANGO_DB_CONNECT_TIMEOUT seconds (libpq's minimum is 2), a statement
# after DJANGO_DB_STATEMENT_TIMEOUT_MS, and keepalives with tcp_user_timeout
# drop a connection to a host that vanished. A server that is up but frozen
# still acknowledges TCP, so only a client-side deadline bounds a query to
# it: /readyz has one (fibonacci/health.py), and exiting workers spill their
# records instead of waiting (requestlog/buffer.py).
DB_CONNECT_TIMEOUT = env_int("DJANGO_DB_CONNECT_TIMEOUT", default=2, minimum=2)
DB_STATEMENT_TIMEOUT_MS = env_int("DJANGO_DB_STATEMENT_TIMEOUT_MS", default=10_000)
if "postgresql" in DATABASES["default"]["ENGINE"]:
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "connect_timeout": DB_CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": DB_CONNECT_TIMEOUT * 5000,
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ------------------------------------------------------------------
# A local-memory cache serves one process only; several workers or machines
# need REDIS_URL so that they share the rate-limit counters.

REDIS_URL = env_str("REDIS_URL")
_REDIS_OPTIONS = {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5}
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("FIB_CACHE_KEY_PREFIX", "fib"),
            "OPTIONS": _REDIS_OPTIONS,
        },
        # Rate-limit counters: the same Redis, one round trip per request.
        "ratelimit": {
            "BACKEND": "fibonacci.ratelimit.redis_counters.RateLimitCounterCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("FIB_CACHE_KEY_PREFIX", "fib") + "-rl",
            "OPTIONS": _REDIS_OPTIONS,
        },
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "ratelimit": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "ratelimit",
        },
    }

# --- Security ---------------------------------------------------------------
# TLS ends at the proxy (see deploy/nginx.conf); it redirects to HTTPS and sets
# HSTS, so Django does neither unless told to.

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
SILENCED_SYSTEM_CHECKS = [
    # Django finds CsrfViewMiddleware by its path only; fibonacci.W002 and W003
    # check the same for our site-only subclass (fibproject/middleware.py).
    "security.W003",
    # Decided: HTTPS redirect and HSTS belong to the TLS-terminating proxy.
    "security.W004",
    "security.W008",
]
# Failed admin logins allowed per client address (IPv6 per /64) and per
# username, counted in the `ratelimit` cache (fibproject/admin_login.py). Each
# attempt hashes a password; past either budget the login page answers 429
# without checking it.
FIB_ADMIN_LOGIN_RATE = env_rate("FIB_ADMIN_LOGIN_RATE", default="5/m")
FIB_ADMIN_LOGIN_USERNAME_RATE = env_rate("FIB_ADMIN_LOGIN_USERNAME_RATE", default="10/h")

# --- Internationalization and static files ----------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))

# --- Logging and metrics ----------------------------------------------------
# docs/operations.md: where the logs and metrics are, and what the alerts mean.

# One JSON object per line (`json`, with debug off) or plain text for a terminal
# (`text`, under `make run`); every line written while a request is served has
# its request id. One line per client fault, none per 4xx or 503
# (fibproject/logging_config.py, fibproject/log_filters.py).
FIB_LOG_FORMAT = env_choice(
    "FIB_LOG_FORMAT", choices=LOG_FORMATS, default=default_log_format(debug=DEBUG)
)
LOGGING = logging_config(log_format=FIB_LOG_FORMAT, level=env_str("DJANGO_LOG_LEVEL", "INFO"))

# Prometheus metrics at /metrics (fibproject/metrics.py), for clients on this
# host and in FIB_METRICS_ALLOWED (addresses or CIDRs) only; 404 for anyone else.
FIB_METRICS = env_bool("FIB_METRICS", default=True)
FIB_METRICS_ALLOWED = env_networks("FIB_METRICS_ALLOWED")
if FIB_METRICS:
    # Outermost, so that the latency it records covers every other middleware.
    MIDDLEWARE.insert(0, "fibproject.metrics.RequestMetricsMiddleware")

# --- REST framework and OpenAPI ---------------------------------------------
# The public API has no authentication, sessions or throttling of DRF's own:
# every request is anonymous, and limits are applied by fibonacci.ratelimit.

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_THROTTLE_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "fibonacci.api.negotiation.MemoizedContentNegotiation",
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "fibonacci.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# Answers of no listed operation, as reusable responses: another method on an
# API path (405) and an unknown path under /api/ (404), both problem details.
_PROBLEM_CONTENT = {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fibonacci API",
    "DESCRIPTION": (
        "The first n Fibonacci numbers, a window of the sequence, or one term. Every error is "
        "application/problem+json (RFC 9457), including 405 for a method other than GET, "
        "HEAD or OPTIONS and 404 for an unknown path under /api/."
    ),
    "VERSION": "1.0.0",
    "APPEND_COMPONENTS": {
        "responses": {
            "NotFound": {"description": "No resource at this path.", "content": _PROBLEM_CONTENT},
            "MethodNotAllowed": {
                "description": "Only GET, HEAD and OPTIONS; the Allow header lists them.",
                "content": _PROBLEM_CONTENT,
            },
        }
    },
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- The service ------------------------------------------------------------

# A window may reach F(FIB_MAX_N - 1): offset + n <= FIB_MAX_N. The prepared
# sequence holds FIB_MAX_N terms, about 3 x 10.4 MB at the default.
FIB_MAX_N = env_int("FIB_MAX_N", default=10_000)
# The single-term endpoint computes up to F(FIB_MAX_INDEX) on demand.
FIB_MAX_INDEX = env_int("FIB_MAX_INDEX", default=100_000)
# Our own proxies (addresses or CIDRs, and `unix` for a Unix socket): only
# from these is X-Real-IP believed to name the client.
FIB_TRUSTED_PROXIES = env_trusted_proxies("FIB_TRUSTED_PROXIES")
# Successful answers never change for a URL; clients may cache them this long.
FIB_CACHE_MAX_AGE = env_int("FIB_CACHE_MAX_AGE", default=86_400)
# The app gzips successful API answers for clients that accept it: any size
# behind the edge (nginx caches the compressed answer), elsewhere only bodies
# up to this many bytes, since each request would compress them anew.
FIB_COMPRESS_MAX_BYTES = env_int("FIB_COMPRESS_MAX_BYTES", default=1024 * 1024)

# --- Rate limits ------------------------------------------------------------
# Counted per client IP (IPv6 per /64) by django-ratelimit in the `ratelimit`
# cache: shared only when REDIS_URL is set. Rates are "COUNT/PERIOD", the
# period one of s, m, h, d, optionally with a multiplier ("100/5m").

FIB_RATE_LIMIT_ENABLED = env_bool("FIB_RATE_LIMIT_ENABLED", default=True)
FIB_RATE_LIMIT = env_rate("FIB_RATE_LIMIT", default="120/m")
FIB_RATE_LIMIT_LARGE = env_rate("FIB_RATE_LIMIT_LARGE", default="20/m")
# A window whose response is bigger than that of the first FIB_LARGE_N terms
# (about 105 KB at 1000), or a term past FIB_LARGE_INDEX (computed on demand
# rather than read from the prepared table), is large.
FIB_LARGE_N = env_int("FIB_LARGE_N", default=1_000)
FIB_LARGE_INDEX = env_int("FIB_LARGE_INDEX", default=FIB_MAX_N)
# Counters unreachable: answer anyway (false) or refuse with 503 (true).
FIB_RATE_LIMIT_FAIL_CLOSED = env_bool("FIB_RATE_LIMIT_FAIL_CLOSED", default=False)
RATELIMIT_USE_CACHE = "ratelimit"
# django-ratelimit names a counter by a hash of its group, rate, client and
# window. MD5 (a name, not a secret) because the edge computes the same names
# in nginx, whose Lua has MD5 built in (fibonacci/edge.py, deploy/edge/).
RATELIMIT_HASH_ALGORITHM = "hashlib.md5"

# --- The edge ---------------------------------------------------------------
# nginx's limiter and cache in front of the app (deploy/edge/, docs/edge.md):
# it counts the budgets above itself and writes the request log's records.
# Requests of one client past this many a minute are logged as one aggregate
# row per client and minute rather than a row each (so are the outer shield's
# refusals): a flood must not become a database flood.
FIB_EDGE_LOG_EACH_PER_MINUTE = env_int("FIB_EDGE_LOG_EACH_PER_MINUTE", default=600, minimum=1)

# --- Request log ------------------------------------------------------------
# Every API request becomes a RequestLog row, written in batches by a
# background thread per process (see requestlog/).

# false: no middleware, no buffer, no thread (and no X-Request-ID header).
FIB_REQUEST_LOG = env_bool("FIB_REQUEST_LOG", default=True)
# Records held per process while the database is slow or down; past this the
# oldest are dropped and counted. Each takes about 0.45 KB (typical), 1.2 KB
# (query and user agent as long as a row keeps) and at most 8.6 KB (at nginx's
# 4 KB header limits): `python bench/request_log_footprint.py` measures it.
FIB_LOG_BUFFER_SIZE = env_int("FIB_LOG_BUFFER_SIZE", default=10_000, minimum=1)
# Where a worker spills records it cannot write (it exits while the database
# is down or hung, or its buffer is half full during an outage); any worker's
# writer writes them once the database answers (requestlog/spool.py). A local
# disk, writable by the service: /var/lib/fibonacci/request-log-spool in production.
FIB_LOG_SPOOL_DIR = Path(env_str("FIB_LOG_SPOOL_DIR") or BASE_DIR / "var" / "request-log-spool")
# The spool's bound (about 250 bytes per record on disk); past it records are
# dropped, counted and logged once a minute.
FIB_LOG_SPOOL_MAX_BYTES = env_int("FIB_LOG_SPOOL_MAX_BYTES", default=256 * 1024 * 1024)
# The writer inserts whenever this many records wait, and at least this often.
FIB_LOG_BATCH_SIZE = env_int("FIB_LOG_BATCH_SIZE", default=500, minimum=1)
FIB_LOG_FLUSH_MS = env_int("FIB_LOG_FLUSH_MS", default=1_000, minimum=10)
# Tests turn the thread off and flush by hand, inside their own transaction.
FIB_LOG_BACKGROUND_WRITER = True
# `manage.py prune_request_logs` deletes records older than this.
FIB_LOG_RETENTION_DAYS = env_int("FIB_LOG_RETENTION_DAYS", default=30, minimum=1)
# IP addresses are personal data: true stores IPv4 as its /24 and IPv6 as its /48.
FIB_LOG_IP_ANONYMIZE = env_bool("FIB_LOG_IP_ANONYMIZE", default=False)
