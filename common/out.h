/* One print path for text and JSON (after iproute2's json_print): callers
 * describe objects once; the mode decides how they look, so the two cannot
 * drift.  Text mode prints "key: value" lines, indented by nesting; an array
 * of scalars prints on one line, an object inside an array as one line of
 * key=value pairs. */
#ifndef DFW_OUT_H
#define DFW_OUT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define OUT_MAX_DEPTH 16

struct out {
	FILE *f;
	bool json;
	int depth;
	bool first[OUT_MAX_DEPTH];
	char kind[OUT_MAX_DEPTH]; /* 'o' object, 'a' array, 'l' one-line object */
};

void out_init(struct out *o, FILE *f, bool json);
/* key is NULL inside arrays and for the top-level object. */
void out_obj_start(struct out *o, const char *key);
void out_obj_end(struct out *o);
void out_arr_start(struct out *o, const char *key);
void out_arr_end(struct out *o);
void out_str(struct out *o, const char *key, const char *val);
void out_strf(struct out *o, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void out_u64(struct out *o, const char *key, uint64_t v);
void out_bool(struct out *o, const char *key, bool v);
/* Ends the document (JSON: newline). */
void out_finish(struct out *o);

#endif
