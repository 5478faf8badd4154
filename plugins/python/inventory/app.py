"""Inventory, in Python: reserves stock for each paid order, as the Rust `plugins/inventory`
does. The stock on hand per SKU comes from the plugin's config (`stock.<SKU> = <quantity>`);
a line asking for more than is on hand, or for an unknown SKU, fails the reservation with
`StockReservationFailed`. A filled order is announced with `InventoryReserved` and handed to
the shipping endpoint as a `ShipOrder` command."""

import courier
from orders import (
    InventoryReserved,
    OrderLine,
    PaymentProcessed,
    ShipOrder,
    StockReservationFailed,
)

SHIPPING_ENDPOINT = "shipping"

plugin = courier.Plugin("inventory", "0.1.0")


@plugin.handler
def reserve(payment: PaymentProcessed, ctx: courier.Context) -> None:
    missing = []
    for line in payment.lines:
        on_hand = ctx.config(f"stock.{line.sku}", int) or 0
        if line.quantity > on_hand:
            missing.append(OrderLine(sku=line.sku, quantity=line.quantity - on_hand))
    if missing:
        ctx.publish(
            StockReservationFailed(
                order_id=payment.order_id, customer=payment.customer, missing=missing
            )
        )
        return
    ctx.info(f"order {payment.order_id} reserved by the Python handler: {len(payment.lines)} line(s)")
    ctx.publish(
        InventoryReserved(
            order_id=payment.order_id, customer=payment.customer, lines=payment.lines
        )
    )
    ctx.send(
        SHIPPING_ENDPOINT,
        ShipOrder(order_id=payment.order_id, customer=payment.customer, lines=payment.lines),
    )


Handler = plugin.export()
