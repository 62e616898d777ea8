/* Text/JSON printer: see out.h. */
#include "common/out.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

void out_init(struct out *o, FILE *f, bool json)
{
	memset(o, 0, sizeof(*o));
	o->f = f;
	o->json = json;
	o->first[0] = true;
	o->kind[0] = 'o';
}

/* A byte that is not UTF-8 (a file name a guest chose, say) becomes U+FFFD:
 * JSON text is UTF-8, and one such byte would make the whole line
 * unreadable to a strict parser. */
static void json_string(FILE *f, const char *s)
{
	const char *end = s + strlen(s);

	fputc('"', f);
	while (s < end) {
		size_t bad, ok = utf8_text(s, (size_t)(end - s), &bad) ? (size_t)(end - s) : bad;

		for (const char *stop = s + ok; s < stop; s++) {
			unsigned char c = (unsigned char)*s;

			if (c == '"' || c == '\\')
				fprintf(f, "\\%c", c);
			else if (c == '\n')
				fputs("\\n", f);
			else if (c < 0x20)
				fprintf(f, "\\u%04x", c);
			else
				fputc(c, f);
		}
		if (s < end) {
			fputs("\\ufffd", f);
			s++;
		}
	}
	fputc('"', f);
}

static char kind(const struct out *o)
{
	return o->kind[o->depth];
}

/* Writes what precedes a member: separator, indentation and key. */
static void member(struct out *o, const char *key)
{
	bool first = o->first[o->depth];

	o->first[o->depth] = false;
	if (o->json) {
		if (!first)
			fputc(',', o->f);
		if (key) {
			json_string(o->f, key);
			fputc(':', o->f);
		}
		return;
	}
	switch (kind(o)) {
	case 'a':
		if (!first)
			fputc(' ', o->f);
		break;
	case 'l':
		fprintf(o->f, "%s%s=", first ? "" : " ", key ? key : "");
		break;
	default:
		if (key)
			fprintf(o->f, "%*s%s: ", 2 * (o->depth - 1 > 0 ? o->depth - 1 : 0), "", key);
	}
}

/* Text: the end of a scalar member. */
static void end_scalar(struct out *o)
{
	if (!o->json && kind(o) == 'o')
		fputc('\n', o->f);
}

static void push(struct out *o, char k)
{
	if (o->depth + 1 >= OUT_MAX_DEPTH)
		abort();
	o->depth++;
	o->first[o->depth] = true;
	o->kind[o->depth] = k;
}

void out_obj_start(struct out *o, const char *key)
{
	bool in_array = kind(o) == 'a';

	if (o->depth == 0 && !key && !o->json) {
		push(o, 'o');
		return;
	}
	if (!o->json && in_array) {
		/* one line per object, under its array's key */
		fprintf(o->f, "%s%*s", o->first[o->depth] ? "\n" : "", 2 * o->depth, "");
		o->first[o->depth] = false;
		push(o, 'l');
		return;
	}
	member(o, key);
	if (o->json)
		fputc('{', o->f);
	else if (o->depth)
		fputc('\n', o->f);
	push(o, 'o');
}

void out_obj_end(struct out *o)
{
	char k = kind(o);

	o->depth--;
	if (o->json)
		fputc('}', o->f);
	else if (k == 'l')
		fputc('\n', o->f);
}

void out_arr_start(struct out *o, const char *key)
{
	if (o->depth == 0 && !key && !o->json) {
		push(o, 'a');
		o->first[o->depth] = false; /* no leading newline at top level */
		return;
	}
	member(o, key);
	if (o->json)
		fputc('[', o->f);
	push(o, 'a');
}

void out_arr_end(struct out *o)
{
	bool empty = o->first[o->depth];

	o->depth--;
	if (o->json)
		fputc(']', o->f);
	else if (empty)
		fputs(kind(o) == 'l' ? "-" : "-\n", o->f);
	else if (kind(o) != 'l' && o->depth)
		fputc('\n', o->f);
}

static void put_text_value(struct out *o, const char *val)
{
	if (kind(o) == 'l' && (strchr(val, ' ') || !*val))
		fprintf(o->f, "\"%s\"", val);
	else
		fputs(val, o->f);
}

void out_str(struct out *o, const char *key, const char *val)
{
	member(o, key);
	if (o->json)
		json_string(o->f, val);
	else
		put_text_value(o, val);
	end_scalar(o);
}

void out_strf(struct out *o, const char *key, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	out_str(o, key, s);
	free(s);
}

void out_u64(struct out *o, const char *key, uint64_t v)
{
	member(o, key);
	fprintf(o->f, "%llu", (unsigned long long)v);
	end_scalar(o);
}

void out_bool(struct out *o, const char *key, bool v)
{
	member(o, key);
	fputs(o->json ? (v ? "true" : "false") : (v ? "yes" : "no"), o->f);
	end_scalar(o);
}

void out_finish(struct out *o)
{
	if (o->json)
		fputc('\n', o->f);
	fflush(o->f);
}
