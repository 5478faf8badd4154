//! Inventory: reserves stock for each paid order. The stock on hand per SKU comes from the
//! plugin's config (`stock.<SKU> = <quantity>`); a line asking for more than is on hand, or
//! for an unknown SKU, fails the reservation with `StockReservationFailed`. A filled order is
//! announced with `InventoryReserved` and handed to the shipping endpoint as a `ShipOrder`
//! command.
//!
//! The stock is not decremented between orders: a plugin instance lives for one message, and
//! the contract has no state store yet, so the configured figure is the most any one order
//! may take.

use courier_sdk::{Context, HandlerResult, handler};
use orders::{InventoryReserved, OrderLine, PaymentProcessed, ShipOrder, StockReservationFailed};

/// Where filled orders are sent.
const SHIPPING_ENDPOINT: &str = "shipping";

#[handler]
fn reserve(payment: PaymentProcessed, ctx: &mut Context) -> HandlerResult {
    let mut missing = Vec::new();
    for line in &payment.lines {
        let on_hand = ctx
            .config_parsed::<u32>(&format!("stock.{}", line.sku))?
            .unwrap_or(0);
        if line.quantity > on_hand {
            missing.push(OrderLine {
                sku: line.sku.clone(),
                quantity: line.quantity - on_hand,
            });
        }
    }
    if !missing.is_empty() {
        ctx.publish(&StockReservationFailed {
            order_id: payment.order_id,
            customer: payment.customer,
            missing,
        })?;
        return Ok(());
    }
    ctx.publish(&InventoryReserved {
        order_id: payment.order_id.clone(),
        customer: payment.customer.clone(),
        lines: payment.lines.clone(),
    })?;
    ctx.send(
        SHIPPING_ENDPOINT,
        &ShipOrder {
            order_id: payment.order_id,
            customer: payment.customer,
            lines: payment.lines,
        },
    )?;
    Ok(())
}

courier_sdk::export!(reserve);
