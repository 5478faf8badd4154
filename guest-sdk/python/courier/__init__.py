"""Courier's Python SDK: write message handlers as decorated functions, build them into a
WebAssembly component with componentize-py.

```python
from dataclasses import dataclass
import courier

@courier.message("urn:message:Orders:OrderPlaced")
@dataclass
class OrderPlaced:
    order_id: str
    amount_cents: int

@courier.message("urn:message:Orders:PaymentProcessed")
@dataclass
class PaymentProcessed:
    order_id: str

plugin = courier.Plugin("payment", "1.0.0")

@plugin.handler
def charge(order: OrderPlaced, ctx: courier.Context) -> None:
    ctx.publish(PaymentProcessed(order_id=order.order_id))

Handler = plugin.export()
```

The module given to `componentize-py componentize` must define `Handler`, which
`Plugin.export()` returns.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Optional

from .core import (
    JSON,
    MSGPACK,
    BusError,
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

# The host's interfaces exist only inside a component, where componentize-py generates them;
# they must be imported when the plugin's module is, since componentize-py bundles the
# modules imported while it builds. Outside a component (the SDK's unit tests) they are absent.
try:
    from componentize_py_types import Err as _Err
    from wit_world import exports as _exports
    from wit_world.imports import bus as _bus
    from wit_world.imports import config as _config
    from wit_world.imports import log as _log
    from wit_world.imports import types as _types
except ImportError:
    _Err = _exports = _bus = _config = _log = _types = None

__all__ = [
    "BusError",
    "Context",
    "Plugin",
    "Reject",
    "Retry",
    "message",
]

_LEVELS = ("trace", "debug", "info", "warn", "error")


class Context:
    """What a handler receives beside its message: the envelope, and the bus to publish on.

    Everything published through the context is held by the host until the handler returns;
    if it raises, none of it is sent."""

    def __init__(self, envelope: Any) -> None:
        self.envelope = envelope

    @property
    def message_id(self) -> str:
        return self.envelope.id

    @property
    def message_type(self) -> str:
        return self.envelope.message_type

    @property
    def correlation_id(self) -> Optional[str]:
        return self.envelope.correlation_id

    @property
    def conversation_id(self) -> str:
        return self.envelope.conversation_id

    @property
    def session_id(self) -> Optional[str]:
        return self.envelope.session_id

    @property
    def reply_to(self) -> Optional[str]:
        return self.envelope.reply_to

    @property
    def attempt(self) -> int:
        """1 on the first delivery, counting up on redeliveries."""
        return self.envelope.attempt

    def header(self, name: str) -> Optional[str]:
        """A header of the consumed message (the name is not case-sensitive)."""
        wanted = name.lower()
        for key, value in self.envelope.headers:
            if key.lower() == wanted:
                return value
        return None

    def decode(self, target: Any = Any) -> Any:
        """The consumed body, as `target` (a message dataclass) or as plain data. A body that
        does not decode is a permanent failure: `Reject` with the reason."""
        content_type = content_type_of(self.envelope.content_type)
        if content_type is None:
            raise Reject(f"unsupported content type `{self.envelope.content_type}`")
        try:
            return from_plain(target, decode(self.envelope.body, content_type))
        except Exception as error:  # a field that does not fit, or the codec's own errors
            raise Reject(
                f"body of {self.envelope.message_type} does not decode as {content_type}: {error}"
            )

    def publish(self, message: Any, **options: Any) -> str:
        """Publishes an event to every plugin that subscribes to its type; returns the id it
        will carry. Options: `json=True`, `message_type`, `correlation_id`, `session_id`,
        `reply_to`, `headers`, `delay_ms`, `ttl_ms`."""
        return _call(lambda: _bus.publish(_outgoing(message, options)))

    def send(self, destination: str, message: Any, **options: Any) -> str:
        """Sends a command to one endpoint (a plugin's input queue)."""
        return _call(lambda: _bus.send(destination, _outgoing(message, options)))

    def reply(self, message: Any, **options: Any) -> str:
        """Replies to the consumed message's `reply-to` endpoint."""
        return _call(lambda: _bus.reply(_outgoing(message, options)))

    def log(self, level: str, text: str) -> None:
        """Writes to the host's log, tagged with this plugin and message."""
        if level not in _LEVELS:
            raise ValueError(f"log level is one of {', '.join(_LEVELS)}, not `{level}`")
        _log.log(_types.Level[level.upper()], text)

    def debug(self, text: str) -> None:
        self.log("debug", text)

    def info(self, text: str) -> None:
        self.log("info", text)

    def warn(self, text: str) -> None:
        self.log("warn", text)

    def error(self, text: str) -> None:
        self.log("error", text)

    def config(self, key: str, parse: Optional[Callable[[str], Any]] = None) -> Any:
        """A setting granted to this plugin by the host's configuration, or None. With
        `parse` (e.g. `int`), a value that does not parse is a permanent failure naming the
        key, since retrying will not change the configuration."""
        raw = _config.get(key)
        if raw is None or parse is None:
            return raw
        try:
            return parse(raw)
        except (TypeError, ValueError) as error:
            raise Reject(f"config key `{key}` = `{raw}` is invalid: {error}")


def _outgoing(message: Any, options: dict) -> Any:
    known = {"json", "message_type", "correlation_id", "session_id", "reply_to", "headers",
             "delay_ms", "ttl_ms"}
    # A malformed message is `invalid`, as the host would say: the handler's call is
    # rejected rather than retried, since a retry would make the same mistake.
    unknown = set(options) - known
    if unknown:
        raise BusError("invalid", f"unknown option(s): {', '.join(sorted(unknown))}")
    message_type = options.get("message_type") or urn_of(message)
    if message_type is None:
        raise BusError(
            "invalid", "publish a @courier.message dataclass, or give message_type= for plain data"
        )
    content_type = JSON if options.get("json") else MSGPACK
    try:
        body = encode(message, content_type)
    except (TypeError, ValueError, OverflowError) as error:
        raise BusError("invalid", f"{message_type} does not encode: {error}")
    headers = options.get("headers") or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    for name in ("delay_ms", "ttl_ms"):
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise BusError("invalid", f"{name} must be a whole number of milliseconds, not {value!r}")
    for name in ("correlation_id", "session_id", "reply_to"):
        value = options.get(name)
        if value is not None and not isinstance(value, str):
            raise BusError("invalid", f"{name} must be a string, not {value!r}")
    return _types.Outgoing(
        message_type=message_type,
        content_type=content_type,
        body=body,
        correlation_id=options.get("correlation_id"),
        session_id=options.get("session_id"),
        reply_to=options.get("reply_to"),
        headers=[(str(k), str(v)) for k, v in headers],
        delay_ms=options.get("delay_ms"),
        ttl_ms=options.get("ttl_ms"),
    )


def _call(publish: Callable[[], str]) -> str:
    try:
        return publish()
    except _Err as error:
        value = error.value
        kinds = {
            _types.BusError_Denied: "denied",
            _types.BusError_Invalid: "invalid",
            _types.BusError_Unavailable: "unavailable",
        }
        raise BusError(kinds.get(type(value), "invalid"), getattr(value, "value", str(value)))


class Plugin:
    """A plugin: its name (also its endpoint's queue name), its version, and one handler per
    message type."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self._handlers: dict[str, tuple[Any, Callable[..., Any], bool]] = {}

    def handler(self, target: Any = None) -> Any:
        """Registers a handler. Plain `@plugin.handler` takes the message type from the first
        parameter's annotation (a `@courier.message` dataclass);
        `@plugin.handler("urn:message:…")` registers a handler of plain data (dicts)."""
        if isinstance(target, str):
            urn = target

            def register(function: Callable[..., Any]) -> Callable[..., Any]:
                self._add(urn, Any, function)
                return function

            return register
        if not callable(target):
            raise TypeError("use @plugin.handler or @plugin.handler(\"urn:message:…\")")
        function = target
        parameters = list(inspect.signature(function).parameters)
        hints = typing.get_type_hints(function)
        message_type = hints.get(parameters[0]) if parameters else None
        urn = urn_of(message_type)
        if urn is None:
            raise TypeError(
                f"handler {function.__name__}: annotate its first parameter with a "
                "@courier.message dataclass, or register it with @plugin.handler(\"urn:…\")"
            )
        self._add(urn, message_type, function)
        return function

    def _add(self, urn: str, message_type: Any, function: Callable[..., Any]) -> None:
        if urn in self._handlers:
            raise ValueError(f"two handlers for {urn}: {self._handlers[urn][1].__name__} and "
                             f"{function.__name__}")
        wants_context = len(inspect.signature(function).parameters) > 1
        self._handlers[urn] = (message_type, function, wants_context)

    def handle(self, envelope: Any) -> None:
        """Routes one message to its handler; raises `Retry` or `Reject` when it fails."""
        entry = self._handlers.get(envelope.message_type)
        if entry is None:
            raise Reject(f"plugin {self.name} has no handler for {envelope.message_type}")
        message_type, function, wants_context = entry
        context = Context(envelope)
        body = context.decode(message_type)
        if wants_context:
            function(body, context)
        else:
            function(body)

    def export(self) -> type:
        """The class the component exports as `handler`: assign it to `Handler` in the
        module given to componentize-py."""
        if _exports is None:
            raise RuntimeError("Plugin.export() runs inside a component, built by componentize-py")
        plugin = self

        class Handler(_exports.Handler):
            def describe(self) -> Any:
                return _types.PluginInfo(
                    name=plugin.name,
                    version=plugin.version,
                    subscriptions=list(plugin._handlers),
                )

            def handle(self, envelope: Any) -> None:
                try:
                    plugin.handle(envelope)
                except Exception as error:  # every failure is reported, none escapes
                    kind, reason = failure_of(error)
                    if kind == "reject":
                        raise _Err(_types.HandleError_Reject(reason))
                    raise _Err(_types.HandleError_Retry(reason))

        return Handler
