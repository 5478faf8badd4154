"""The SDK's logic that does not touch the host: message types, body codecs, typed decoding
and the errors a handler raises. Kept apart from the host bindings so that it can be tested
with an ordinary Python interpreter."""

from __future__ import annotations

import dataclasses
import json
import types as pytypes
import typing
from typing import Any, Optional, Union

import msgpack

MSGPACK = "application/msgpack"
JSON = "application/json"

_MSGPACK_ALIASES = {MSGPACK, "application/x-msgpack", "application/vnd.msgpack"}


class Retry(Exception):
    """A transient failure (a dependency is down, a lock is held): the message is delivered
    again later."""


class Reject(Exception):
    """A permanent failure (the message is invalid, a rule forbids it): the message goes to
    the error queue at once."""


class BusError(Exception):
    """The host refused a publish, send or reply. `kind` is `denied` (a limit), `invalid`
    (the message) or `unavailable` (the bus)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class DecodeError(Exception):
    """A body that does not fit its message type; the path names the field."""


def message(urn: str):
    """Class decorator: attaches a message type URN to a dataclass, e.g.

    ```python
    @courier.message("urn:message:Orders:OrderPlaced")
    @dataclass
    class OrderPlaced:
        order_id: str
    ```
    """
    if not urn.startswith("urn:message:"):
        raise ValueError(f"a message type URN starts with `urn:message:`, not `{urn}`")

    def attach(cls):
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"@message({urn!r}) goes on a dataclass; {cls.__name__} is not one")
        cls.__courier_urn__ = urn
        return cls

    return attach


def urn_of(message_type: Any) -> Optional[str]:
    """The URN a message class (or instance) carries, if any."""
    return getattr(message_type, "__courier_urn__", None)


def content_type_of(mime: str) -> Optional[str]:
    """Recognises a MIME type; parameters such as `; charset=utf-8` are ignored."""
    essence = mime.split(";", 1)[0].strip().lower()
    if essence in _MSGPACK_ALIASES:
        return MSGPACK
    if essence == JSON:
        return JSON
    return None


def encode(value: Any, content_type: str) -> bytes:
    """Encodes a dataclass, or plain data, as MessagePack (maps with field names) or JSON."""
    plain = to_plain(value)
    if content_type == JSON:
        # NaN and infinities are not JSON: refused here rather than by the reader.
        return json.dumps(plain, separators=(",", ":"), allow_nan=False).encode()
    return msgpack.packb(plain, use_bin_type=True)


def decode(body: bytes, content_type: str) -> Any:
    """Decodes a body to plain data (dicts, lists, numbers, strings)."""
    if content_type == JSON:
        return json.loads(body)
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    return value


def from_plain(target: Any, value: Any, path: str = "") -> Any:
    """Builds `target` (a dataclass, or a type such as `int`, `list[str]`, `Optional[T]`) from
    plain data, checking every field. Fields the type does not declare are ignored."""
    if target is Any or target is object:
        return value
    origin = typing.get_origin(target)
    if origin is Union or origin is pytypes.UnionType:
        options = typing.get_args(target)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return from_plain(option, value, path)
            except DecodeError as error:
                errors.append(str(error))
        raise DecodeError(errors[0] if len(errors) == 1 else f"{_name(path)} fits none of {target}")
    if origin is list or target is list:
        if not isinstance(value, (list, tuple)):
            raise DecodeError(f"{_name(path)} is not a list")
        (item,) = typing.get_args(target) or (Any,)
        return [from_plain(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or target is dict:
        if not isinstance(value, dict):
            raise DecodeError(f"{_name(path)} is not a map")
        _, item = typing.get_args(target) or (str, Any)
        return {k: from_plain(item, v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if dataclasses.is_dataclass(target):
        if not isinstance(value, dict):
            raise DecodeError(f"{_name(path)} is not a map")
        hints = typing.get_type_hints(target)
        fields = {}
        for field in dataclasses.fields(target):
            inner = f"{path}.{field.name}" if path else field.name
            if field.name in value:
                fields[field.name] = from_plain(hints.get(field.name, Any), value[field.name], inner)
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                # An absent optional field is None, as it is to the Rust and JS SDKs.
                if not _accepts_none(hints.get(field.name, Any)):
                    raise DecodeError(f"missing field `{inner}`")
                fields[field.name] = None
        return target(**fields)
    if target is bool:
        if not isinstance(value, bool):
            raise DecodeError(f"{_name(path)} is not a boolean")
        return value
    if target is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError(f"{_name(path)} is not an integer")
        return value
    if target is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DecodeError(f"{_name(path)} is not a number")
        return float(value)
    if target is str:
        if not isinstance(value, str):
            raise DecodeError(f"{_name(path)} is not a string")
        return value
    if target is bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise DecodeError(f"{_name(path)} is not bytes")
        return bytes(value)
    return value


def _accepts_none(target: Any) -> bool:
    origin = typing.get_origin(target)
    return (origin is Union or origin is pytypes.UnionType) and type(None) in typing.get_args(target)


def _name(path: str) -> str:
    return f"field `{path}`" if path else "the body"


def failure_of(error: BaseException) -> tuple[str, str]:
    """What a handler's exception means to the host: (`retry` | `reject`, reason).

    A bus refusal is worth a retry only when the bus was unavailable; an exception the
    handler did not plan for is transient, as a trap is."""
    if isinstance(error, Reject):
        return "reject", str(error)
    if isinstance(error, Retry):
        return "retry", str(error)
    if isinstance(error, BusError):
        return ("retry" if error.kind == "unavailable" else "reject"), str(error)
    return "retry", f"unhandled {type(error).__name__}: {error}"
