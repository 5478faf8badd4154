/* The value tree a body decodes into, the getters that read it, the builders that make one,
 * and the MessagePack and JSON codecs. Nothing here calls the host, so the SDK's unit tests
 * build this file natively. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Deeper bodies are refused rather than risking the guest's stack. */
#define MAX_DEPTH 64

/* ---- the arena ------------------------------------------------------------------------- */

#define CHUNK_SIZE (64 * 1024)

struct courier_chunk {
    courier_chunk *next;
    size_t used, cap;
    _Alignas(8) unsigned char data[];
};

void *courier_arena_alloc(courier_arena *arena, size_t size) {
    /* Nothing the SDK allocates needs more than 8-byte alignment. */
    size = (size + 7) & ~(size_t)7;
    courier_chunk *chunk = arena->head;
    if (chunk == NULL || chunk->cap - chunk->used < size) {
        size_t cap = size > CHUNK_SIZE ? size : CHUNK_SIZE;
        chunk = malloc(sizeof(courier_chunk) + cap);
        /* Only the host's memory cap makes malloc fail, and it traps first. */
        if (chunk == NULL) abort();
        chunk->used = 0;
        chunk->cap = cap;
        chunk->next = arena->head;
        arena->head = chunk;
    }
    void *memory = chunk->data + chunk->used;
    chunk->used += size;
    return memory;
}

char *courier_arena_strndup(courier_arena *arena, const char *text, size_t len) {
    char *copy = courier_arena_alloc(arena, len + 1);
    if (len > 0) memcpy(copy, text, len);
    copy[len] = '\0';
    return copy;
}

const char *courier_arena_vformat(courier_arena *arena, const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int len = vsnprintf(NULL, 0, format, args);
    if (len < 0) {
        va_end(again);
        return format;
    }
    char *text = courier_arena_alloc(arena, (size_t)len + 1);
    vsnprintf(text, (size_t)len + 1, format, again);
    va_end(again);
    return text;
}

const char *courier_arena_format(courier_arena *arena, const char *format, ...) {
    va_list args;
    va_start(args, format);
    const char *text = courier_arena_vformat(arena, format, args);
    va_end(args);
    return text;
}

void courier_arena_free(courier_arena *arena) {
    courier_chunk *chunk = arena->head;
    while (chunk != NULL) {
        courier_chunk *next = chunk->next;
        free(chunk);
        chunk = next;
    }
    arena->head = NULL;
}

/* ---- text ------------------------------------------------------------------------------ */

