/* Unit tests of the C SDK's value tree and codecs, built for the machine that runs them (with
 * the address and undefined-behaviour sanitizers) by `cargo xtask test`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int failures;

#define CHECK(condition)                                                                       \
    do {                                                                                       \
        if (!(condition)) {                                                                    \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__,    \
                    #condition);                                                               \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

#define CHECK_STR(actual, expected)                                                            \
    do {                                                                                       \
        const char *actual_ = (actual);                                                        \
        if (actual_ == NULL || strcmp(actual_, (expected)) != 0) {                             \
            fprintf(stderr, "%s:%d: %s: got \"%s\", expected \"%s\"\n", __FILE__, __LINE__,    \
                    __func__, actual_ ? actual_ : "(null)", (expected));                       \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

static courier_value *msgpack(courier_ctx *ctx, const char *hex) {
    size_t len = strlen(hex) / 2;
    uint8_t *bytes = courier_arena_alloc(&ctx->arena, len + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned byte;
        sscanf(hex + 2 * i, "%2x", &byte);
        bytes[i] = (uint8_t)byte;
    }
    const char *error = NULL;
    courier_value *value = courier_decode_msgpack(&ctx->arena, bytes, len, &error);
    if (value == NULL) ctx->decode_error = error;
    return value;
}

static courier_value *json(courier_ctx *ctx, const char *text) {
    const char *error = NULL;
    courier_value *value =
        courier_decode_json(&ctx->arena, (const uint8_t *)text, strlen(text), &error);
    if (value == NULL) ctx->decode_error = error;
    return value;
}

static const char *hex_of(courier_ctx *ctx, const courier_value *value) {
    uint8_t *bytes;
    size_t len;
    const char *error;
    if (!courier_encode_msgpack(&ctx->arena, value, &bytes, &len, &error)) return error;
    char *hex = courier_arena_alloc(&ctx->arena, 2 * len + 1);
    for (size_t i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
    hex[2 * len] = '\0';
    return hex;
}

static const char *json_of(courier_ctx *ctx, const courier_value *value) {
    uint8_t *bytes;
    size_t len;
    const char *error;
    if (!courier_encode_json(&ctx->arena, value, &bytes, &len, &error)) return error;
    return courier_arena_strndup(&ctx->arena, (const char *)bytes, len);
}

/* What Python's msgpack wrote for {"a": 1, "b": [True, None, -5, 300, 1.5, "x"], "c": {}}. */
static void decodes_what_another_writer_wrote(void) {
    courier_ctx ctx = {0};
    courier_value *body = msgpack(&ctx, "83a16101a16296c3c0fbcd012ccb3ff8000000000000a178a16380");
    CHECK(body != NULL);
    if (body == NULL) return;
    CHECK(courier_get_int(&ctx, body, "a") == 1);
    const courier_value *b = courier_get_array(&ctx, body, "b");
    CHECK(courier_len(b) == 6);
    CHECK(courier_as_bool(&ctx, courier_item(b, 0)) == true);
    CHECK(courier_item(b, 1)->kind == COURIER_NIL);
    CHECK(courier_as_int(&ctx, courier_item(b, 2)) == -5);
    CHECK(courier_as_int(&ctx, courier_item(b, 3)) == 300);
    CHECK(courier_as_float(&ctx, courier_item(b, 4)) == 1.5);
    CHECK_STR(courier_as_str(&ctx, courier_item(b, 5)), "x");
    CHECK(courier_item(b, 6) == NULL);
    CHECK(courier_len(courier_get_map(&ctx, body, "c")) == 0);
    CHECK(courier_decoded(&ctx));
    courier_arena_free(&ctx.arena);
}

