/* What the SDK's two halves share: the value tree and its codecs (value.c, which builds for
 * the host as well, for the SDK's unit tests) and the plugin's side of the WIT contract
 * (courier.c). Not part of the public API. */
#ifndef COURIER_INTERNAL_H
#define COURIER_INTERNAL_H

#include <stdarg.h>

#include "courier.h"

/* A bump allocator: every allocation of one message, freed together when it is handled. */
typedef struct courier_chunk courier_chunk;
struct courier_arena {
    courier_chunk *head;
};

void *courier_arena_alloc(courier_arena *arena, size_t size);
char *courier_arena_strndup(courier_arena *arena, const char *text, size_t len);
const char *courier_arena_vformat(courier_arena *arena, const char *format, va_list args);
const char *courier_arena_format(courier_arena *arena, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
void courier_arena_free(courier_arena *arena);

struct courier_ctx {
    courier_arena arena;
    /* The first read that did not fit, as the reason to reject with. */
    const char *decode_error;
    /* Set by courier_retry / courier_reject. */
    const char *failure;
    /* The last refusal of the bus: its status and its reason. */
    courier_status bus_status;
    const char *bus_error;
    /* The consumed message, as the bindings gave it (courier.c only). */
    const void *message;
};

courier_value *courier_value_new(courier_arena *arena, courier_kind kind);

bool courier_utf8_valid(const char *text, size_t len);

/* The body's tree, or NULL with the reason in `*error`. */
courier_value *courier_decode_msgpack(courier_arena *arena, const uint8_t *bytes, size_t len,
                                      const char **error);
courier_value *courier_decode_json(courier_arena *arena, const uint8_t *bytes, size_t len,
                                   const char **error);

/* The encoded body, or false with the reason in `*error`. */
bool courier_encode_msgpack(courier_arena *arena, const courier_value *value, uint8_t **bytes,
                            size_t *len, const char **error);
bool courier_encode_json(courier_arena *arena, const courier_value *value, uint8_t **bytes,
                         size_t *len, const char **error);

/* Where a value sits in its body: `nested.flag`, `lines[0].sku`; "" for the body itself. */
const char *courier_path(courier_arena *arena, const courier_value *value);

#endif
