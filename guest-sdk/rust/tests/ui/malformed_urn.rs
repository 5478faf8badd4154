use courier_sdk::Message;

#[derive(Message)]
#[message(urn = "urn:message:OrderPlaced")]
struct OrderPlaced {}

fn main() {}