bool courier_utf8_valid(const char *text, size_t len) {
    const unsigned char *at = (const unsigned char *)text, *end = at + len;
    while (at < end) {
        unsigned char c = *at;
        size_t width;
        uint32_t code, min;
        if (c < 0x80) {
            at++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            width = 2, code = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            width = 3, code = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            width = 4, code = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if ((size_t)(end - at) < width) return false;
        for (size_t i = 1; i < width; i++) {
            if ((at[i] & 0xc0) != 0x80) return false;
            code = code << 6 | (at[i] & 0x3f);
        }
        if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
        at += width;
    }
    return true;
}

/* ---- values ---------------------------------------------------------------------------- */

courier_value *courier_value_new(courier_arena *arena, courier_kind kind) {
    courier_value *value = courier_arena_alloc(arena, sizeof(courier_value));
    memset(value, 0, sizeof(*value));
    value->kind = kind;
    value->arena = arena;
    return value;
}

static void grow(courier_arena *arena, void **items, size_t *cap, size_t item_size) {
    size_t bigger = *cap == 0 ? 4 : *cap * 2;
    void *moved = courier_arena_alloc(arena, bigger * item_size);
    if (*cap > 0) memcpy(moved, *items, *cap * item_size);
    *items = moved;
    *cap = bigger;
}

static void map_insert(courier_value *map, const char *key, courier_value *value) {
    if (map->as.map.len == map->as.map.cap) {
        grow(map->arena, (void **)&map->as.map.items, &map->as.map.cap, sizeof(courier_entry));
    }
    map->as.map.items[map->as.map.len++] = (courier_entry){key, value};
    value->parent = map;
    value->key = key;
}

static void array_append(courier_value *array, courier_value *value) {
    if (array->as.array.len == array->as.array.cap) {
        grow(array->arena, (void **)&array->as.array.items, &array->as.array.cap,
             sizeof(courier_value *));
    }
    value->parent = array;
    value->key = NULL;
    value->index = array->as.array.len;
    array->as.array.items[array->as.array.len++] = value;
}

courier_value *courier_put(courier_value *map, const char *key, courier_value *value) {
    if (map == NULL || map->kind != COURIER_MAP || map->arena == NULL || key == NULL ||
        value == NULL) {
        return map;
    }
    for (size_t i = 0; i < map->as.map.len; i++) {
        if (strcmp(map->as.map.items[i].key, key) == 0) {
            map->as.map.items[i].value = value;
            value->parent = map;
            value->key = map->as.map.items[i].key;
            return map;
        }
    }
    map_insert(map, courier_arena_strndup(map->arena, key, strlen(key)), value);
    return map;
}

courier_value *courier_push(courier_value *array, courier_value *value) {
    if (array == NULL || array->kind != COURIER_ARRAY || array->arena == NULL || value == NULL) {
        return array;
    }
    array_append(array, value);
    return array;
}

courier_value *courier_new_nil(courier_ctx *ctx) {
    return courier_value_new(&ctx->arena, COURIER_NIL);
}

courier_value *courier_new_bool(courier_ctx *ctx, bool value) {
    courier_value *made = courier_value_new(&ctx->arena, COURIER_BOOL);
    made->as.boolean = value;
    return made;
}

courier_value *courier_new_int(courier_ctx *ctx, int64_t value) {
    courier_value *made = courier_value_new(&ctx->arena, COURIER_INT);
    made->as.integer = value;
    return made;
}

courier_value *courier_new_float(courier_ctx *ctx, double value) {
    courier_value *made = courier_value_new(&ctx->arena, COURIER_FLOAT);
    made->as.number = value;
    return made;
}

courier_value *courier_new_str(courier_ctx *ctx, const char *value) {
    if (value == NULL) return courier_new_nil(ctx);
    courier_value *made = courier_value_new(&ctx->arena, COURIER_STR);
    size_t len = strlen(value);
    made->as.bytes.ptr = courier_arena_strndup(&ctx->arena, value, len);
    made->as.bytes.len = len;
    return made;
}

courier_value *courier_new_map(courier_ctx *ctx) {
    return courier_value_new(&ctx->arena, COURIER_MAP);
}

courier_value *courier_new_array(courier_ctx *ctx) {
    return courier_value_new(&ctx->arena, COURIER_ARRAY);
}

const char *courier_format(courier_ctx *ctx, const char *format, ...) {
    va_list args;
    va_start(args, format);
    const char *text = courier_arena_vformat(&ctx->arena, format, args);
    va_end(args);
    return text;
}

/* ---- reading --------------------------------------------------------------------------- */

static const char *kind_name(courier_kind kind) {
    switch (kind) {
    case COURIER_NIL: return "nil";
    case COURIER_BOOL: return "a boolean";
    case COURIER_INT: return "an integer";
    case COURIER_UINT: return "an integer above 2^63-1";
    case COURIER_FLOAT: return "a float";
    case COURIER_STR: return "a string";
    case COURIER_BIN: return "binary data";
    case COURIER_ARRAY: return "an array";
    case COURIER_MAP: return "a map";
    case COURIER_MISSING: return "nothing";
    }
    return "an unknown kind";
}

const char *courier_path(courier_arena *arena, const courier_value *value) {
    size_t depth = 0;
    for (const courier_value *at = value; at != NULL && at->parent != NULL; at = at->parent) {
        depth++;
    }
    if (depth == 0) return "";
    const courier_value **steps = courier_arena_alloc(arena, depth * sizeof(*steps));
    size_t i = depth;
    for (const courier_value *at = value; i > 0; at = at->parent) steps[--i] = at;
    size_t len = 0;
    for (i = 0; i < depth; i++) {
        len += steps[i]->key != NULL ? strlen(steps[i]->key) + 1 : 24;
    }
    char *path = courier_arena_alloc(arena, len + 1);
    size_t at = 0;
    for (i = 0; i < depth; i++) {
        if (steps[i]->key != NULL) {
            at += (size_t)snprintf(path + at, len + 1 - at, "%s%s", at > 0 ? "." : "",
                                   steps[i]->key);
        } else {
            at += (size_t)snprintf(path + at, len + 1 - at, "[%zu]", steps[i]->index);
        }
    }
    return path;
}

/* What a read of NULL (an item past the end of an array) reads. */
static const courier_value past_the_end = {.kind = COURIER_MISSING};

static void read_failed(courier_ctx *ctx, const courier_value *value, const char *expected) {
    if (ctx->decode_error != NULL) return;
    if (value == &past_the_end) {
        ctx->decode_error = courier_arena_format(&ctx->arena, "an item past the end of an array");
        return;
    }
    const char *path = courier_path(&ctx->arena, value);
    if (value->kind == COURIER_MISSING) {
        ctx->decode_error = courier_arena_format(&ctx->arena, "missing field `%s`", path);
    } else if (*path == '\0') {
        ctx->decode_error = courier_arena_format(&ctx->arena, "the body: expected %s, found %s",
                                                 expected, kind_name(value->kind));
    } else {
        ctx->decode_error = courier_arena_format(&ctx->arena, "field `%s`: expected %s, found %s",
                                                 path, expected, kind_name(value->kind));
    }
}

bool courier_decoded(const courier_ctx *ctx) {
    return ctx->decode_error == NULL;
}

/* What a failed read of a container returns: empty, so that reading on finds nothing. */
static const courier_value empty_map = {.kind = COURIER_MAP};
static const courier_value empty_array = {.kind = COURIER_ARRAY};

const courier_value *courier_field(courier_ctx *ctx, const courier_value *map, const char *key) {
    if (map == NULL) map = &past_the_end;
    if (map->kind == COURIER_MAP) {
        for (size_t i = 0; i < map->as.map.len; i++) {
            if (strcmp(map->as.map.items[i].key, key) == 0) return map->as.map.items[i].value;
        }
    } else {
        read_failed(ctx, map, "a map");
    }
    courier_value *missing = courier_value_new(&ctx->arena, COURIER_MISSING);
    missing->parent = map;
    missing->key = courier_arena_strndup(&ctx->arena, key, strlen(key));
    return missing;
}

const courier_value *courier_item(const courier_value *array, size_t index) {
    if (array == NULL || array->kind != COURIER_ARRAY || index >= array->as.array.len) return NULL;
    return array->as.array.items[index];
}

bool courier_has(const courier_value *map, const char *key) {
    if (map == NULL || map->kind != COURIER_MAP) return false;
    for (size_t i = 0; i < map->as.map.len; i++) {
        if (strcmp(map->as.map.items[i].key, key) == 0) {
            return map->as.map.items[i].value->kind != COURIER_NIL;
        }
    }
    return false;
}

size_t courier_len(const courier_value *value) {
    if (value == NULL) return 0;
    switch (value->kind) {
    case COURIER_ARRAY: return value->as.array.len;
    case COURIER_MAP: return value->as.map.len;
    case COURIER_STR:
    case COURIER_BIN: return value->as.bytes.len;
    default: return 0;
    }
}

const char *courier_as_str(courier_ctx *ctx, const courier_value *value) {
    if (value == NULL) value = &past_the_end;
    if (value->kind == COURIER_STR) return value->as.bytes.ptr;
    read_failed(ctx, value, "a string");
    return "";
}

int64_t courier_as_int(courier_ctx *ctx, const courier_value *value) {
    if (value == NULL) value = &past_the_end;
    if (value->kind == COURIER_INT) return value->as.integer;
    read_failed(ctx, value, "an integer");
    return 0;
}

double courier_as_float(courier_ctx *ctx, const courier_value *value) {
    if (value == NULL) value = &past_the_end;
    switch (value->kind) {
    case COURIER_FLOAT: return value->as.number;
    case COURIER_INT: return (double)value->as.integer;
    case COURIER_UINT: return (double)value->as.uinteger;
    default: read_failed(ctx, value, "a float"); return 0;
    }
}

bool courier_as_bool(courier_ctx *ctx, const courier_value *value) {
    if (value == NULL) value = &past_the_end;
    if (value->kind == COURIER_BOOL) return value->as.boolean;
    read_failed(ctx, value, "a boolean");
    return false;
}

const courier_value *courier_as_map(courier_ctx *ctx, const courier_value *value) {
    if (value == NULL) value = &past_the_end;
    if (value->kind == COURIER_MAP) return value;
    read_failed(ctx, value, "a map");
    return &empty_map;
}

const courier_value *courier_as_array(courier_ctx *ctx, const courier_value *value) {
    if (value == NULL) value = &past_the_end;
    if (value->kind == COURIER_ARRAY) return value;
    read_failed(ctx, value, "an array");
    return &empty_array;
}

const char *courier_get_str(courier_ctx *ctx, const courier_value *map, const char *key) {
    return courier_as_str(ctx, courier_field(ctx, map, key));
}

int64_t courier_get_int(courier_ctx *ctx, const courier_value *map, const char *key) {
    return courier_as_int(ctx, courier_field(ctx, map, key));
}

double courier_get_float(courier_ctx *ctx, const courier_value *map, const char *key) {
    return courier_as_float(ctx, courier_field(ctx, map, key));
}

bool courier_get_bool(courier_ctx *ctx, const courier_value *map, const char *key) {
    return courier_as_bool(ctx, courier_field(ctx, map, key));
}

const courier_value *courier_get_map(courier_ctx *ctx, const courier_value *map, const char *key) {
    return courier_as_map(ctx, courier_field(ctx, map, key));
}

const courier_value *courier_get_array(courier_ctx *ctx, const courier_value *map,
                                       const char *key) {
    return courier_as_array(ctx, courier_field(ctx, map, key));
}

const char *courier_get_opt_str(courier_ctx *ctx, const courier_value *map, const char *key) {
    const courier_value *value = courier_field(ctx, map, key);
    if (value->kind == COURIER_MISSING || value->kind == COURIER_NIL) return NULL;
    return courier_as_str(ctx, value);
}

bool courier_get_opt_int(courier_ctx *ctx, const courier_value *map, const char *key,
                         int64_t *out) {
    const courier_value *value = courier_field(ctx, map, key);
    if (value->kind == COURIER_MISSING || value->kind == COURIER_NIL) return false;
    *out = courier_as_int(ctx, value);
    return true;
}

/* ---- MessagePack decoding -------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *at, *end;
    courier_arena *arena;
    const char *error;
    int depth;
} reader;

static bool fail(reader *in, const char *why) {
    if (in->error == NULL) in->error = why;
    return false;
}

static bool take(reader *in, size_t count, const uint8_t **bytes) {
    if ((size_t)(in->end - in->at) < count) return fail(in, "the body ends too soon");
    *bytes = in->at;
    in->at += count;
    return true;
}

static bool read_be(reader *in, size_t width, uint64_t *out) {
    const uint8_t *bytes;
    if (!take(in, width, &bytes)) return false;
    uint64_t value = 0;
    for (size_t i = 0; i < width; i++) value = value << 8 | bytes[i];
    *out = value;
    return true;
}

static courier_value *msgpack_value(reader *in);

static courier_value *msgpack_bytes(reader *in, courier_kind kind, uint64_t len) {
    const uint8_t *bytes;
    if (len > (uint64_t)(in->end - in->at)) return fail(in, "the body ends too soon"), NULL;
    if (!take(in, (size_t)len, &bytes)) return NULL;
    if (kind == COURIER_STR && !courier_utf8_valid((const char *)bytes, (size_t)len)) {
        return fail(in, "a string is not valid UTF-8"), NULL;
    }
    courier_value *value = courier_value_new(in->arena, kind);
    /* Empty strings share one copy, so a body of many costs no more than it must. */
    value->as.bytes.ptr =
        len == 0 ? "" : courier_arena_strndup(in->arena, (const char *)bytes, (size_t)len);
    value->as.bytes.len = (size_t)len;
    return value;
}

