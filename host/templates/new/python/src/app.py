"""{{name}}: a Courier plugin. It handles the command `SayHello` and publishes the event
`Greeted`."""

import courier
from greeting import SayHello, greet

plugin = courier.Plugin("{{name}}", "0.1.0")


@plugin.handler
def say_hello(command: SayHello, ctx: courier.Context) -> None:
    ctx.publish(greet(command))


Handler = plugin.export()
