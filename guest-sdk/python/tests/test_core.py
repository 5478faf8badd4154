"""Unit tests of the SDK's host-independent logic: `python3 -m unittest discover -s
guest-sdk/python/tests` (with msgpack installed; `cargo xtask test` runs them in the
toolchain's virtual environment)."""

import sys
import unittest
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from courier.core import (  # noqa: E402
    JSON,
    MSGPACK,
    BusError,
    DecodeError,
    Reject,
    Retry,
    content_type_of,
    decode,
    encode,
    failure_of,
    from_plain,
    message,
    urn_of,
)


@dataclass
class Line:
    sku: str
    quantity: int


@message("urn:message:Test:Order")
@dataclass
class Order:
    order_id: str
    lines: list[Line]
    ratio: float
    paid: bool
    note: Optional[str] = None
    tags: list[str] = field(default_factory=list)


PLAIN = {
    "order_id": "o-1",
    "lines": [{"sku": "WIDGET", "quantity": 2}],
    "ratio": 1,
    "paid": True,
}


class TypedDecoding(unittest.TestCase):
    def test_a_valid_body_becomes_the_dataclass(self):
        order = from_plain(Order, PLAIN)
        self.assertEqual(order.lines, [Line("WIDGET", 2)])
        self.assertIsInstance(order.ratio, float)
        self.assertIsNone(order.note)
        self.assertEqual(order.tags, [])

    def test_a_missing_field_is_named_with_its_path(self):
        body = dict(PLAIN, lines=[{"sku": "WIDGET"}])
        with self.assertRaisesRegex(DecodeError, r"missing field `lines\[0\].quantity`"):
            from_plain(Order, body)

    def test_a_field_of_the_wrong_type_is_named(self):
        with self.assertRaisesRegex(DecodeError, "field `paid` is not a boolean"):
            from_plain(Order, dict(PLAIN, paid="yes"))
        with self.assertRaisesRegex(DecodeError, "field `order_id` is not a string"):
            from_plain(Order, dict(PLAIN, order_id=7))
        # A boolean is not an integer, though Python says True == 1.
        with self.assertRaisesRegex(DecodeError, r"field `lines\[0\].quantity` is not an integer"):
            from_plain(Order, dict(PLAIN, lines=[{"sku": "A", "quantity": True}]))

    def test_an_absent_optional_field_is_none_as_in_the_other_sdks(self):
        @dataclass
        class Note:
            text: Optional[str]

        self.assertIsNone(from_plain(Note, {}).text)

    def test_fields_the_type_does_not_declare_are_ignored(self):
        self.assertEqual(from_plain(Order, dict(PLAIN, extra=1)).order_id, "o-1")


class Codecs(unittest.TestCase):
    def test_both_encodings_round_trip_with_field_names(self):
        order = from_plain(Order, PLAIN)
        for content_type in (MSGPACK, JSON):
            plain = decode(encode(order, content_type), content_type)
            self.assertEqual(plain["lines"], [{"sku": "WIDGET", "quantity": 2}])
            self.assertEqual(from_plain(Order, plain), order)

    def test_json_refuses_what_is_not_json(self):
        with self.assertRaises(ValueError):
            encode({"ratio": float("nan")}, JSON)

    def test_content_types_are_recognised_without_their_parameters(self):
        self.assertEqual(content_type_of("application/json; charset=utf-8"), JSON)
        self.assertEqual(content_type_of("Application/X-MsgPack"), MSGPACK)
        self.assertIsNone(content_type_of("text/plain"))

    def test_a_message_class_carries_its_urn(self):
        self.assertEqual(urn_of(Order), "urn:message:Test:Order")
        with self.assertRaises(ValueError):
            message("Orders:Order")
        with self.assertRaises(TypeError):
            message("urn:message:Test:NotADataclass")(object)


class Failures(unittest.TestCase):
    def test_each_exception_maps_to_retry_or_reject(self):
        self.assertEqual(failure_of(Retry("later")), ("retry", "later"))
        self.assertEqual(failure_of(Reject("never")), ("reject", "never"))
        self.assertEqual(failure_of(BusError("unavailable", "down"))[0], "retry")
        self.assertEqual(failure_of(BusError("denied", "limit"))[0], "reject")
        self.assertEqual(
            failure_of(ZeroDivisionError("division by zero")),
            ("retry", "unhandled ZeroDivisionError: division by zero"),
        )


if __name__ == "__main__":
    unittest.main()