/* Containers decoded from MessagePack know their size: room for exactly that. */
static void reserve(courier_value *container, uint64_t count, size_t item_size) {
    if (count == 0) return;
    void *items = courier_arena_alloc(container->arena, (size_t)count * item_size);
    if (container->kind == COURIER_ARRAY) {
        container->as.array.items = items;
        container->as.array.cap = (size_t)count;
    } else {
        container->as.map.items = items;
        container->as.map.cap = (size_t)count;
    }
}

static courier_value *msgpack_array(reader *in, uint64_t count) {
    /* Every item takes at least a byte: a count beyond what is left is a lie. */
    if (count > (uint64_t)(in->end - in->at)) return fail(in, "the body ends too soon"), NULL;
    courier_value *array = courier_value_new(in->arena, COURIER_ARRAY);
    reserve(array, count, sizeof(courier_value *));
    for (uint64_t i = 0; i < count; i++) {
        courier_value *item = msgpack_value(in);
        if (item == NULL) return NULL;
        array_append(array, item);
    }
    return array;
}

static courier_value *msgpack_map(reader *in, uint64_t count) {
    if (count > (uint64_t)(in->end - in->at) / 2) return fail(in, "the body ends too soon"), NULL;
    courier_value *map = courier_value_new(in->arena, COURIER_MAP);
    reserve(map, count, sizeof(courier_entry));
    for (uint64_t i = 0; i < count; i++) {
        courier_value *key = msgpack_value(in);
        if (key == NULL) return NULL;
        if (key->kind != COURIER_STR) return fail(in, "a map key is not a string"), NULL;
        if (strlen(key->as.bytes.ptr) != key->as.bytes.len) {
            return fail(in, "a map key holds a NUL byte"), NULL;
        }
        courier_value *value = msgpack_value(in);
        if (value == NULL) return NULL;
        map_insert(map, key->as.bytes.ptr, value);
    }
    return map;
}

