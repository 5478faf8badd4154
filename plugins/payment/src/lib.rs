//! Payment: charges each placed order. An order over the configured limit
//! (`max_amount_cents`, default 100000) is declined with `PaymentFailed`; the rest are
//! charged and go on as `PaymentProcessed`. An order with no lines is malformed and rejected.

use courier_sdk::{Context, HandleError, HandlerResult, handler};
use orders::{OrderPlaced, PaymentFailed, PaymentProcessed};

const DEFAULT_LIMIT_CENTS: u64 = 100_000;

#[handler]
fn charge(order: OrderPlaced, ctx: &mut Context) -> HandlerResult {
    if order.lines.is_empty() {
        return Err(HandleError::reject(format!(
            "order {} has no lines",
            order.order_id
        )));
    }
    let limit = ctx
        .config_parsed::<u64>("max_amount_cents")?
        .unwrap_or(DEFAULT_LIMIT_CENTS);
    if order.amount_cents > limit {
        ctx.publish(&PaymentFailed {
            reason: format!("amount {} is over the limit of {limit}", order.amount_cents),
            order_id: order.order_id,
            customer: order.customer,
        })?;
        return Ok(());
    }
    ctx.publish(&PaymentProcessed {
        payment_reference: format!("pay-{}", order.order_id),
        order_id: order.order_id,
        customer: order.customer,
        lines: order.lines,
        amount_cents: order.amount_cents,
    })?;
    Ok(())
}

courier_sdk::export!(charge);
