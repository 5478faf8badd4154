/* The plugin's side of the `courier:bus` world: `describe` and `handle` for the host, and the
 * context a handler uses to read its message and to publish, send, reply, log and read its
 * settings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "plugin.h"

/* Defined by COURIER_PLUGIN in the plugin's own source. */
extern const courier_plugin courier_plugin_definition;

/* The bindings keep a reference to an object file of the world's type information; Courier's
 * build embeds that information into the module instead, so nothing is left to link. */
void __component_type_object_force_link_plugin(void);
void __component_type_object_force_link_plugin(void) {}

static const courier_bus_types_message_t *message_of(const courier_ctx *ctx) {
    return ctx->message;
}

/* A WIT string as a NUL-terminated copy that lives until the handler returns. */
static const char *c_string(const courier_ctx *ctx, const plugin_string_t *text) {
    return courier_arena_strndup((courier_arena *)&ctx->arena, (const char *)text->ptr, text->len);
}

static const char *c_option(const courier_ctx *ctx, const plugin_option_string_t *text) {
    return text->is_some ? c_string(ctx, &text->val) : NULL;
}

/* Text for the host, which takes UTF-8 only (anything else would trap the instance): as it
 * is when it is valid, else a copy with U+FFFD for every byte that does not fit. */
static plugin_string_t wit_string(courier_ctx *ctx, const char *text) {
    size_t len = strlen(text);
    if (courier_utf8_valid(text, len)) return (plugin_string_t){(uint8_t *)text, len};
    char *clean = courier_arena_alloc(&ctx->arena, 3 * len + 1);
    size_t out = 0;
    for (size_t at = 0; at < len;) {
        size_t width = 1;
        while (width <= 4 && at + width <= len && !courier_utf8_valid(text + at, width)) width++;
        if (width <= 4 && at + width <= len) {
            memcpy(clean + out, text + at, width);
            out += width;
            at += width;
        } else {
            memcpy(clean + out, "\xef\xbf\xbd", 3);
            out += 3;
            at += 1;
        }
    }
    return (plugin_string_t){(uint8_t *)clean, out};
}

static plugin_option_string_t wit_option(courier_ctx *ctx, const char *text) {
    plugin_option_string_t option = {0};
    if (text != NULL) {
        option.is_some = true;
        option.val = wit_string(ctx, text);
    }
    return option;
}

/* ---- the exports ----------------------------------------------------------------------- */

void exports_courier_bus_handler_describe(exports_courier_bus_handler_plugin_info_t *ret) {
    const courier_plugin *plugin = &courier_plugin_definition;
    /* The bindings free what is returned once the host has copied it. */
    plugin_string_dup(&ret->name, plugin->name);
    plugin_string_dup(&ret->version, plugin->version);
    ret->subscriptions.len = plugin->handler_count;
    ret->subscriptions.ptr = calloc(plugin->handler_count, sizeof(plugin_string_t));
    if (ret->subscriptions.ptr == NULL && plugin->handler_count > 0) abort();
    for (size_t i = 0; i < plugin->handler_count; i++) {
        plugin_string_dup(&ret->subscriptions.ptr[i], plugin->handlers[i].message_type);
    }
}

static bool equals(const plugin_string_t *text, const char *other) {
    size_t len = strlen(other);
    return text->len == len && memcmp(text->ptr, other, len) == 0;
}

/* The encoding a content type names, by its essence (before any `;`, any case), as the other
 * SDKs read it: "application/msgpack", "application/json", or NULL. */
static const char *known_content_type(courier_ctx *ctx, const char *content_type) {
    size_t len = strcspn(content_type, ";");
    while (len > 0 && (content_type[len - 1] == ' ' || content_type[len - 1] == '\t')) len--;
    while (len > 0 && (*content_type == ' ' || *content_type == '\t')) content_type++, len--;
    char *essence = courier_arena_strndup(&ctx->arena, content_type, len);
    static const char *const msgpack[] = {"application/msgpack", "application/x-msgpack",
                                          "application/vnd.msgpack"};
    for (size_t i = 0; i < sizeof(msgpack) / sizeof(msgpack[0]); i++) {
        if (strcasecmp(essence, msgpack[i]) == 0) return msgpack[0];
    }
    return strcasecmp(essence, "application/json") == 0 ? "application/json" : NULL;
}

/* The body as a tree, or NULL with the reason to reject the message with. */
static const courier_value *decode_body(courier_ctx *ctx, const char **reason) {
    const courier_bus_types_message_t *message = message_of(ctx);
    const char *content_type = known_content_type(ctx, courier_content_type(ctx));
    if (content_type == NULL) {
        *reason = courier_arena_format(&ctx->arena, "unsupported content type `%s`",
                                       courier_content_type(ctx));
        return NULL;
    }
    const char *error = NULL;
    courier_value *body =
        strcmp(content_type, "application/json") == 0
            ? courier_decode_json(&ctx->arena, message->body.ptr, message->body.len, &error)
            : courier_decode_msgpack(&ctx->arena, message->body.ptr, message->body.len, &error);
    if (body == NULL) {
        *reason = courier_arena_format(&ctx->arena, "body of %s does not decode as %s: %s",
                                       courier_message_type(ctx), content_type, error);
    }
    return body;
}

