"""The messages of {{name}}, and what its handler decides, kept apart from the bus so that a
unit test can check it."""

from dataclasses import dataclass

import courier


@courier.message("urn:message:{{Namespace}}:SayHello")
@dataclass
class SayHello:
    """A command: greet someone."""

    name: str


@courier.message("urn:message:{{Namespace}}:Greeted")
@dataclass
class Greeted:
    """An event: someone was greeted."""

    text: str


def greet(command: SayHello) -> Greeted:
    return Greeted(text=f"Hello, {command.name}!")
