/*
 * NAME
 *	smtp_data - DATA and BDAT content decoder: dot-unstuffing, end of
 *	data, bare CR and LF (SMTP smuggling)
 * SUMMARY
 *	See proto/smtp_data.h for the interface.
 * DESCRIPTION
 *	A state machine over bytes, with a fast path: inside a line the only
 *	bytes that matter are CR and LF, found eight at a time (find_eol), and
 *	everything before them extends the current span.  The states say where
 *	we are relative to a line start:
 *	  LS      at a line start (ls_crlf: reached by CR LF or at the start,
 *	          else by a bare CR or LF, which in REJECT mode is a line start
 *	          only for spotting smuggling);
 *	  TEXT    inside a line;
 *	  CR      after a CR that may begin CR LF (the CR is already out);
 *	  DOT     after a dot at a line start;
 *	  DOT_CR  after that dot and a CR.
 *	A dot at a line start is "pending" (not emitted) when it is subject
 *	to unstuffing: in DATA, at a CR LF line start, or at any line start in
 *	NORMALISE mode.  A pending dot is either the end of data (with the
 *	CR LF after it) or dropped, or in NORMALISE mode a lone-dot line put
 *	out again from constant memory; so the decoder never has to keep
 *	input bytes across calls, only this state.
 *
 *	Each step emits either input bytes or constant bytes, never both, and
 *	consumes one byte, or (inside lines) a run of content bytes, so a byte
 *	limit can stop it cleanly: input bytes are cut between bytes, constant
 *	ones may be cut inside (the rest is "owed" and goes out first next
 *	time).  A step needs at most two
 *	new spans (the span before it, one constant span), and the loop stops
 *	while three are free, so the last span always fits.
 *
 *	Every decision depends on the bytes alone, never on where a chunk or a
 *	byte limit ended, which is what makes any chunking give the same
 *	output.
 * DIAGNOSTICS
 *	See the header.
 */
#include <string.h>

#include "core/log.h"
#include "proto/smtp_data.h"

/* The only bytes ever emitted that are not in the input. */
static const uint8_t constant[] = ".\r\n";
enum { K_DOT_CRLF = 0, K_CRLF = 1, K_CR = 1, K_LF = 2 };

enum { ST_LS, ST_TEXT, ST_CR, ST_DOT, ST_DOT_CR, ST_DONE };

static const struct rm_smtp_status smuggling = {
	550, "5.6.0", "Message refused: bare CR or LF next to a lone dot (possible SMTP smuggling)"
};

void rm_smtp_data_opts_default(struct rm_smtp_data_opts *o)
{
	o->mode = RM_SMTP_DATA_REJECT;
	o->line_bytes_max = RM_SMTP_DATA_LINE_BYTES_MAX;
}

void rm_smtp_data_init(struct rm_smtp_data *d, const struct rm_smtp_data_opts *o)
{
	RM_ASSERT(o->mode == RM_SMTP_DATA_REJECT || o->mode == RM_SMTP_DATA_NORMALISE);
	memset(d, 0, sizeof(*d));
	d->mode = o->mode;
	d->line_bytes_max = o->line_bytes_max;
	d->state = ST_LS;
	d->ls_crlf = true;	/* the DATA line's CR LF */
}

void rm_smtp_data_init_bdat(struct rm_smtp_data *d, const struct rm_smtp_data_opts *o, bool binary)
{
	rm_smtp_data_init(d, o);
	d->bdat = true;
	d->binary = binary;
	if (binary)
		d->line_bytes_max = 0;
}

void rm_smtp_data_bdat_chunk(struct rm_smtp_data *d, uint64_t bytes, bool last)
{
	RM_ASSERT(d->bdat && !d->last && d->chunk_left == 0);
	d->chunk_left = bytes;
	d->last = last;
}

bool rm_smtp_data_done(const struct rm_smtp_data *d)
{
	return d->done;
}

bool rm_smtp_data_chunk_done(const struct rm_smtp_data *d)
{
	return d->bdat && d->chunk_left == 0 && d->owed_len == 0;
}

const struct rm_smtp_status *rm_smtp_data_status(const struct rm_smtp_data *d)
{
	return d->mode == RM_SMTP_DATA_REJECT && d->smuggle ? &smuggling : NULL;
}

bool rm_smtp_data_span_static(const struct rm_smtp_data_span *s)
{
	return s->ptr >= constant && s->len <= sizeof(constant) - 1 &&
	       s->ptr + s->len <= constant + sizeof(constant) - 1;
}

/*
 * First CR or LF in [p, end), or end.  Eight bytes at a time: a byte of
 * v ^ 0x0d.. (or 0x0a..) is zero where v has a CR (LF); (x - 0x01..) & ~x
 * & 0x80.. flags the lowest zero byte exactly (higher flags may be false,
 * but only the lowest is used).
 */