bool exports_courier_bus_handler_handle(exports_courier_bus_handler_message_t *message,
                                        exports_courier_bus_handler_handle_error_t *err) {
    const courier_plugin *plugin = &courier_plugin_definition;
    courier_ctx ctx = {0};
    ctx.message = message;
    const courier_handler *handler = NULL;
    for (size_t i = 0; i < plugin->handler_count; i++) {
        if (equals(&message->message_type, plugin->handlers[i].message_type)) {
            handler = &plugin->handlers[i];
            break;
        }
    }
    courier_status status = COURIER_REJECT;
    const char *reason = NULL;
    if (handler == NULL) {
        reason = courier_arena_format(&ctx.arena, "plugin %s has no handler for %s", plugin->name,
                                      courier_message_type(&ctx));
    } else {
        const courier_value *body = decode_body(&ctx, &reason);
        if (body != NULL) {
            status = handler->handle(&ctx, body);
            if (ctx.decode_error != NULL) {
                /* Whatever the handler made of a body that did not fit, it is not retried. */
                status = COURIER_REJECT;
                reason = courier_arena_format(
                    &ctx.arena, "body of %s does not decode as %s: %s", courier_message_type(&ctx),
                    known_content_type(&ctx, courier_content_type(&ctx)), ctx.decode_error);
            } else if (status != COURIER_OK) {
                reason = ctx.failure != NULL ? ctx.failure : "the handler failed without a reason";
            }
        }
    }
    bool handled = status == COURIER_OK;
    if (!handled) {
        err->tag = status == COURIER_RETRY ? COURIER_BUS_TYPES_HANDLE_ERROR_RETRY
                                           : COURIER_BUS_TYPES_HANDLE_ERROR_REJECT;
        /* Both cases hold one string at the same place; the bindings free it. */
        plugin_string_t text = wit_string(&ctx, reason);
        plugin_string_dup_n(&err->val.retry, (const char *)text.ptr, text.len);
    }
    courier_arena_free(&ctx.arena);
    exports_courier_bus_handler_message_free(message);
    return handled;
}

/* ---- failing --------------------------------------------------------------------------- */

static courier_status failed(courier_ctx *ctx, courier_status status, const char *format,
                             va_list args) {
    ctx->failure = courier_arena_vformat(&ctx->arena, format, args);
    return status;
}

courier_status courier_retry(courier_ctx *ctx, const char *format, ...) {
    va_list args;
    va_start(args, format);
    courier_status status = failed(ctx, COURIER_RETRY, format, args);
    va_end(args);
    return status;
}

courier_status courier_reject(courier_ctx *ctx, const char *format, ...) {
    va_list args;
    va_start(args, format);
    courier_status status = failed(ctx, COURIER_REJECT, format, args);
    va_end(args);
    return status;
}

courier_status courier_bus_failure(courier_ctx *ctx) {
    if (ctx->bus_error == NULL) {
        return courier_retry(ctx, "courier_bus_failure was called, but no publish was refused");
    }
    ctx->failure = ctx->bus_error;
    return ctx->bus_status;
}

/* ---- the envelope, settings, the log --------------------------------------------------- */

const char *courier_message_id(const courier_ctx *ctx) {
    return c_string(ctx, &message_of(ctx)->id);
}

const char *courier_message_type(const courier_ctx *ctx) {
    return c_string(ctx, &message_of(ctx)->message_type);
}

const char *courier_content_type(const courier_ctx *ctx) {
    return c_string(ctx, &message_of(ctx)->content_type);
}

const char *courier_correlation_id(const courier_ctx *ctx) {
    return c_option(ctx, &message_of(ctx)->correlation_id);
}

const char *courier_conversation_id(const courier_ctx *ctx) {
    return c_string(ctx, &message_of(ctx)->conversation_id);
}

const char *courier_reply_to(const courier_ctx *ctx) {
    return c_option(ctx, &message_of(ctx)->reply_to);
}

const char *courier_session_id(const courier_ctx *ctx) {
    return c_option(ctx, &message_of(ctx)->session_id);
}

const char *courier_initiator_id(const courier_ctx *ctx) {
    return c_option(ctx, &message_of(ctx)->initiator_id);
}

const char *courier_source_address(const courier_ctx *ctx) {
    return c_option(ctx, &message_of(ctx)->source_address);
}

uint64_t courier_sent_at_ms(const courier_ctx *ctx) {
    return message_of(ctx)->sent_at_ms;
}

uint64_t courier_expires_at_ms(const courier_ctx *ctx) {
    const plugin_option_u64_t *expiry = &message_of(ctx)->expires_at_ms;
    return expiry->is_some ? expiry->val : 0;
}

uint32_t courier_attempt(const courier_ctx *ctx) {
    return message_of(ctx)->attempt;
}

