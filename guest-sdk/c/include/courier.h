/*
 * The Courier SDK for handlers written in C.
 *
 * A plugin lists its handlers, one per message type URN, and names itself:
 *
 *     static courier_status placed(courier_ctx *ctx, const courier_value *order) {
 *         const char *customer = courier_get_str(ctx, order, "customer");
 *         courier_info(ctx, "order from %s", customer);
 *         return COURIER_OK;
 *     }
 *
 *     COURIER_PLUGIN("notification", "1.0.0",
 *                    COURIER_HANDLER("urn:message:Orders:OrderPlaced", placed));
 *
 * The SDK decodes each body (MessagePack, or JSON when the message says so) into a tree of
 * `courier_value`s before the handler runs. The handler reads fields with the `courier_get_*`
 * functions; a field that is missing or of the wrong type is recorded in the context, and the
 * message is then rejected with a reason that names the field (`field \`nested.flag\`:
 * expected a boolean, found a string`), whatever the handler returns. A getter that failed
 * returns a harmless value (0, false, "", an empty map or array), so the handler may read every
 * field first and check `courier_decoded(ctx)` once.
 *
 * Strings are UTF-8: a body with a string that is not is refused before the handler runs, and
 * text the handler hands the host (log lines, reasons) has any invalid byte replaced. Decoded
 * strings are NUL-terminated; one may hold a NUL byte of its own, which `courier_len` counts.
 * A map key may not. When a body repeats a key, the getters see the first.
 *
 * Memory: everything the SDK hands out (decoded values, built values, strings from the context)
 * lives until the handler returns, and is then freed at once. The handler frees nothing.
 */
#ifndef COURIER_H
#define COURIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- values ---------------------------------------------------------------------------- */

typedef enum courier_kind {
    COURIER_NIL,
    COURIER_BOOL,
    /* A signed integer; one above INT64_MAX is a COURIER_UINT. */
    COURIER_INT,
    COURIER_UINT,
    COURIER_FLOAT,
    COURIER_STR,
    COURIER_BIN,
    COURIER_ARRAY,
    COURIER_MAP,
    /* What a getter returns for a field the map does not have. */
    COURIER_MISSING,
} courier_kind;

typedef struct courier_arena courier_arena;
typedef struct courier_value courier_value;
typedef struct courier_entry courier_entry;

/* Read the fields below freely; change a value only through the builders. */
struct courier_value {
    courier_kind kind;
    union {
        bool boolean;
        int64_t integer;
        uint64_t uinteger;
        double number;
        /* COURIER_STR (NUL-terminated as well) and COURIER_BIN. */
        struct {
            const char *ptr;
            size_t len;
        } bytes;
        struct {
            courier_value **items;
            size_t len, cap;
        } array;
        struct {
            courier_entry *items;
            size_t len, cap;
        } map;
    } as;
    /* Where the value sits in its body, for the reason of a failed read: the enclosing map or
     * array, and the key (maps) or the index (arrays). */
    const courier_value *parent;
    const char *key;
    size_t index;
    /* Where a container built by the handler grows. */
    courier_arena *arena;
};

struct courier_entry {
    const char *key;
    courier_value *value;
};

/* ---- the context ----------------------------------------------------------------------- */

typedef struct courier_ctx courier_ctx;

typedef enum courier_status {
    COURIER_OK = 0,
    /* A transient failure: the message is delivered again later. */
    COURIER_RETRY = 1,
    /* A permanent failure: the message goes to the error queue at once. */
    COURIER_REJECT = 2,
} courier_status;

typedef courier_status (*courier_handler_fn)(courier_ctx *ctx, const courier_value *body);

typedef struct courier_handler {
    const char *message_type;
    courier_handler_fn handle;
} courier_handler;

typedef struct courier_plugin {
    const char *name;
    const char *version;
    const courier_handler *handlers;
    size_t handler_count;
} courier_plugin;

