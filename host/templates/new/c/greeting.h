/* What the handler of {{name}} decides, kept apart from the bus so that a unit test can
 * check it. */
#ifndef GREETING_H
#define GREETING_H

#include <stddef.h>

/* Writes the greeting for `name` into `out` (`size` bytes, cut short if it does not fit). */
void greet(const char *name, char *out, size_t size);

#endif
