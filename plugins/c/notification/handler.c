/* Notification, in C: follows every step of every order and tells the customer through the
 * host's log, as the Rust plugin `plugins/notification` does, each line marked as the C
 * handler's. */
#include "courier.h"

#define TYPE(name) "urn:message:Orders:" name

/* Logs the line for one order, once the body has read cleanly. */
static courier_status tell(courier_ctx *ctx, const courier_value *body, const char *text) {
    const char *customer = courier_get_str(ctx, body, "customer");
    const char *order_id = courier_get_str(ctx, body, "order_id");
    if (!courier_decoded(ctx)) return COURIER_REJECT;
    courier_info(ctx, "to %s: order %s: %s (told by the C handler)", customer, order_id, text);
    return COURIER_OK;
}

static courier_status placed(courier_ctx *ctx, const courier_value *order) {
    return tell(ctx, order, "we received your order");
}

static courier_status paid(courier_ctx *ctx, const courier_value *payment) {
    int64_t cents = courier_get_int(ctx, payment, "amount_cents");
    return tell(ctx, payment,
                courier_format(ctx, "payment of %lld cents accepted", (long long)cents));
}

static courier_status declined(courier_ctx *ctx, const courier_value *failure) {
    const char *reason = courier_get_str(ctx, failure, "reason");
    return tell(ctx, failure, courier_format(ctx, "payment declined (%s)", reason));
}

static courier_status reserved(courier_ctx *ctx, const courier_value *reservation) {
    return tell(ctx, reservation, "your items are set aside");
}

static courier_status out_of_stock(courier_ctx *ctx, const courier_value *failure) {
    const courier_value *missing = courier_get_array(ctx, failure, "missing");
    const char *skus = "";
    for (size_t i = 0; i < courier_len(missing); i++) {
        const char *sku = courier_get_str(ctx, courier_item(missing, i), "sku");
        skus = i == 0 ? sku : courier_format(ctx, "%s, %s", skus, sku);
    }
    return tell(ctx, failure, courier_format(ctx, "sorry, out of stock: %s", skus));
}

static courier_status shipped(courier_ctx *ctx, const courier_value *shipment) {
    const char *carrier = courier_get_str(ctx, shipment, "carrier");
    const char *tracking = courier_get_str(ctx, shipment, "tracking_number");
    return tell(ctx, shipment,
                courier_format(ctx, "shipped with %s, tracking %s", carrier, tracking));
}

COURIER_PLUGIN("notification", "1.0.0",
               COURIER_HANDLER(TYPE("OrderPlaced"), placed),
               COURIER_HANDLER(TYPE("PaymentProcessed"), paid),
               COURIER_HANDLER(TYPE("PaymentFailed"), declined),
               COURIER_HANDLER(TYPE("InventoryReserved"), reserved),
               COURIER_HANDLER(TYPE("StockReservationFailed"), out_of_stock),
               COURIER_HANDLER(TYPE("OrderShipped"), shipped));
