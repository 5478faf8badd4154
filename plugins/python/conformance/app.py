"""The Python reference plugin of the conformance suite: every behaviour of
docs/conformance.md, as the Rust and JavaScript reference plugins have it."""

import socket
from dataclasses import dataclass

import courier

LANGUAGE = "python"


@dataclass
class Nested:
    flag: bool
    ratio: float


@courier.message("urn:message:Conformance:Echo")
@dataclass
class Echo:
    text: str
    count: int
    tags: list[str]
    nested: Nested


@courier.message("urn:message:Conformance:Echoed")
@dataclass
class Echoed:
    text: str
    count: int
    tags: list[str]
    nested: Nested
    language: str
    greeting: str | None


@courier.message("urn:message:Conformance:Recorded")
@dataclass
class Recorded:
    text: str


@courier.message("urn:message:Conformance:EchoReply")
@dataclass
class EchoReply:
    text: str


@courier.message("urn:message:Conformance:Fail")
@dataclass
class Fail:
    mode: str


@courier.message("urn:message:Conformance:Leaked")
@dataclass
class Leaked:
    mode: str


@courier.message("urn:message:Conformance:Sandbox")
@dataclass
class Sandbox:
    path: str
    address: str


@courier.message("urn:message:Conformance:SandboxReport")
@dataclass
class SandboxReport:
    file: str
    socket: str


plugin = courier.Plugin("conformance", "1.0.0")


@plugin.handler
def echo(echo: Echo, ctx: courier.Context) -> None:
    ctx.info(f"echo {echo.text}")
    ctx.publish(
        Echoed(
            text=echo.text,
            count=echo.count + 1,
            tags=list(reversed(echo.tags)),
            nested=Nested(flag=not echo.nested.flag, ratio=echo.nested.ratio * 2),
            language=LANGUAGE,
            greeting=ctx.config("greeting"),
        )
    )
    ctx.send("conformance-sink", Recorded(text=echo.text), json=True)
    if ctx.reply_to is not None:
        ctx.reply(EchoReply(text=echo.text))


@plugin.handler
def fail(fail: Fail, ctx: courier.Context) -> None:
    ctx.publish(Leaked(mode=fail.mode))
    if fail.mode == "retry":
        raise courier.Retry("asked to retry")
    if fail.mode == "reject":
        raise courier.Reject("asked to reject")
    if fail.mode == "trap":
        raise RuntimeError("asked to trap")
    if fail.mode == "spin":
        counter = 0
        while True:
            counter += 1
    if fail.mode == "hog":
        blocks = []
        while True:
            blocks.append(bytearray(1 << 20))


@plugin.handler
def sandbox(probe: Sandbox, ctx: courier.Context) -> None:
    try:
        with open(probe.path, "rb") as file:
            file_outcome = f"read {len(file.read())} bytes"
    except Exception as error:
        file_outcome = f"error: {type(error).__name__}: {error}"
    try:
        host, port = probe.address.rsplit(":", 1)
        # A numeric address, so that no name lookup (and no codec for one) stands between
        # the attempt and the host's refusal.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
            connection.connect((host, int(port)))
            socket_outcome = "connected"
    except Exception as error:
        socket_outcome = f"error: {type(error).__name__}: {error}"
    ctx.publish(SandboxReport(file=file_outcome, socket=socket_outcome))


Handler = plugin.export()