static const uint8_t *find_eol(const uint8_t *p, const uint8_t *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;

	while (end - p >= 8) {
		uint64_t v, a, b, m;

		memcpy(&v, p, 8);
		a = v ^ (ones * '\r');
		b = v ^ (ones * '\n');
		m = (((a - ones) & ~a) | ((b - ones) & ~b)) & highs;
		if (m != 0)
			return p + (__builtin_ctzll(m) >> 3);
		p += 8;
	}
#endif
	while (p < end && *p != '\r' && *p != '\n')
		p++;
	return p;
}

/* One call's working state. */
struct feed {
	struct rm_smtp_data *d;
	struct rm_smtp_data_out *out;
	const uint8_t *p, *end;
	const uint8_t *run;	/* input bytes [run, p) are content not yet in a span */
	size_t left;		/* output bytes this call may still give */
	bool stop;		/* constant bytes are owed: no more this call */
};

static void add_span(struct feed *f, const uint8_t *ptr, size_t len)
{
	RM_ASSERT(f->out->span_count < f->out->span_max);
	f->out->span[f->out->span_count++] = (struct rm_smtp_data_span){ ptr, len };
}

static void flush(struct feed *f)
{
	if (f->run != NULL && f->p > f->run)
		add_span(f, f->run, (size_t)(f->p - f->run));
	f->run = NULL;
}

static void line_add(struct rm_smtp_data *d, size_t n)
{
	d->line_bytes += n;
	if (d->line_bytes_max != 0 && d->line_bytes > d->line_bytes_max)
		d->long_line = true;
}

/* The next n input bytes are content. */
static void emit_in(struct feed *f, size_t n)
{
	RM_ASSERT(n <= f->left && n <= (size_t)(f->end - f->p));
	if (f->run == NULL)
		f->run = f->p;
	f->p += n;
	f->left -= n;
	f->out->bytes += n;
	f->d->content_bytes += n;
}

/* The next n input bytes are content of the current line. */
static void content_in(struct feed *f, size_t n)
{
	emit_in(f, n);
	line_add(f->d, n);
}

/* The next input byte is consumed without being content. */
static void drop_in(struct feed *f)
{
	flush(f);
	f->p++;
}

/* Constant bytes [off, off + n): as many as the limit allows, the rest owed. */
static void emit_const(struct feed *f, unsigned off, unsigned n)
{
	size_t k = n <= f->left ? n : f->left;

	flush(f);
	if (k > 0) {
		add_span(f, constant + off, k);
		f->left -= k;
		f->out->bytes += k;
		f->d->content_bytes += k;
	}
	if (k < n) {
		f->d->owed_off = (uint8_t)(off + k);
		f->d->owed_len = (uint8_t)(n - k);
		f->stop = true;
	}
}

/* Constant content of the current line (counted whole, even if part is owed). */
static void put_const(struct feed *f, unsigned off, unsigned n)
{
	line_add(f->d, n);
	emit_const(f, off, n);
}

static void line_start(struct rm_smtp_data *d, bool crlf)
{
	d->state = ST_LS;
	d->ls_crlf = crlf;
}

/* A line ends: its length was checked as its bytes came. */
static void line_end(struct rm_smtp_data *d, bool crlf)
{
	d->line_bytes = 0;
	line_start(d, crlf);
}

static bool dot_pending(const struct rm_smtp_data *d)
{
	return !d->bdat && (d->ls_crlf || d->mode == RM_SMTP_DATA_NORMALISE);
}

/*
 * Inside a line: the bytes up to CR or LF, then that CR or bare LF.  The
 * common case, CR LF and then a line that does not start with a dot, stays
 * in this loop: those bytes are all content of one span, so nothing but
 * the line count changes between lines.
 */
static void step_text(struct feed *f)
{
	struct rm_smtp_data *d = f->d;

	d->state = ST_TEXT;
	for (;;) {
		size_t room = (size_t)(f->end - f->p) < f->left ? (size_t)(f->end - f->p) : f->left;
		const uint8_t *q = find_eol(f->p, f->p + room);
		size_t n = (size_t)(q - f->p);

		if (n > 0)
			content_in(f, n);
		if (f->p == f->end || f->left == 0)
			return;
		if (*f->p == '\r' && f->end - f->p >= 3 && f->left >= 2 && f->p[1] == '\n') {
			content_in(f, 2);
			line_end(d, true);
			if (*f->p == '.' && dot_pending(d) && f->end - f->p >= 2 && f->p[1] != '\r' &&
			    f->p[1] != '\n' && f->out->span_count + 4 <= f->out->span_max) {
				drop_in(f);	/* a stuffed dot: unstuffed, and on with the line */
				d->state = ST_TEXT;
				continue;
			}
			if (*f->p == '.' || *f->p == '\r' || *f->p == '\n')
				return;	/* the next step looks at the new line's start */
			d->state = ST_TEXT;
			continue;
		}
		break;
	}
	if (*f->p == '\r') {
		content_in(f, 1);
		d->state = ST_CR;
		return;
	}
	d->bare_lf = true;
	if (d->mode == RM_SMTP_DATA_NORMALISE) {
		put_const(f, K_CRLF, 2);
		drop_in(f);
		line_end(d, false);
	} else {
		content_in(f, 1);
		line_start(d, false);
	}
}