static courier_value *msgpack_int(reader *in, int64_t integer) {
    courier_value *value = courier_value_new(in->arena, COURIER_INT);
    value->as.integer = integer;
    return value;
}

static courier_value *msgpack_uint(reader *in, uint64_t integer) {
    if (integer <= INT64_MAX) return msgpack_int(in, (int64_t)integer);
    courier_value *value = courier_value_new(in->arena, COURIER_UINT);
    value->as.uinteger = integer;
    return value;
}

static courier_value *msgpack_value(reader *in) {
    const uint8_t *head;
    if (!take(in, 1, &head)) return NULL;
    uint8_t marker = *head;
    uint64_t n;
    if (marker <= 0x7f) return msgpack_int(in, marker);
    if (marker >= 0xe0) return msgpack_int(in, (int8_t)marker);
    /* Only containers nest: the depth counts them. */
    bool container = (marker & 0xe0) == 0x80 || (marker >= 0xdc && marker <= 0xdf);
    if (container && in->depth >= MAX_DEPTH) return fail(in, "the body nests too deep"), NULL;
    courier_value *value = NULL;
    in->depth++;
    if ((marker & 0xf0) == 0x80) {
        value = msgpack_map(in, marker & 0x0f);
    } else if ((marker & 0xf0) == 0x90) {
        value = msgpack_array(in, marker & 0x0f);
    } else if ((marker & 0xe0) == 0xa0) {
        value = msgpack_bytes(in, COURIER_STR, marker & 0x1f);
    } else {
        switch (marker) {
        case 0xc0: value = courier_value_new(in->arena, COURIER_NIL); break;
        case 0xc2:
        case 0xc3:
            value = courier_value_new(in->arena, COURIER_BOOL);
            value->as.boolean = marker == 0xc3;
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6:
            if (read_be(in, (size_t)1 << (marker - 0xc4), &n)) {
                value = msgpack_bytes(in, COURIER_BIN, n);
            }
            break;
        case 0xca:
            if (read_be(in, 4, &n)) {
                uint32_t bits = (uint32_t)n;
                float single;
                memcpy(&single, &bits, sizeof(single));
                value = courier_value_new(in->arena, COURIER_FLOAT);
                value->as.number = single;
            }
            break;
        case 0xcb:
            if (read_be(in, 8, &n)) {
                value = courier_value_new(in->arena, COURIER_FLOAT);
                memcpy(&value->as.number, &n, sizeof(double));
            }
            break;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            if (read_be(in, (size_t)1 << (marker - 0xcc), &n)) value = msgpack_uint(in, n);
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3: {
            size_t width = (size_t)1 << (marker - 0xd0);
            if (read_be(in, width, &n)) {
                /* Sign-extend from the width read. */
                unsigned shift = (unsigned)(64 - 8 * width);
                value = msgpack_int(in, (int64_t)(n << shift) >> shift);
            }
            break;
        }
        case 0xd9:
        case 0xda:
        case 0xdb:
            if (read_be(in, (size_t)1 << (marker - 0xd9), &n)) {
                value = msgpack_bytes(in, COURIER_STR, n);
            }
            break;
        case 0xdc:
        case 0xdd:
            if (read_be(in, marker == 0xdc ? 2 : 4, &n)) value = msgpack_array(in, n);
            break;
        case 0xde:
        case 0xdf:
            if (read_be(in, marker == 0xde ? 2 : 4, &n)) value = msgpack_map(in, n);
            break;
        case 0xc7:
        case 0xc8:
        case 0xc9:
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8: fail(in, "MessagePack extension types are not supported"); break;
        default: fail(in, "the body holds a byte that is no MessagePack marker"); break;
        }
    }
    in->depth--;
    return value;
}

