import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder

from harry_realtime import jsonutil


def test_output_is_compact_utf8_that_round_trips():
    value = {"name": "O‘quvchi مرحبا", "n": [1, 2.5, None, True], 3: "non-string key"}
    encoded = jsonutil.dumps(value)
    assert b"\\u" not in encoded and b", " not in encoded
    assert jsonutil.loads(encoded) == {"name": "O‘quvchi مرحبا", "n": [1, 2.5, None, True], "3": "non-string key"}


def test_dates_go_to_the_default_so_django_formats_stay():
    default = DjangoJSONEncoder().default
    moment = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)
    value = {"at": moment, "day": date(2026, 12, 1), "id": uuid.UUID(int=7), "price": Decimal("1.50")}
    assert jsonutil.loads(jsonutil.dumps(value, default=default)) == {
        "at": default(moment),
        "day": "2026-12-01",
        "id": str(uuid.UUID(int=7)),
        "price": "1.50",
    }


def test_integers_beyond_64_bits_fall_back_to_the_standard_library_exactly():
    assert jsonutil.dumps({"big": 10**30}) == b'{"big":1000000000000000000000000000000}'
