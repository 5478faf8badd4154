use courier_sdk::{handler, HandlerResult};
use serde::Deserialize;

#[derive(Deserialize)]
struct Plain {}

#[handler]
fn placed(_plain: Plain) -> HandlerResult {
    Ok(())
}

fn main() {}
