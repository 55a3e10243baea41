"""Every reader of n and offset agrees: the serializer, the "large" rule and the request log."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.http import QueryDict
from hypothesis import given
from hypothesis import strategies as st

from fibonacci import params
from fibonacci.api.serializers import SequenceQuerySerializer
from requestlog.rows import RecordParser

VALUES = st.one_of(
    st.integers(0, 12_000).map(str),
    st.sampled_from(["", "-1", "+5", " 5", "5.0", "\u0665", "0005", "1e3", "9" * 40]),
)
QUERIES = st.lists(st.tuples(st.sampled_from(["n", "offset", "other"]), VALUES), max_size=4)


@given(pairs=QUERIES)
def test_serializer_and_params_accept_the_same_windows(pairs):
    query = QueryDict(urlencode(pairs))
    serializer = SequenceQuerySerializer(data=query)
    window = params.window(query.getlist, maximum=settings.FIB_MAX_N)
    assert serializer.is_valid() == (window is not None)
    if window is not None:
        assert serializer.validated_data["n"] == window.count
        assert serializer.validated_data["offset"] == window.offset


@given(pairs=QUERIES)
def test_the_request_log_records_the_numbers_params_reads(pairs):
    query_string = urlencode(pairs)
    lookup = QueryDict(query_string).getlist
    parser = RecordParser(anonymize=False, max_n=settings.FIB_MAX_N, max_index=100)
    record = (0.0, 1.0, "GET", "fibonacci-list", None, query_string, 200, "::1", "", 0, "r" * 32)
    row = dict(zip(("n", "offset"), parser.row(record)[3:5], strict=True))
    assert row == {
        "n": params.n(lookup, maximum=settings.FIB_MAX_N),
        "offset": params.offset(lookup, maximum=settings.FIB_MAX_N),
    }
