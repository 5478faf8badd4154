use courier_sdk::{handler, HandlerResult, Message};
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize)]
#[message(urn = "urn:message:Orders:OrderPlaced")]
struct OrderPlaced {}

#[handler]
fn placed(_order: &OrderPlaced) -> HandlerResult {
    Ok(())
}

fn main() {}
