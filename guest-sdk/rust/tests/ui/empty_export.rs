courier_sdk::export!();

fn main() {}