/* Declares the plugin: its name (also its endpoint), its version and its handlers. Use once. */
#define COURIER_HANDLER(type, fn) {(type), (fn)}
#define COURIER_PLUGIN(plugin_name, plugin_version, ...)                                        \
    static const courier_handler courier_handlers_[] = {__VA_ARGS__};                         \
    const courier_plugin courier_plugin_definition = {                                        \
        (plugin_name), (plugin_version), courier_handlers_,                                   \
        sizeof(courier_handlers_) / sizeof(courier_handlers_[0])}

/* Fails the message; the reason is printf-formatted. Return what these return. */
courier_status courier_retry(courier_ctx *ctx, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
courier_status courier_reject(courier_ctx *ctx, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* The consumed message's envelope. Absent optional fields are NULL. */
const char *courier_message_id(const courier_ctx *ctx);
const char *courier_message_type(const courier_ctx *ctx);
const char *courier_content_type(const courier_ctx *ctx);
const char *courier_correlation_id(const courier_ctx *ctx);
const char *courier_conversation_id(const courier_ctx *ctx);
const char *courier_reply_to(const courier_ctx *ctx);
const char *courier_session_id(const courier_ctx *ctx);
const char *courier_initiator_id(const courier_ctx *ctx);
const char *courier_source_address(const courier_ctx *ctx);
/* Milliseconds since the Unix epoch; the expiry is 0 when the message has none. */
uint64_t courier_sent_at_ms(const courier_ctx *ctx);
uint64_t courier_expires_at_ms(const courier_ctx *ctx);
/* 1 on the first delivery, counting up on each redelivery. */
uint32_t courier_attempt(const courier_ctx *ctx);
/* A header's value by its name, in any case. */
const char *courier_header(const courier_ctx *ctx, const char *name);

/* A setting granted to the plugin by the host's configuration, or NULL. */
const char *courier_config(courier_ctx *ctx, const char *key);

/* Writes into the host's log, tagged with the plugin and the message (printf-formatted). */
typedef enum courier_level {
    COURIER_TRACE,
    COURIER_DEBUG,
    COURIER_INFO,
    COURIER_WARN,
    COURIER_ERROR,
} courier_level;
void courier_log(courier_ctx *ctx, courier_level level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
#define courier_info(ctx, ...) courier_log((ctx), COURIER_INFO, __VA_ARGS__)
#define courier_warn(ctx, ...) courier_log((ctx), COURIER_WARN, __VA_ARGS__)

/* ---- publishing ------------------------------------------------------------------------ */

typedef struct courier_header_pair {
    const char *name;
    const char *value;
} courier_header_pair;

/* Everything but the type and the body of an outgoing message; zero means "the default". */
typedef struct courier_options {
    /* Encode the body as JSON rather than MessagePack. */
    bool json;
    /* Defaults to the consumed message's correlation id. */
    const char *correlation_id;
    const char *session_id;
    const char *reply_to;
    const courier_header_pair *headers;
    size_t header_count;
    /* Deliver no sooner than this many milliseconds after the handler succeeds (0: now). */
    uint64_t delay_ms;
    /* The message expires this many milliseconds after it is sent (0: never). */
    uint64_t ttl_ms;
} courier_options;

/* Publishes an event, sends a command to `destination`, or replies to the consumed message's
 * reply-to endpoint. Nothing leaves before the handler returns COURIER_OK. Each returns false
 * when the host refused the message (a result the compiler will not let go unread);
 * `courier_bus_failure` then says how to fail. `options` may be NULL; a NULL body is nil. */
__attribute__((warn_unused_result)) bool courier_publish(courier_ctx *ctx,
                                                         const char *message_type,
                                                         const courier_value *body,
                                                         const courier_options *options);
__attribute__((warn_unused_result)) bool courier_send(courier_ctx *ctx, const char *destination,
                                                      const char *message_type,
                                                      const courier_value *body,
                                                      const courier_options *options);
__attribute__((warn_unused_result)) bool courier_reply(courier_ctx *ctx,
                                                       const char *message_type,
                                                       const courier_value *body,
                                                       const courier_options *options);

/* Right after a publish, send or reply returned false: the failure its refusal calls for, a
 * retry when the bus was unavailable and a rejection when the message was denied or invalid,
 * with the host's reason. (Called when nothing was refused, it is a retry.) */
courier_status courier_bus_failure(courier_ctx *ctx);

/* `COURIER_TRY(ctx, courier_publish(...));` returns the right failure from the handler. */
#define COURIER_TRY(ctx, call)                                                                 \
    do {                                                                                       \
        if (!(call)) return courier_bus_failure(ctx);                                          \
    } while (0)

/* ---- reading a body -------------------------------------------------------------------- */

/* True while every read so far fitted. */
bool courier_decoded(const courier_ctx *ctx);

/* Whether a map has the field, and it is not nil. Reading nothing, it records nothing. */
bool courier_has(const courier_value *map, const char *key);

/* A field of a map; a COURIER_MISSING value when the map lacks it. */
const courier_value *courier_field(courier_ctx *ctx, const courier_value *map, const char *key);
/* An item of an array, or NULL past its end or when `array` is not one (every reader takes
 * NULL as a failed read: "an item past the end of an array"). */
const courier_value *courier_item(const courier_value *array, size_t index);
size_t courier_len(const courier_value *value);

/* A value read as a type; a value of another kind is recorded as a failed read. A float
 * accepts an integer. */
const char *courier_as_str(courier_ctx *ctx, const courier_value *value);
int64_t courier_as_int(courier_ctx *ctx, const courier_value *value);
double courier_as_float(courier_ctx *ctx, const courier_value *value);
bool courier_as_bool(courier_ctx *ctx, const courier_value *value);
const courier_value *courier_as_map(courier_ctx *ctx, const courier_value *value);
const courier_value *courier_as_array(courier_ctx *ctx, const courier_value *value);

/* `courier_as_*(ctx, courier_field(ctx, map, key))`. */
const char *courier_get_str(courier_ctx *ctx, const courier_value *map, const char *key);
int64_t courier_get_int(courier_ctx *ctx, const courier_value *map, const char *key);
double courier_get_float(courier_ctx *ctx, const courier_value *map, const char *key);
bool courier_get_bool(courier_ctx *ctx, const courier_value *map, const char *key);
const courier_value *courier_get_map(courier_ctx *ctx, const courier_value *map, const char *key);
const courier_value *courier_get_array(courier_ctx *ctx, const courier_value *map,
                                       const char *key);
/* Optional fields: a missing or nil field is no failure. The string is NULL then; the integer
 * getter returns false and leaves `*out` alone. */
const char *courier_get_opt_str(courier_ctx *ctx, const courier_value *map, const char *key);
bool courier_get_opt_int(courier_ctx *ctx, const courier_value *map, const char *key,
                         int64_t *out);

/* ---- building a body ------------------------------------------------------------------- */

courier_value *courier_new_nil(courier_ctx *ctx);
courier_value *courier_new_bool(courier_ctx *ctx, bool value);
courier_value *courier_new_int(courier_ctx *ctx, int64_t value);
courier_value *courier_new_float(courier_ctx *ctx, double value);
/* Copies `value`; NULL makes a nil. */
courier_value *courier_new_str(courier_ctx *ctx, const char *value);
courier_value *courier_new_map(courier_ctx *ctx);
courier_value *courier_new_array(courier_ctx *ctx);
/* Sets a field of a map (copying the key; a key set twice keeps the last value) or appends to
 * an array; returns the container. A value belongs to one container: build a new one rather
 * than putting a decoded value into a body. */
courier_value *courier_put(courier_value *map, const char *key, courier_value *value);
courier_value *courier_push(courier_value *array, courier_value *value);

/* printf into memory that lives until the handler returns. */
const char *courier_format(courier_ctx *ctx, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
