"""The JSON input guard's pieces: parsing, the value walk, the body limit, dates."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

import pytest

from harry_realtime import inputguard
from harry_realtime.errors import Invalid, TooLarge


def _code(fn, *args):
    with pytest.raises((Invalid, TooLarge)) as caught:
        fn(*args)
    return caught.value.code


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"a": [1, "x", null, true, 2.5]}', {"a": [1, "x", None, True, 2.5]}),
        (b'{"big": 9223372036854775807}', {"big": 2**63 - 1}),
        (b'{"small": -9223372036854775808}', {"small": -(2**63)}),
        ('{"t": "Salom, dunyo! \U0001f600"}'.encode(), {"t": "Salom, dunyo! \U0001f600"}),
        (b'"\\ud83d\\ude00"', "\U0001f600"),  # a surrogate pair is one character
    ],
)
def test_good_json_parses_as_json(body, value):
    parsed = inputguard.loads(body)
    assert parsed == value
    assert inputguard.problem_of(parsed) is None


def test_integers_beyond_64_bits_stay_exact_and_are_found():
    parsed = inputguard.loads(b'{"syncVersion": 1180591620717411303424}')  # 2**70
    assert parsed == {"syncVersion": 2**70}
    problem = inputguard.problem_of(parsed)
    assert (problem.code, problem.path) == ("integer_out_of_range", "syncVersion")
    assert inputguard.problem_of(inputguard.loads(b"[9223372036854775808]")).code == "integer_out_of_range"
    assert inputguard.problem_of(inputguard.loads(b"[-9223372036854775809]")).code == "integer_out_of_range"


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        (b'{"a": {"b": "x\\u0000y"}}', "invalid_string", "a.b"),
        (b'{"a": ["ok", "\\ud800"]}', "invalid_string", "a[1]"),
        (b'{"a": "\\udfff tail"}', "invalid_string", "a"),
        (b'{"k\\u0000": 1}', "invalid_string", "<key>"),
        (b'{"x": {"\\udc00": 1}}', "invalid_string", "x.<key>"),
        (b'{"n": 1e400}', "number_out_of_range", "n"),
    ],
)
def test_values_the_pipeline_cannot_carry_are_found_where_they_are(body, code, path):
    problem = inputguard.problem_of(inputguard.loads(body))
    assert (problem.code, problem.path) == (code, path)


def test_depth_is_limited_at_every_size():
    at_limit = b"[" * inputguard.MAX_DEPTH + b"]" * inputguard.MAX_DEPTH
    assert inputguard.problem_of(inputguard.loads(at_limit)) is None
    one_more = b"[" * (inputguard.MAX_DEPTH + 1) + b"]" * (inputguard.MAX_DEPTH + 1)
    assert inputguard.problem_of(inputguard.loads(one_more)).code == "json_too_deep"
    # Deeper than any parser recurses: refused while parsing, by either parser.
    assert _code(inputguard.loads, b"[" * 100_000 + b"]" * 100_000) == "json_too_deep"
    assert _code(inputguard.loads, b'{"n": 12345678901234567890, "d": ' + b"[" * 100_000 + b"]" * 100_000 + b"}") == (
        "json_too_deep"
    )


@pytest.mark.parametrize("body", [b"{", b"NaN", b'{"a": Infinity}', b"\xff\xfe", b'"\xed\xa0\x80"', b""])
def test_what_is_not_json_is_invalid_json(body):
    assert _code(inputguard.loads, body) == "invalid_json"


def test_check_raises_the_problem_as_a_400_with_its_path():
    with pytest.raises(Invalid) as caught:
        inputguard.check({"title": {"en": "a\x00b"}})
    assert caught.value.code == "invalid_string"
    assert caught.value.details == {"path": "title.en"}


def test_the_body_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    assert inputguard.read_body(io.BytesIO(b"0123456789")) == b"0123456789"
    assert _code(inputguard.read_body, io.BytesIO(b"0123456789A")) == "payload_too_large"


def test_the_sync_parser_leaves_operations_to_the_view_but_checks_the_envelope():
    parser = inputguard.SyncBatchJSONParser()
    body = b'{"deviceId": "d", "operations": [{"id": "x", "data": {"n": "\\u0000"}}]}'
    assert parser.parse(io.BytesIO(body))["operations"][0]["data"]["n"] == "\x00"
    with pytest.raises(Invalid) as caught:
        parser.parse(io.BytesIO(b'{"deviceId": "d\\u0000", "operations": []}'))
    assert caught.value.code == "invalid_string"
    with pytest.raises(Invalid):
        inputguard.GuardedJSONParser().parse(io.BytesIO(body))


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (date(1924, 8, 1), True),
        (date(2077, 11, 16), True),
        (date(1, 1, 1), False),
        (date(1924, 7, 31), False),
        (date(2077, 11, 17), False),
        (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), False),
        (datetime(2026, 9, 1, 8, 0, tzinfo=UTC), True),
    ],
)
def test_the_plausible_date_range(value, ok):
    assert inputguard.date_in_range(value) is ok


def test_the_date_range_is_what_the_hijri_calendar_carries():
    """The pipeline gives school dates their Hijri date (hijridate's Umm al-Qura table): every date
    in the range converts, the days just outside do not."""
    from hijridate import Gregorian

    for day in (inputguard.DATE_MIN, inputguard.DATE_MAX):
        Gregorian(day.year, day.month, day.day).to_hijri()
    for day in (inputguard.DATE_MIN - timedelta(days=1), inputguard.DATE_MAX + timedelta(days=1)):
        with pytest.raises(OverflowError):
            Gregorian(day.year, day.month, day.day).to_hijri()
