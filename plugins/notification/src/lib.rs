//! Notification: follows every step of every order and tells the customer, through the host's
//! log (a real deployment would send e-mail from a plugin granted that capability).

use courier_sdk::{Context, HandlerResult, handler};
use orders::{
    InventoryReserved, OrderPlaced, OrderShipped, PaymentFailed, PaymentProcessed,
    StockReservationFailed,
};

#[handler]
fn placed(order: OrderPlaced, ctx: &mut Context) -> HandlerResult {
    tell(
        ctx,
        &order.customer,
        &order.order_id,
        "we received your order",
    );
    Ok(())
}

#[handler]
fn paid(payment: PaymentProcessed, ctx: &mut Context) -> HandlerResult {
    let text = format!("payment of {} cents accepted", payment.amount_cents);
    tell(ctx, &payment.customer, &payment.order_id, &text);
    Ok(())
}

#[handler]
fn declined(failure: PaymentFailed, ctx: &mut Context) -> HandlerResult {
    let text = format!("payment declined ({})", failure.reason);
    tell(ctx, &failure.customer, &failure.order_id, &text);
    Ok(())
}

#[handler]
fn reserved(reservation: InventoryReserved, ctx: &mut Context) -> HandlerResult {
    tell(
        ctx,
        &reservation.customer,
        &reservation.order_id,
        "your items are set aside",
    );
    Ok(())
}

#[handler]
fn out_of_stock(failure: StockReservationFailed, ctx: &mut Context) -> HandlerResult {
    let skus: Vec<&str> = failure
        .missing
        .iter()
        .map(|line| line.sku.as_str())
        .collect();
    let text = format!("sorry, out of stock: {}", skus.join(", "));
    tell(ctx, &failure.customer, &failure.order_id, &text);
    Ok(())
}

#[handler]
fn shipped(shipment: OrderShipped, ctx: &mut Context) -> HandlerResult {
    let text = format!(
        "shipped with {}, tracking {}",
        shipment.carrier, shipment.tracking_number
    );
    tell(ctx, &shipment.customer, &shipment.order_id, &text);
    Ok(())
}

fn tell(ctx: &Context, customer: &str, order_id: &str, text: &str) {
    ctx.info(format!("to {customer}: order {order_id}: {text}"));
}

courier_sdk::export!(placed, paid, declined, reserved, out_of_stock, shipped);
