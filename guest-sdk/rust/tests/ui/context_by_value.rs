use courier_sdk::{handler, Context, HandlerResult, Message};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:OrderPlaced")]
struct OrderPlaced {}

#[handler]
fn placed(_order: OrderPlaced, _ctx: Context) -> HandlerResult {
    Ok(())
}

fn main() {}