courier_value *courier_decode_msgpack(courier_arena *arena, const uint8_t *bytes, size_t len,
                                      const char **error) {
    reader in = {bytes, bytes + len, arena, NULL, 0};
    courier_value *value = msgpack_value(&in);
    if (value != NULL && in.at != in.end) {
        value = NULL;
        fail(&in, "bytes follow the end of the body");
    }
    if (value == NULL) *error = in.error;
    return value;
}

/* ---- JSON decoding --------------------------------------------------------------------- */

static void skip_space(reader *in) {
    while (in->at < in->end &&
           (*in->at == ' ' || *in->at == '\t' || *in->at == '\n' || *in->at == '\r')) {
        in->at++;
    }
}

static bool expect_word(reader *in, const char *word) {
    size_t len = strlen(word);
    if ((size_t)(in->end - in->at) < len || memcmp(in->at, word, len) != 0) {
        return fail(in, "the body is not JSON");
    }
    in->at += len;
    return true;
}

static int hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(reader *in, uint32_t *out) {
    const uint8_t *digits;
    if (!take(in, 4, &digits)) return false;
    uint32_t value = 0;
    for (int i = 0; i < 4; i++) {
        int digit = hex_digit(digits[i]);
        if (digit < 0) return fail(in, "a JSON string has a bad \\u escape");
        value = value << 4 | (uint32_t)digit;
    }
    *out = value;
    return true;
}

