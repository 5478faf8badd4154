/* {{name}}: a Courier plugin. It handles the command `SayHello` and publishes the event
 * `Greeted`. */
#include "courier.h"
#include "greeting.h"

#define TYPE(name) "urn:message:{{Namespace}}:" name

static courier_status say_hello(courier_ctx *ctx, const courier_value *command) {
    const char *name = courier_get_str(ctx, command, "name");
    if (!courier_decoded(ctx)) return COURIER_REJECT; /* rejected, naming the field */
    char text[256];
    greet(name, text, sizeof text);
    courier_value *greeted = courier_put(courier_new_map(ctx), "text", courier_new_str(ctx, text));
    COURIER_TRY(ctx, courier_publish(ctx, TYPE("Greeted"), greeted, NULL));
    return COURIER_OK;
}

COURIER_PLUGIN("{{name}}", "0.1.0", COURIER_HANDLER(TYPE("SayHello"), say_hello));