/* Each integer in the smallest form MessagePack has for it, and back. */
static void integers_take_their_smallest_form_and_read_back(void) {
    courier_ctx ctx = {0};
    struct {
        int64_t value;
        const char *hex;
    } cases[] = {
        {0, "00"},
        {127, "7f"},
        {128, "cc80"},
        {65535, "cdffff"},
        {65536, "ce00010000"},
        {4294967296, "cf0000000100000000"},
        {-1, "ff"},
        {-32, "e0"},
        {-33, "d0df"},
        {-129, "d1ff7f"},
        {-32769, "d2ffff7fff"},
        {INT64_MIN, "d38000000000000000"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_STR(hex_of(&ctx, courier_new_int(&ctx, cases[i].value)), cases[i].hex);
        courier_value *back = msgpack(&ctx, cases[i].hex);
        CHECK(back != NULL && back->kind == COURIER_INT && back->as.integer == cases[i].value);
    }
    courier_value *huge = msgpack(&ctx, "cfffffffffffffffff");
    CHECK(huge != NULL && huge->kind == COURIER_UINT && huge->as.uinteger == UINT64_MAX);
    CHECK_STR(hex_of(&ctx, huge), "cfffffffffffffffff");
    courier_as_int(&ctx, huge);
    CHECK_STR(ctx.decode_error, "the body: expected an integer, found an integer above 2^63-1");
    courier_arena_free(&ctx.arena);
}

static void a_built_body_round_trips_through_both_encodings(void) {
    courier_ctx ctx = {0};
    courier_value *body = courier_new_map(&ctx);
    courier_put(body, "text", courier_new_str(&ctx, "h\xc3\xa9 \"quoted\"\n"));
    courier_put(body, "ratio", courier_new_float(&ctx, 0.1));
    courier_put(body, "whole", courier_new_float(&ctx, 2.0));
    courier_put(body, "none", courier_new_str(&ctx, NULL));
    courier_value *tags = courier_new_array(&ctx);
    for (int i = 0; i < 20; i++) courier_push(tags, courier_new_int(&ctx, i * 1000));
    courier_put(body, "tags", tags);
    char long_text[300];
    memset(long_text, 'x', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    courier_put(body, "long", courier_new_str(&ctx, long_text));

    CHECK_STR(json_of(&ctx, courier_put(courier_new_map(&ctx), "f", courier_new_float(&ctx, 2.0))),
              "{\"f\":2.0}");
    for (int encoding = 0; encoding < 2; encoding++) {
        uint8_t *bytes;
        size_t len;
        const char *error = NULL;
        courier_value *back;
        if (encoding == 0) {
            CHECK(courier_encode_msgpack(&ctx.arena, body, &bytes, &len, &error));
            back = courier_decode_msgpack(&ctx.arena, bytes, len, &error);
        } else {
            CHECK(courier_encode_json(&ctx.arena, body, &bytes, &len, &error));
            back = courier_decode_json(&ctx.arena, bytes, len, &error);
        }
        CHECK(back != NULL);
        if (back == NULL) continue;
        CHECK_STR(courier_get_str(&ctx, back, "text"), "h\xc3\xa9 \"quoted\"\n");
        CHECK(courier_field(&ctx, back, "ratio")->kind == COURIER_FLOAT);
        CHECK(courier_get_float(&ctx, back, "ratio") == 0.1);
        CHECK(courier_field(&ctx, back, "whole")->kind == COURIER_FLOAT);
        CHECK(courier_get_opt_str(&ctx, back, "none") == NULL);
        CHECK(courier_get_opt_str(&ctx, back, "absent") == NULL);
        const courier_value *back_tags = courier_get_array(&ctx, back, "tags");
        CHECK(courier_len(back_tags) == 20);
        CHECK(courier_as_int(&ctx, courier_item(back_tags, 19)) == 19000);
        CHECK_STR(courier_get_str(&ctx, back, "long"), long_text);
        CHECK(courier_decoded(&ctx));
    }
    courier_arena_free(&ctx.arena);
}

static void json_reads_escapes_numbers_and_nesting(void) {
    courier_ctx ctx = {0};
    courier_value *body = json(&ctx, " {\"s\": \"a\\u00e9\\ud83d\\ude00\\t\\\"\", \"n\": -12,"
                                     " \"f\": 1e3, \"big\": 18446744073709551615,"
                                     " \"list\": [ {\"sku\": \"A\"}, {\"sku\": 7} ], \"t\": true,"
                                     " \"z\": null } ");
    CHECK(body != NULL);
    if (body == NULL) return;
    CHECK_STR(courier_get_str(&ctx, body, "s"), "a\xc3\xa9\xf0\x9f\x98\x80\t\"");
    CHECK(courier_get_int(&ctx, body, "n") == -12);
    CHECK(courier_get_float(&ctx, body, "f") == 1000.0);
    CHECK(courier_field(&ctx, body, "big")->kind == COURIER_UINT);
    CHECK(courier_get_bool(&ctx, body, "t"));
    CHECK(courier_field(&ctx, body, "z")->kind == COURIER_NIL);
    CHECK(courier_decoded(&ctx));
    const courier_value *list = courier_get_array(&ctx, body, "list");
    CHECK_STR(courier_get_str(&ctx, courier_item(list, 0), "sku"), "A");
    courier_get_str(&ctx, courier_item(list, 1), "sku");
    CHECK_STR(ctx.decode_error, "field `list[1].sku`: expected a string, found an integer");
    courier_arena_free(&ctx.arena);
}

static void a_read_that_does_not_fit_names_the_field(void) {
    courier_ctx ctx = {0};
    courier_value *body = json(&ctx, "{\"text\": \"x\", \"nested\": {\"flag\": \"yes\"}}");
    CHECK(body != NULL);
    if (body == NULL) return;
    courier_get_int(&ctx, body, "count");
    CHECK_STR(ctx.decode_error, "missing field `count`");

    ctx.decode_error = NULL;
    courier_get_bool(&ctx, courier_get_map(&ctx, body, "nested"), "flag");
    CHECK_STR(ctx.decode_error, "field `nested.flag`: expected a boolean, found a string");

    /* Only the first failure is kept, and reading on past it is harmless. */
    const courier_value *none = courier_get_map(&ctx, body, "text");
    CHECK(courier_len(none) == 0);
    CHECK_STR(courier_get_str(&ctx, none, "deeper"), "");
    CHECK_STR(ctx.decode_error, "field `nested.flag`: expected a boolean, found a string");

    ctx.decode_error = NULL;
    courier_get_str(&ctx, courier_new_array(&ctx), "x");
    CHECK_STR(ctx.decode_error, "the body: expected a map, found an array");
    courier_arena_free(&ctx.arena);
}

static void malformed_bodies_are_refused_with_a_reason(void) {
    courier_ctx ctx = {0};
    struct {
        const char *hex;
        const char *reason;
    } bad[] = {
        {"82a161", "the body ends too soon"},
        {"dd7fffffff", "the body ends too soon"},
        {"0101", "bytes follow the end of the body"},
        {"c1", "the body holds a byte that is no MessagePack marker"},
        {"d40100", "MessagePack extension types are not supported"},
        {"810101", "a map key is not a string"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ctx.decode_error = NULL;
        CHECK(msgpack(&ctx, bad[i].hex) == NULL);
        CHECK_STR(ctx.decode_error, bad[i].reason);
    }
    char deep[2 * 100 + 1];
    for (int i = 0; i < 100; i++) memcpy(deep + 2 * i, "91", 2);
    deep[200] = '\0';
    ctx.decode_error = NULL;
    CHECK(msgpack(&ctx, deep) == NULL);
    CHECK_STR(ctx.decode_error, "the body nests too deep");

    const char *bad_json[] = {"{\"a\": }", "[1, 2", "{\"a\" 1}", "\"\\ud800\"", "tru", "{} x",
                              "\"a\nb\""};
    for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
        ctx.decode_error = NULL;
        CHECK(json(&ctx, bad_json[i]) == NULL);
        CHECK(ctx.decode_error != NULL);
    }
    CHECK_STR(json_of(&ctx, courier_new_float(&ctx, NAN)), "JSON has no NaN or infinity");
    courier_arena_free(&ctx.arena);
}

static const char *repeat(courier_ctx *ctx, const char *unit, size_t times) {
    size_t len = strlen(unit);
    char *text = courier_arena_alloc(&ctx->arena, len * times + 1);
    for (size_t i = 0; i < times; i++) memcpy(text + i * len, unit, len);
    text[len * times] = '\0';
    return text;
}

/* Each header form at the edge where the next one takes over. */
static void lengths_take_their_smallest_form_at_each_edge(void) {
    courier_ctx ctx = {0};
    struct {
        size_t len;
        const char *head;
    } strings[] = {{0, "a0"}, {31, "bf"}, {32, "d920"}, {255, "d9ff"}, {256, "da0100"},
                   {65536, "db00010000"}};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        const char *hex = hex_of(&ctx, courier_new_str(&ctx, repeat(&ctx, "x", strings[i].len)));
        CHECK(strncmp(hex, strings[i].head, strlen(strings[i].head)) == 0);
        CHECK(strlen(hex) == strlen(strings[i].head) + 2 * strings[i].len);
    }
    struct {
        size_t len;
        const char *array, *map;
    } containers[] = {{0, "90", "80"}, {15, "9f", "8f"}, {16, "dc0010", "de0010"}};
    for (size_t i = 0; i < sizeof(containers) / sizeof(containers[0]); i++) {
        courier_value *array = courier_new_array(&ctx);
        courier_value *map = courier_new_map(&ctx);
        for (size_t n = 0; n < containers[i].len; n++) {
            courier_push(array, courier_new_nil(&ctx));
            courier_put(map, courier_format(&ctx, "k%zu", n), courier_new_nil(&ctx));
        }
        const char *array_hex = hex_of(&ctx, array), *map_hex = hex_of(&ctx, map);
        CHECK(strncmp(array_hex, containers[i].array, strlen(containers[i].array)) == 0);
        CHECK(strncmp(map_hex, containers[i].map, strlen(containers[i].map)) == 0);
        courier_value *back = msgpack(&ctx, map_hex);
        CHECK(back != NULL && courier_len(back) == containers[i].len);
    }
    courier_value *empty_bin = msgpack(&ctx, "c400");
    CHECK(empty_bin != NULL && empty_bin->kind == COURIER_BIN && courier_len(empty_bin) == 0);
    CHECK_STR(hex_of(&ctx, empty_bin), "c400");
    courier_arena_free(&ctx.arena);
}

/* Every prefix of a good body is refused cleanly (run under the sanitizers). */
static void every_cut_short_body_is_refused(void) {
    courier_ctx ctx = {0};
    const char *hex = "83a16101a16296c3c0fbcd012ccb3ff8000000000000a178a16380";
    size_t len = strlen(hex) / 2;
    for (size_t cut = 0; cut < len; cut++) {
        char *prefix = courier_arena_strndup(&ctx.arena, hex, 2 * cut);
        ctx.decode_error = NULL;
        CHECK(msgpack(&ctx, prefix) == NULL);
        CHECK_STR(ctx.decode_error, "the body ends too soon");
    }
    const char *text = "{\"a\": [1, -2.5e3, \"x\\u00e9\", true, null], \"b\": {}}";
    for (size_t cut = 0; cut < strlen(text); cut++) {
        ctx.decode_error = NULL;
        CHECK(json(&ctx, courier_arena_strndup(&ctx.arena, text, cut)) == NULL);
        CHECK(ctx.decode_error != NULL);
    }
    CHECK(json(&ctx, text) != NULL);
    /* A string cut after an escape's backslash. */
    ctx.decode_error = NULL;
    CHECK(json(&ctx, "\"ab\\") == NULL);
    CHECK_STR(ctx.decode_error, "a JSON string does not end");
    courier_arena_free(&ctx.arena);
}

static void text_must_be_utf8_and_keys_whole(void) {
    courier_ctx ctx = {0};
    const char *bad[][2] = {
        {"a2c328", "a string is not valid UTF-8"},
        {"a3eda080", "a string is not valid UTF-8"},
        {"a2c0af", "a string is not valid UTF-8"},
        {"81a361006201", "a map key holds a NUL byte"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ctx.decode_error = NULL;
        CHECK(msgpack(&ctx, bad[i][0]) == NULL);
        CHECK_STR(ctx.decode_error, bad[i][1]);
    }
    ctx.decode_error = NULL;
    CHECK(json(&ctx, "\"\xff\"") == NULL);
    CHECK_STR(ctx.decode_error, "a string is not valid UTF-8");
    ctx.decode_error = NULL;
    CHECK(json(&ctx, "{\"a\\u0000b\": 1}") == NULL);
    CHECK_STR(ctx.decode_error, "a map key holds a NUL byte");
    /* A NUL inside a value is kept, and counted. */
    courier_value *with_nul = json(&ctx, "\"a\\u0000b\"");
    CHECK(with_nul != NULL && courier_len(with_nul) == 3);
    courier_arena_free(&ctx.arena);
}

static void json_numbers_follow_the_grammar(void) {
    courier_ctx ctx = {0};
    const char *bad[] = {"01", ".5", "+1", "1.", "1.e5", "-", "1e", "1e400", "--1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ctx.decode_error = NULL;
        CHECK(json(&ctx, bad[i]) == NULL);
        CHECK(ctx.decode_error != NULL);
    }
    const char *good[] = {"0", "-0", "10", "-1.25", "1e5", "1E-2", "0.5e+3"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ctx.decode_error = NULL;
        CHECK(json(&ctx, good[i]) != NULL);
    }
    courier_arena_free(&ctx.arena);
}

/* Containers nest 64 deep, in both directions alike; scalars do not count. */
static void nesting_stops_at_the_same_depth_both_ways(void) {
    courier_ctx ctx = {0};
    for (int depth = 63; depth <= 65; depth++) {
        const char *hex = courier_format(&ctx, "%s01", repeat(&ctx, "91", (size_t)depth));
        ctx.decode_error = NULL;
        courier_value *value = msgpack(&ctx, hex);
        CHECK((value != NULL) == (depth <= 64));
        courier_value *built = courier_new_int(&ctx, 1);
        for (int i = 0; i < depth; i++) built = courier_push(courier_new_array(&ctx), built);
        uint8_t *bytes;
        size_t len;
        const char *error;
        CHECK(courier_encode_msgpack(&ctx.arena, built, &bytes, &len, &error) == (depth <= 64));
        CHECK(courier_encode_json(&ctx.arena, built, &bytes, &len, &error) == (depth <= 64));
    }
    courier_arena_free(&ctx.arena);
}

static void optional_reads_and_replaced_fields(void) {
    courier_ctx ctx = {0};
    courier_value *body = json(&ctx, "{\"n\": 3, \"z\": null, \"list\": []}");
    CHECK(body != NULL);
    if (body == NULL) return;
    CHECK(courier_has(body, "n"));
    CHECK(!courier_has(body, "z"));
    CHECK(!courier_has(body, "absent"));
    int64_t n = -1;
    CHECK(courier_get_opt_int(&ctx, body, "n", &n) && n == 3);
    CHECK(!courier_get_opt_int(&ctx, body, "z", &n) && n == 3);
    CHECK(!courier_get_opt_int(&ctx, body, "absent", &n));
    CHECK(courier_decoded(&ctx));

    const courier_value *list = courier_get_array(&ctx, body, "list");
    CHECK_STR(courier_get_str(&ctx, courier_item(list, 0), "sku"), "");
    CHECK_STR(ctx.decode_error, "an item past the end of an array");

    courier_value *map = courier_new_map(&ctx);
    courier_put(map, "k", courier_new_int(&ctx, 1));
    courier_put(map, "k", courier_new_int(&ctx, 2));
    CHECK_STR(hex_of(&ctx, map), "81a16b02");
    courier_arena_free(&ctx.arena);
}

int main(void) {
    decodes_what_another_writer_wrote();
    integers_take_their_smallest_form_and_read_back();
    a_built_body_round_trips_through_both_encodings();
    json_reads_escapes_numbers_and_nesting();
    a_read_that_does_not_fit_names_the_field();
    malformed_bodies_are_refused_with_a_reason();
    lengths_take_their_smallest_form_at_each_edge();
    every_cut_short_body_is_refused();
    text_must_be_utf8_and_keys_whole();
    json_numbers_follow_the_grammar();
    nesting_stops_at_the_same_depth_both_ways();
    optional_reads_and_replaced_fields();
    if (failures > 0) {
        fprintf(stderr, "C SDK: %d check(s) failed\n", failures);
        return 1;
    }
    printf("C SDK: all checks passed\n");
    return 0;
}