static size_t put_utf8(char *out, uint32_t code) {
    if (code < 0x80) {
        out[0] = (char)code;
        return 1;
    }
    if (code < 0x800) {
        out[0] = (char)(0xc0 | code >> 6);
        out[1] = (char)(0x80 | (code & 0x3f));
        return 2;
    }
    if (code < 0x10000) {
        out[0] = (char)(0xe0 | code >> 12);
        out[1] = (char)(0x80 | (code >> 6 & 0x3f));
        out[2] = (char)(0x80 | (code & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | code >> 18);
    out[1] = (char)(0x80 | (code >> 12 & 0x3f));
    out[2] = (char)(0x80 | (code >> 6 & 0x3f));
    out[3] = (char)(0x80 | (code & 0x3f));
    return 4;
}

/* After the opening quote. An escape never takes more bytes decoded than written. */
static courier_value *json_string(reader *in) {
    const uint8_t *start = in->at;
    while (in->at < in->end && *in->at != '"') {
        if (*in->at == '\\' && in->end - in->at < 2) {
            return fail(in, "a JSON string does not end"), NULL;
        }
        in->at += *in->at == '\\' ? 2 : 1;
    }
    if (in->at >= in->end) return fail(in, "a JSON string does not end"), NULL;
    size_t raw_len = (size_t)(in->at - start);
    const uint8_t *after = in->at + 1;
    char *text = courier_arena_alloc(in->arena, raw_len + 1);
    size_t len = 0;
    in->at = start;
    while (in->at < after - 1) {
        uint8_t c = *in->at++;
        if (c < 0x20) return fail(in, "a JSON string holds a control character"), NULL;
        if (c != '\\') {
            text[len++] = (char)c;
            continue;
        }
        uint8_t escape = *in->at++;
        switch (escape) {
        case '"':
        case '\\':
        case '/': text[len++] = (char)escape; break;
        case 'b': text[len++] = '\b'; break;
        case 'f': text[len++] = '\f'; break;
        case 'n': text[len++] = '\n'; break;
        case 'r': text[len++] = '\r'; break;
        case 't': text[len++] = '\t'; break;
        case 'u': {
            uint32_t code;
            if (!read_hex4(in, &code)) return NULL;
            if (code >= 0xd800 && code <= 0xdbff) {
                uint32_t low;
                if (!expect_word(in, "\\u") || !read_hex4(in, &low) || low < 0xdc00 ||
                    low > 0xdfff) {
                    return fail(in, "a JSON string has a lone surrogate"), NULL;
                }
                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
            } else if (code >= 0xdc00 && code <= 0xdfff) {
                return fail(in, "a JSON string has a lone surrogate"), NULL;
            }
            len += put_utf8(text + len, code);
            break;
        }
        default: return fail(in, "a JSON string has an unknown escape"), NULL;
        }
    }
    in->at = after;
    text[len] = '\0';
    if (!courier_utf8_valid(text, len)) return fail(in, "a string is not valid UTF-8"), NULL;
    courier_value *value = courier_value_new(in->arena, COURIER_STR);
    value->as.bytes.ptr = text;
    value->as.bytes.len = len;
    return value;
}

static bool digit_at(const reader *in) {
    return in->at < in->end && *in->at >= '0' && *in->at <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static courier_value *json_number(reader *in) {
    const uint8_t *start = in->at;
    bool integral = true;
    if (in->at < in->end && *in->at == '-') in->at++;
    if (!digit_at(in)) return fail(in, "the body is not JSON"), NULL;
    if (*in->at == '0') {
        in->at++;
    } else {
        while (digit_at(in)) in->at++;
    }
    if (in->at < in->end && *in->at == '.') {
        integral = false;
        in->at++;
        if (!digit_at(in)) return fail(in, "a JSON number is malformed"), NULL;
        while (digit_at(in)) in->at++;
    }
    if (in->at < in->end && (*in->at == 'e' || *in->at == 'E')) {
        integral = false;
        in->at++;
        if (in->at < in->end && (*in->at == '+' || *in->at == '-')) in->at++;
        if (!digit_at(in)) return fail(in, "a JSON number is malformed"), NULL;
        while (digit_at(in)) in->at++;
    }
    size_t len = (size_t)(in->at - start);
    char *text = courier_arena_strndup(in->arena, (const char *)start, len);
    char *end;
    if (integral) {
        errno = 0;
        if (*text == '-') {
            long long integer = strtoll(text, &end, 10);
            if (errno == 0 && *end == '\0') return msgpack_int(in, integer);
        } else {
            unsigned long long integer = strtoull(text, &end, 10);
            if (errno == 0 && *end == '\0') return msgpack_uint(in, integer);
        }
    }
    double number = strtod(text, &end);
    if (*end != '\0') return fail(in, "a JSON number is malformed"), NULL;
    if (!isfinite(number)) return fail(in, "a JSON number is out of range"), NULL;
    courier_value *value = courier_value_new(in->arena, COURIER_FLOAT);
    value->as.number = number;
    return value;
}

static courier_value *json_value(reader *in) {
    skip_space(in);
    if (in->at >= in->end) return fail(in, "the body ends too soon"), NULL;
    uint8_t c = *in->at;
    if (c == '"') {
        in->at++;
        return json_string(in);
    }
    if (c == '{' || c == '[') {
        if (in->depth >= MAX_DEPTH) return fail(in, "the body nests too deep"), NULL;
        in->depth++;
        in->at++;
        bool is_map = c == '{';
        courier_value *container =
            courier_value_new(in->arena, is_map ? COURIER_MAP : COURIER_ARRAY);
        skip_space(in);
        if (in->at < in->end && *in->at == (is_map ? '}' : ']')) {
            in->at++;
            in->depth--;
            return container;
        }
        for (;;) {
            if (is_map) {
                skip_space(in);
                if (in->at >= in->end || *in->at != '"') {
                    return fail(in, "a JSON object key is not a string"), NULL;
                }
                in->at++;
                courier_value *key = json_string(in);
                if (key == NULL) return NULL;
                if (strlen(key->as.bytes.ptr) != key->as.bytes.len) {
                    return fail(in, "a map key holds a NUL byte"), NULL;
                }
                skip_space(in);
                if (!expect_word(in, ":")) return NULL;
                courier_value *value = json_value(in);
                if (value == NULL) return NULL;
                map_insert(container, key->as.bytes.ptr, value);
            } else {
                courier_value *item = json_value(in);
                if (item == NULL) return NULL;
                array_append(container, item);
            }
            skip_space(in);
            if (in->at < in->end && *in->at == ',') {
                in->at++;
                continue;
            }
            if (!expect_word(in, is_map ? "}" : "]")) return NULL;
            in->depth--;
            return container;
        }
    }
    if (c == 't' || c == 'f') {
        if (!expect_word(in, c == 't' ? "true" : "false")) return NULL;
        courier_value *value = courier_value_new(in->arena, COURIER_BOOL);
        value->as.boolean = c == 't';
        return value;
    }
    if (c == 'n') {
        if (!expect_word(in, "null")) return NULL;
        return courier_value_new(in->arena, COURIER_NIL);
    }
    return json_number(in);
}

courier_value *courier_decode_json(courier_arena *arena, const uint8_t *bytes, size_t len,
                                   const char **error) {
    reader in = {bytes, bytes + len, arena, NULL, 0};
    courier_value *value = json_value(&in);
    if (value != NULL) {
        skip_space(&in);
        if (in.at != in.end) {
            value = NULL;
            fail(&in, "bytes follow the end of the body");
        }
    }
    if (value == NULL) *error = in.error;
    return value;
}

/* ---- encoding -------------------------------------------------------------------------- */

typedef struct writer {
    courier_arena *arena;
    uint8_t *bytes;
    size_t len, cap;
    const char *error;
} writer;

static void put(writer *out, const void *bytes, size_t len) {
    if (out->cap - out->len < len) {
        size_t cap = out->cap == 0 ? 256 : out->cap;
        while (cap - out->len < len) cap *= 2;
        uint8_t *moved = courier_arena_alloc(out->arena, cap);
        if (out->len > 0) memcpy(moved, out->bytes, out->len);
        out->bytes = moved;
        out->cap = cap;
    }
    memcpy(out->bytes + out->len, bytes, len);
    out->len += len;
}

static void put_byte(writer *out, uint8_t byte) {
    put(out, &byte, 1);
}

static void put_be(writer *out, uint8_t marker, uint64_t value, size_t width) {
    uint8_t bytes[9];
    bytes[0] = marker;
    for (size_t i = 0; i < width; i++) bytes[1 + i] = (uint8_t)(value >> (8 * (width - 1 - i)));
    put(out, bytes, 1 + width);
}

/* The smallest of the three header forms, as MessagePack asks. */
static void put_length(writer *out, uint64_t len, uint8_t fix, uint64_t fix_max, uint8_t m8,
                       uint8_t m16, uint8_t m32) {
    if (len <= fix_max) put_byte(out, (uint8_t)(fix | len));
    else if (m8 != 0 && len <= 0xff) put_be(out, m8, len, 1);
    else if (len <= 0xffff) put_be(out, m16, len, 2);
    else put_be(out, m32, len, 4);
}

static bool msgpack_write(writer *out, const courier_value *value, int depth) {
    bool container = value->kind == COURIER_ARRAY || value->kind == COURIER_MAP;
    if (container && depth >= MAX_DEPTH) {
        out->error = "the body nests too deep";
        return false;
    }
    switch (value->kind) {
    case COURIER_MISSING:
    case COURIER_NIL: put_byte(out, 0xc0); return true;
    case COURIER_BOOL: put_byte(out, value->as.boolean ? 0xc3 : 0xc2); return true;
    case COURIER_UINT: put_be(out, 0xcf, value->as.uinteger, 8); return true;
    case COURIER_INT: {
        int64_t n = value->as.integer;
        if (n >= 0) {
            if (n <= 0x7f) put_byte(out, (uint8_t)n);
            else if (n <= 0xff) put_be(out, 0xcc, (uint64_t)n, 1);
            else if (n <= 0xffff) put_be(out, 0xcd, (uint64_t)n, 2);
            else if (n <= 0xffffffff) put_be(out, 0xce, (uint64_t)n, 4);
            else put_be(out, 0xcf, (uint64_t)n, 8);
        } else {
            if (n >= -32) put_byte(out, (uint8_t)(int8_t)n);
            else if (n >= INT8_MIN) put_be(out, 0xd0, (uint64_t)n, 1);
            else if (n >= INT16_MIN) put_be(out, 0xd1, (uint64_t)n, 2);
            else if (n >= INT32_MIN) put_be(out, 0xd2, (uint64_t)n, 4);
            else put_be(out, 0xd3, (uint64_t)n, 8);
        }
        return true;
    }
    case COURIER_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &value->as.number, sizeof(bits));
        put_be(out, 0xcb, bits, 8);
        return true;
    }
    case COURIER_STR:
        put_length(out, value->as.bytes.len, 0xa0, 31, 0xd9, 0xda, 0xdb);
        put(out, value->as.bytes.ptr, value->as.bytes.len);
        return true;
    case COURIER_BIN:
        /* Binary data has no fixed-size form: a one-byte length at the least. */
        if (value->as.bytes.len <= 0xff) put_be(out, 0xc4, value->as.bytes.len, 1);
        else put_length(out, value->as.bytes.len, 0, 0, 0xc4, 0xc5, 0xc6);
        put(out, value->as.bytes.ptr, value->as.bytes.len);
        return true;
    case COURIER_ARRAY:
        put_length(out, value->as.array.len, 0x90, 15, 0, 0xdc, 0xdd);
        for (size_t i = 0; i < value->as.array.len; i++) {
            if (!msgpack_write(out, value->as.array.items[i], depth + 1)) return false;
        }
        return true;
    case COURIER_MAP:
        put_length(out, value->as.map.len, 0x80, 15, 0, 0xde, 0xdf);
        for (size_t i = 0; i < value->as.map.len; i++) {
            const char *key = value->as.map.items[i].key;
            size_t len = strlen(key);
            put_length(out, len, 0xa0, 31, 0xd9, 0xda, 0xdb);
            put(out, key, len);
            if (!msgpack_write(out, value->as.map.items[i].value, depth + 1)) return false;
        }
        return true;
    }
    out->error = "a value of an unknown kind";
    return false;
}

static void json_write_string(writer *out, const char *text, size_t len) {
    put_byte(out, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            put_byte(out, '\\');
            put_byte(out, c);
        } else if (c < 0x20) {
            char escape[7];
            snprintf(escape, sizeof(escape), "\\u%04x", c);
            put(out, escape, 6);
        } else {
            put_byte(out, c);
        }
    }
    put_byte(out, '"');
}

