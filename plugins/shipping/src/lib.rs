//! Shipping: ships the orders the inventory endpoint sends it (`ShipOrder`) and announces each
//! with `OrderShipped`. The carrier comes from config (`carrier`, default "Courier Post"); the
//! tracking number is derived from the order id, so a redelivered command ships under the same
//! number.

use courier_sdk::{Context, HandlerResult, handler};
use orders::{OrderShipped, ShipOrder};

#[handler]
fn ship(command: ShipOrder, ctx: &mut Context) -> HandlerResult {
    let carrier = ctx
        .config("carrier")
        .unwrap_or_else(|| "Courier Post".to_owned());
    let tracking_number = tracking_number(&command.order_id);
    ctx.info(format!(
        "order {} packed: {} line(s), {tracking_number} via {carrier}",
        command.order_id,
        command.lines.len()
    ));
    ctx.publish(&OrderShipped {
        order_id: command.order_id,
        customer: command.customer,
        carrier,
        tracking_number,
    })?;
    Ok(())
}

/// FNV-1a of the order id: stable across runs and languages.
fn tracking_number(order_id: &str) -> String {
    let hash = order_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("TRK{:010}", hash % 10_000_000_000)
}

courier_sdk::export!(ship);
