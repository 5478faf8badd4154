//! {{name}}: a Courier plugin. It handles the command `SayHello` and publishes the event
//! `Greeted`.

use courier_sdk::{Context, HandlerResult, Message, handler};
use serde::{Deserialize, Serialize};

/// A command: greet someone.
#[derive(Debug, Message, Serialize, Deserialize)]
#[message(namespace = "{{Namespace}}")]
pub struct SayHello {
    pub name: String,
}

/// An event: someone was greeted.
#[derive(Debug, PartialEq, Message, Serialize, Deserialize)]
#[message(namespace = "{{Namespace}}")]
pub struct Greeted {
    pub text: String,
}

/// What the handler decides, kept apart from the bus so that a unit test can check it.
pub fn greet(command: &SayHello) -> Greeted {
    Greeted {
        text: format!("Hello, {}!", command.name),
    }
}

#[handler]
fn say_hello(command: SayHello, ctx: &mut Context) -> HandlerResult {
    ctx.publish(&greet(&command))?;
    Ok(())
}

courier_sdk::export!(say_hello);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        let command = SayHello { name: "Ada".into() };
        assert_eq!(greet(&command).text, "Hello, Ada!");
    }
}