static bool json_write(writer *out, const courier_value *value, int depth) {
    char text[40];
    bool container = value->kind == COURIER_ARRAY || value->kind == COURIER_MAP;
    if (container && depth >= MAX_DEPTH) {
        out->error = "the body nests too deep";
        return false;
    }
    switch (value->kind) {
    case COURIER_MISSING:
    case COURIER_NIL: put(out, "null", 4); return true;
    case COURIER_BOOL:
        value->as.boolean ? put(out, "true", 4) : put(out, "false", 5);
        return true;
    case COURIER_INT:
        put(out, text, (size_t)snprintf(text, sizeof(text), "%lld", (long long)value->as.integer));
        return true;
    case COURIER_UINT:
        put(out, text,
            (size_t)snprintf(text, sizeof(text), "%llu", (unsigned long long)value->as.uinteger));
        return true;
    case COURIER_FLOAT: {
        double number = value->as.number;
        if (!isfinite(number)) {
            out->error = "JSON has no NaN or infinity";
            return false;
        }
        /* The shortest of 15 or 17 digits that reads back the same number, and always with a
         * point or an exponent, so that it reads back as a float. */
        int len = snprintf(text, sizeof(text), "%.15g", number);
        if (strtod(text, NULL) != number) len = snprintf(text, sizeof(text), "%.17g", number);
        if (strpbrk(text, ".eE") == NULL) {
            len += snprintf(text + len, sizeof(text) - (size_t)len, ".0");
        }
        put(out, text, (size_t)len);
        return true;
    }
    case COURIER_STR: json_write_string(out, value->as.bytes.ptr, value->as.bytes.len); return true;
    case COURIER_BIN: out->error = "binary data has no JSON form"; return false;
    case COURIER_ARRAY:
        put_byte(out, '[');
        for (size_t i = 0; i < value->as.array.len; i++) {
            if (i > 0) put_byte(out, ',');
            if (!json_write(out, value->as.array.items[i], depth + 1)) return false;
        }
        put_byte(out, ']');
        return true;
    case COURIER_MAP:
        put_byte(out, '{');
        for (size_t i = 0; i < value->as.map.len; i++) {
            if (i > 0) put_byte(out, ',');
            const char *key = value->as.map.items[i].key;
            json_write_string(out, key, strlen(key));
            put_byte(out, ':');
            if (!json_write(out, value->as.map.items[i].value, depth + 1)) return false;
        }
        put_byte(out, '}');
        return true;
    }
    out->error = "a value of an unknown kind";
    return false;
}

/* Runs one of the writers over `value`, handing out what it wrote or why it could not. */
static bool encode(bool (*write)(writer *, const courier_value *, int), courier_arena *arena,
                   const courier_value *value, uint8_t **bytes, size_t *len,
                   const char **error) {
    writer out = {arena, NULL, 0, 0, NULL};
    if (!write(&out, value, 0)) {
        *error = out.error;
        return false;
    }
    *bytes = out.bytes;
    *len = out.len;
    return true;
}

bool courier_encode_msgpack(courier_arena *arena, const courier_value *value, uint8_t **bytes,
                            size_t *len, const char **error) {
    return encode(msgpack_write, arena, value, bytes, len, error);
}

bool courier_encode_json(courier_arena *arena, const courier_value *value, uint8_t **bytes,
                         size_t *len, const char **error) {
    return encode(json_write, arena, value, bytes, len, error);
}
