"""An address's forms: canonical, its rate-limit budget key, and anonymized."""

from __future__ import annotations

import pytest

from fibonacci import addresses


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("", None),
        ("unknown", None),
        ("203.0.113.256", None),
        ("1.2.3.4/24", None),
    ],
)
def test_canonical(given, canonical):
    assert addresses.canonical(given) == canonical


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("unknown", "unknown"),
    ],
)
def test_budget_key_groups_ipv6_by_64(address, key):
    assert addresses.budget_key(address) == key


@pytest.mark.parametrize(
    ("address", "anonymized"),
    [
        ("203.0.113.7", "203.0.113.0"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1::"),
        ("unknown", "unknown"),
    ],
)
def test_anonymized_keeps_the_network_only(address, anonymized):
    assert addresses.anonymized(address) == anonymized


@pytest.mark.parametrize(
    ("given", "anonymize", "stored"),
    [
        ("::ffff:203.0.113.7", False, "203.0.113.7"),
        ("::ffff:203.0.113.7", True, "203.0.113.0"),
        ("2001:DB8:1:2::AAAA", True, "2001:db8:1::"),
        ("not an address", True, None),
    ],
)
def test_stored_is_what_the_request_log_writes(given, anonymize, stored):
    assert addresses.stored(given, anonymize=anonymize) == stored
