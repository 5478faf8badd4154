use courier_sdk::Message;

#[derive(Message)]
struct OrderPlaced {}

fn main() {}
