/* Unit test of greeting.c, built for this machine by test.sh. */
#include <stdio.h>
#include <string.h>

#include "greeting.h"

static int failures;

static void expect(const char *name, size_t size, const char *wanted) {
    char out[64];
    greet(name, out, size);
    if (strcmp(out, wanted) != 0) {
        fprintf(stderr, "greet(\"%s\", %zu): got \"%s\", wanted \"%s\"\n", name, size, out, wanted);
        failures++;
    }
}

int main(void) {
    expect("Ada", 64, "Hello, Ada!");
    expect("Ada", 6, "Hello");
    if (failures == 0) puts("greeting: ok");
    return failures == 0 ? 0 : 1;
}