const char *courier_header(const courier_ctx *ctx, const char *name) {
    const plugin_list_tuple2_string_string_t *headers = &message_of(ctx)->headers;
    size_t len = strlen(name);
    for (size_t i = 0; i < headers->len; i++) {
        const plugin_string_t *key = &headers->ptr[i].f0;
        if (key->len == len && strncasecmp((const char *)key->ptr, name, len) == 0) {
            return c_string(ctx, &headers->ptr[i].f1);
        }
    }
    return NULL;
}

const char *courier_config(courier_ctx *ctx, const char *key) {
    plugin_string_t wit_key = wit_string(ctx, key);
    plugin_string_t value;
    if (!courier_bus_config_get(&wit_key, &value)) return NULL;
    const char *copy = c_string(ctx, &value);
    plugin_string_free(&value);
    return copy;
}

void courier_log(courier_ctx *ctx, courier_level level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    plugin_string_t text = wit_string(ctx, courier_arena_vformat(&ctx->arena, format, args));
    va_end(args);
    courier_bus_log_log((courier_bus_log_level_t)level, &text);
}

/* ---- publishing ------------------------------------------------------------------------ */

enum route { PUBLISH, SEND, REPLY };

static bool refused(courier_ctx *ctx, courier_status status, const char *kind, const char *why) {
    ctx->bus_status = status;
    ctx->bus_error = courier_arena_format(&ctx->arena, "%s: %s", kind, why);
    return false;
}

static bool release(courier_ctx *ctx, enum route route, const char *destination,
                    const char *message_type, const courier_value *body,
                    const courier_options *options) {
    static const courier_options defaults = {0};
    if (options == NULL) options = &defaults;
    if (message_type == NULL || (route == SEND && destination == NULL)) {
        return refused(ctx, COURIER_REJECT, "invalid", "no message type or no destination");
    }
    if (body == NULL) body = courier_new_nil(ctx);
    uint8_t *bytes;
    size_t len;
    const char *error;
    bool encoded = options->json ? courier_encode_json(&ctx->arena, body, &bytes, &len, &error)
                                 : courier_encode_msgpack(&ctx->arena, body, &bytes, &len, &error);
    if (!encoded) {
        return refused(ctx, COURIER_REJECT, "invalid",
                       courier_arena_format(&ctx->arena, "%s does not encode: %s", message_type,
                                            error));
    }
    plugin_tuple2_string_string_t *headers = NULL;
    if (options->header_count > 0) {
        headers = courier_arena_alloc(&ctx->arena, options->header_count * sizeof(*headers));
        for (size_t i = 0; i < options->header_count; i++) {
            headers[i].f0 = wit_string(ctx, options->headers[i].name);
            headers[i].f1 = wit_string(ctx, options->headers[i].value);
        }
    }
    courier_bus_bus_outgoing_t outgoing = {
        .message_type = wit_string(ctx, message_type),
        .content_type = wit_string(ctx, options->json ? "application/json" : "application/msgpack"),
        .body = {bytes, len},
        .correlation_id = wit_option(ctx, options->correlation_id),
        .session_id = wit_option(ctx, options->session_id),
        .reply_to = wit_option(ctx, options->reply_to),
        .headers = {headers, options->header_count},
        .delay_ms = {options->delay_ms > 0, options->delay_ms},
        .ttl_ms = {options->ttl_ms > 0, options->ttl_ms},
    };
    plugin_string_t id;
    courier_bus_bus_bus_error_t bus_error;
    bool taken;
    switch (route) {
    case SEND: {
        plugin_string_t to = wit_string(ctx, destination);
        taken = courier_bus_bus_send(&to, &outgoing, &id, &bus_error);
        break;
    }
    case REPLY: taken = courier_bus_bus_reply(&outgoing, &id, &bus_error); break;
    default: taken = courier_bus_bus_publish(&outgoing, &id, &bus_error); break;
    }
    if (taken) {
        plugin_string_free(&id);
        ctx->bus_error = NULL;
        return true;
    }
    /* Every case holds one string at the same place. */
    const char *why = c_string(ctx, &bus_error.val.denied);
    uint8_t tag = bus_error.tag;
    courier_bus_bus_bus_error_free(&bus_error);
    switch (tag) {
    case COURIER_BUS_TYPES_BUS_ERROR_UNAVAILABLE:
        return refused(ctx, COURIER_RETRY, "unavailable", why);
    case COURIER_BUS_TYPES_BUS_ERROR_DENIED: return refused(ctx, COURIER_REJECT, "denied", why);
    default: return refused(ctx, COURIER_REJECT, "invalid", why);
    }
}

bool courier_publish(courier_ctx *ctx, const char *message_type, const courier_value *body,
                     const courier_options *options) {
    return release(ctx, PUBLISH, NULL, message_type, body, options);
}

bool courier_send(courier_ctx *ctx, const char *destination, const char *message_type,
                  const courier_value *body, const courier_options *options) {
    return release(ctx, SEND, destination, message_type, body, options);
}

bool courier_reply(courier_ctx *ctx, const char *message_type, const courier_value *body,
                   const courier_options *options) {
    return release(ctx, REPLY, NULL, message_type, body, options);
}