/* The dot at a line start, or the CR after it: held back if the dot is pending. */
static void dot_byte(struct feed *f)
{
	if (dot_pending(f->d))
		drop_in(f);
	else
		content_in(f, 1);
}

static void step(struct feed *f)
{
	struct rm_smtp_data *d = f->d;
	bool norm = d->mode == RM_SMTP_DATA_NORMALISE;
	uint8_t c = *f->p;

	switch (d->state) {
	case ST_LS:
		if (c != '.') {
			step_text(f);
			return;
		}
		dot_byte(f);
		d->state = ST_DOT;
		return;
	case ST_TEXT:
		step_text(f);
		return;
	case ST_CR:
		if (c == '\n') {
			content_in(f, 1);
			line_end(d, true);
			return;
		}
		d->bare_cr = true;
		if (norm) {
			put_const(f, K_LF, 1);
			line_end(d, false);
		} else {
			line_start(d, false);
		}
		return;
	case ST_DOT:
		if (c == '\r') {
			dot_byte(f);
			d->state = ST_DOT_CR;
			return;
		}
		if (c != '\n') {
			step_text(f);	/* a pending dot is unstuffed: dropped */
			return;
		}
		/* "." then a bare LF. */
		d->smuggle = true;
		d->bare_lf = true;
		if (norm) {
			put_const(f, dot_pending(d) ? K_DOT_CRLF : K_CRLF, dot_pending(d) ? 3 : 2);
			drop_in(f);
			line_end(d, false);
		} else {
			content_in(f, 1);	/* REJECT: LF is content; a pending dot was unstuffed */
			line_start(d, false);
		}
		return;
	case ST_DOT_CR:
		if (c == '\n') {
			if (dot_pending(d) && d->ls_crlf) {
				drop_in(f);	/* CR LF "." CR LF */
				d->state = ST_DONE;
				return;
			}
			if (!d->ls_crlf)
				d->smuggle = true;
			if (dot_pending(d)) {
				put_const(f, K_DOT_CRLF, 3);	/* NORMALISE: a line "." */
				drop_in(f);
			} else {
				content_in(f, 1);
			}
			line_end(d, true);
			return;
		}
		/* "." then a bare CR. */
		d->smuggle = true;
		d->bare_cr = true;
		if (dot_pending(d) && norm) {
			put_const(f, K_DOT_CRLF, 3);
			line_end(d, false);
		} else if (dot_pending(d)) {
			put_const(f, K_CR, 1);	/* REJECT: the dot was unstuffed, the CR is content */
			line_start(d, false);
		} else if (norm) {
			put_const(f, K_LF, 1);
			line_end(d, false);
		} else {
			line_start(d, false);
		}
		return;
	default:
		rm_panic("smtp_data: state %u", d->state);
	}
}

/* After the LAST chunk: a CR that is still waiting for an LF is a bare CR. */
static void finish(struct feed *f)
{
	struct rm_smtp_data *d = f->d;

	if (d->state == ST_CR || d->state == ST_DOT_CR) {
		d->bare_cr = true;
		if (d->state == ST_DOT_CR)
			d->smuggle = true;
		if (d->mode == RM_SMTP_DATA_NORMALISE)
			put_const(f, K_LF, 1);
	}
	d->state = ST_DONE;
}

size_t rm_smtp_data_feed(struct rm_smtp_data *d, const uint8_t *in, size_t len,
			 struct rm_smtp_data_out *out)
{
	static const uint8_t nothing[1];
	size_t avail = len, used;
	struct feed f;

	RM_ASSERT(out->span_max >= RM_SMTP_DATA_SPANS_MIN);
	out->span_count = 0;
	out->bytes = 0;
	if (d->done)
		return 0;
	if (in == NULL) {
		RM_ASSERT(len == 0);
		in = nothing;
	}
	if (d->bdat && avail > d->chunk_left)
		avail = (size_t)d->chunk_left;
	f = (struct feed){ d, out, in, in + avail, NULL, out->bytes_max, false };
	if (d->owed_len > 0) {
		unsigned off = d->owed_off, n = d->owed_len;

		d->owed_len = 0;
		emit_const(&f, off, n);
	}
	if (d->binary && !f.stop) {
		size_t n = avail < f.left ? avail : f.left;

		if (n > 0)
			emit_in(&f, n);
		if (d->last && n == d->chunk_left)
			d->state = ST_DONE;
	}
	/* Each step consumes a byte or moves CR/DOT/DOT_CR on to LS or TEXT. */
	for (size_t steps = 0; !d->binary && !f.stop && d->state != ST_DONE; steps++) {
		RM_ASSERT(steps <= 2 * avail + 2);
		if (out->span_count + (f.run != NULL) + 2 > out->span_max || f.left == 0)
			break;
		if (f.p == f.end) {
			if (d->bdat && d->last && avail == d->chunk_left)
				finish(&f);
			break;
		}
		step(&f);
	}
	flush(&f);
	used = (size_t)(f.p - in);
	if (d->bdat)
		d->chunk_left -= used;
	d->done = d->state == ST_DONE && d->owed_len == 0;
	return used;
}
