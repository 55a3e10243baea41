"""Client identity: which address a request's budgets are counted for."""

import pytest
from django.test import RequestFactory

from fibonacci.ratelimit.identity import client_ip, parse_trusted_proxies


def _request(remote_addr, **headers):
    request = RequestFactory().get("/api/v1/fibonacci/", **headers)
    request.META["REMOTE_ADDR"] = remote_addr
    return request


@pytest.mark.parametrize(
    ("trusted", "remote_addr", "headers", "expected"),
    [
        ([], "203.0.113.7", {}, "203.0.113.7"),
        ([], "203.0.113.7", {"HTTP_X_REAL_IP": "198.51.100.1"}, "203.0.113.7"),
        ([], "203.0.113.7", {"HTTP_X_FORWARDED_FOR": "198.51.100.1"}, "203.0.113.7"),
        (["127.0.0.1"], "127.0.0.1", {"HTTP_X_REAL_IP": "198.51.100.1"}, "198.51.100.1"),
        (["10.0.0.0/8"], "10.1.2.3", {"HTTP_X_REAL_IP": "198.51.100.1"}, "198.51.100.1"),
        (["10.0.0.0/8"], "11.1.2.3", {"HTTP_X_REAL_IP": "198.51.100.1"}, "11.1.2.3"),
        (["127.0.0.1"], "127.0.0.1", {"HTTP_X_REAL_IP": "not an ip"}, "127.0.0.1"),
        (["127.0.0.1"], "127.0.0.1", {}, "127.0.0.1"),
        ([], "::ffff:192.0.2.1", {}, "192.0.2.1"),
        ([], "", {"HTTP_X_REAL_IP": "198.51.100.1"}, "unknown"),
        (["unix"], "", {"HTTP_X_REAL_IP": "198.51.100.1"}, "198.51.100.1"),
        ([], "garbage", {}, "unknown"),
        (["127.0.0.1"], "127.0.0.1", {"HTTP_X_REAL_IP": "::ffff:198.51.100.1"}, "198.51.100.1"),
        (["::1"], "::1", {"HTTP_X_REAL_IP": "2001:DB8::1"}, "2001:db8::1"),
    ],
)
def test_client_ip(settings, trusted, remote_addr, headers, expected):
    settings.FIB_TRUSTED_PROXIES = trusted
    assert client_ip(_request(remote_addr, **headers)) == expected


def test_invalid_trusted_proxy_is_refused():
    with pytest.raises(ValueError):
        parse_trusted_proxies(["10.0.0.0/8", "proxy.example.com"])
