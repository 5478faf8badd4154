/* The C reference plugin of the conformance suite: every behaviour of docs/conformance.md, as
 * the Rust, Python and JavaScript reference plugins have it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "courier.h"

#define TYPE(name) "urn:message:Conformance:" name

static courier_status echo(courier_ctx *ctx, const courier_value *body) {
    const char *text = courier_get_str(ctx, body, "text");
    int64_t count = courier_get_int(ctx, body, "count");
    const courier_value *tags = courier_get_array(ctx, body, "tags");
    const courier_value *nested = courier_get_map(ctx, body, "nested");
    bool flag = courier_get_bool(ctx, nested, "flag");
    double ratio = courier_get_float(ctx, nested, "ratio");
    courier_value *reversed = courier_new_array(ctx);
    for (size_t i = courier_len(tags); i > 0; i--) {
        const char *tag = courier_as_str(ctx, courier_item(tags, i - 1));
        courier_push(reversed, courier_new_str(ctx, tag));
    }
    if (!courier_decoded(ctx)) return COURIER_REJECT;

    courier_info(ctx, "echo %s", text);

    courier_value *echoed = courier_new_map(ctx);
    courier_put(echoed, "text", courier_new_str(ctx, text));
    /* Wraps at the top of the range, as the other languages' integers do. */
    courier_put(echoed, "count", courier_new_int(ctx, (int64_t)((uint64_t)count + 1)));
    courier_put(echoed, "tags", reversed);
    courier_value *flipped = courier_new_map(ctx);
    courier_put(flipped, "flag", courier_new_bool(ctx, !flag));
    courier_put(flipped, "ratio", courier_new_float(ctx, ratio * 2));
    courier_put(echoed, "nested", flipped);
    courier_put(echoed, "language", courier_new_str(ctx, "c"));
    courier_put(echoed, "greeting", courier_new_str(ctx, courier_config(ctx, "greeting")));
    COURIER_TRY(ctx, courier_publish(ctx, TYPE("Echoed"), echoed, NULL));

    courier_value *recorded = courier_put(courier_new_map(ctx), "text", courier_new_str(ctx, text));
    courier_options as_json = {.json = true};
    COURIER_TRY(ctx, courier_send(ctx, "conformance-sink", TYPE("Recorded"), recorded, &as_json));

    if (courier_reply_to(ctx) != NULL) {
        courier_value *reply = courier_new_map(ctx);
        courier_put(reply, "text", courier_new_str(ctx, text));
        COURIER_TRY(ctx, courier_reply(ctx, TYPE("EchoReply"), reply, NULL));
    }
    return COURIER_OK;
}

/* Kept reachable, so that the compiler cannot drop the allocations of `hog`. */
static volatile void *volatile hoard;

static courier_status fail(courier_ctx *ctx, const courier_value *body) {
    const char *mode = courier_get_str(ctx, body, "mode");
    if (!courier_decoded(ctx)) return COURIER_REJECT;
    courier_value *leaked = courier_put(courier_new_map(ctx), "mode", courier_new_str(ctx, mode));
    COURIER_TRY(ctx, courier_publish(ctx, TYPE("Leaked"), leaked, NULL));
    if (strcmp(mode, "retry") == 0) return courier_retry(ctx, "asked to retry");
    if (strcmp(mode, "reject") == 0) return courier_reject(ctx, "asked to reject");
    /* C's unplanned failure: the module traps. */
    if (strcmp(mode, "trap") == 0) abort();
    if (strcmp(mode, "spin") == 0) {
        volatile uint64_t counter = 0;
        for (;;) counter++;
    }
    if (strcmp(mode, "hog") == 0) {
        for (;;) {
            void **block = malloc(1 << 20);
            if (block == NULL) return courier_retry(ctx, "malloc failed before the cap");
            memset(block, 1, 1 << 20);
            *block = (void *)hoard;
            hoard = block;
        }
    }
    return COURIER_OK;
}

static courier_status sandbox(courier_ctx *ctx, const courier_value *body) {
    const char *path = courier_get_str(ctx, body, "path");
    const char *address = courier_get_str(ctx, body, "address");
    if (!courier_decoded(ctx)) return COURIER_REJECT;

    const char *file_outcome;
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        file_outcome = courier_format(ctx, "error: fopen: %s", strerror(errno));
    } else {
        char buffer[256];
        size_t total = 0, got;
        while ((got = fread(buffer, 1, sizeof(buffer), file)) > 0) total += got;
        fclose(file);
        file_outcome = courier_format(ctx, "read %zu bytes", total);
    }

    /* WASI preview 1, which wasi-libc targets, has no call that opens a connection: there is
     * no `socket` or `connect` to try. */
    const char *socket_outcome =
        courier_format(ctx, "error: wasi-libc has no socket API (asked for %s)", address);

    courier_value *report = courier_new_map(ctx);
    courier_put(report, "file", courier_new_str(ctx, file_outcome));
    courier_put(report, "socket", courier_new_str(ctx, socket_outcome));
    COURIER_TRY(ctx, courier_publish(ctx, TYPE("SandboxReport"), report, NULL));
    return COURIER_OK;
}

COURIER_PLUGIN("conformance", "1.0.0",
               COURIER_HANDLER(TYPE("Echo"), echo),
               COURIER_HANDLER(TYPE("Fail"), fail),
               COURIER_HANDLER(TYPE("Sandbox"), sandbox));
