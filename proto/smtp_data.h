/*
 * NAME
 *	smtp_data - DATA and BDAT content decoder: dot-unstuffing, end of
 *	data, bare CR and LF (SMTP smuggling)
 * SUMMARY
 *	#include "proto/smtp_data.h"
 *
 *	void rm_smtp_data_opts_default(struct rm_smtp_data_opts *o);
 *	void rm_smtp_data_init(struct rm_smtp_data *d, const struct rm_smtp_data_opts *o);
 *	void rm_smtp_data_init_bdat(struct rm_smtp_data *d, const struct rm_smtp_data_opts *o,
 *				    bool binary);
 *	void rm_smtp_data_bdat_chunk(struct rm_smtp_data *d, uint64_t bytes, bool last);
 *	size_t rm_smtp_data_feed(struct rm_smtp_data *d, const uint8_t *in, size_t len,
 *				 struct rm_smtp_data_out *out);
 *	bool rm_smtp_data_done(const struct rm_smtp_data *d);
 *	bool rm_smtp_data_chunk_done(const struct rm_smtp_data *d);
 *	const struct rm_smtp_status *rm_smtp_data_status(const struct rm_smtp_data *d);
 *	bool rm_smtp_data_span_static(const struct rm_smtp_data_span *s);
 * DESCRIPTION
 *	Pure codec: the message content as it arrives, in chunks cut
 *	anywhere, in; the decoded content out as a list of spans, without
 *	copying: a span points into the chunk just fed, or (for the few bytes
 *	that are not in the input: a CR LF put in for a bare LF or CR) into
 *	constant memory here.  The session hands the spans to the spool as
 *	they are.  The decoder's state is a handful of plain values in
 *	struct rm_smtp_data; copying the struct is a checkpoint.
 *
 *	DATA (rm_smtp_data_init): RFC 5321 4.5.2 dot-unstuffing (a line that
 *	starts with "." loses that dot) and the end of data, which is exactly
 *	CR LF "." CR LF, the CR LF before the dot being the end of the last
 *	line (or the DATA command's own: "." CR LF first ends an empty
 *	message).  The decoded content excludes the "." CR LF and includes the
 *	CR LF before it.  Nothing else ever ends the data.
 *
 *	Bare CR and bare LF (a CR not followed by LF, an LF not after CR) are
 *	what SMTP smuggling (SEC Consult, 2023) uses: a receiver that takes
 *	LF "." LF, CR "." CR, LF "." CR LF ... as the end of data sees a second
 *	message where this one sees content.  The decoder notes any bare CR
 *	(d->bare_cr) or bare LF (d->bare_lf), and d->smuggle when a lone dot
 *	sits between two line ends (a line end being CR LF, bare CR, bare LF or
 *	the start of content) that are not both CR LF: the forms that could
 *	end the data elsewhere.  The mode (o->mode) says what happens then:
 *	  RM_SMTP_DATA_REJECT     (default) bare CR and LF are content like any
 *	                          byte (only CR LF ends a line, so only a dot
 *	                          after CR LF is unstuffed), the content is
 *	                          passed on unchanged, and a message with
 *	                          d->smuggle gets 550 5.6.0 from
 *	                          rm_smtp_data_status once it has ended;
 *	                          reading goes on to the real CR LF "." CR LF,
 *	                          so the session stays in step with the client;
 *	  RM_SMTP_DATA_NORMALISE  bare CR and bare LF each end a line and become
 *	                          CR LF (the CR LF comes from constant memory);
 *	                          a dot at the start of any line is unstuffed;
 *	                          a lone dot between line ends that are not
 *	                          both CR LF is a line "." of content.
 *	A caller that wants no bare CR or LF at all rejects on d->bare_cr or
 *	d->bare_lf.
 *
 *	BDAT (rm_smtp_data_init_bdat, then rm_smtp_data_bdat_chunk for each
 *	BDAT command): the same decoder on exact byte counts, without
 *	unstuffing or an end marker; feed consumes at most the chunk's bytes
 *	and rm_smtp_data_chunk_done says when they are in.  Bare CR and LF
 *	are noted and handled by the mode as above (content received by BDAT
 *	is later relayed with DATA, where they matter).  After the LAST
 *	chunk's bytes a final CR is a bare CR; rm_smtp_data_done then holds
 *	(for "BDAT 0 LAST" call feed with len 0).  With binary (BODY=BINARYMIME)
 *	the bytes are passed on as they are, nothing noted.
 *
 *	Feeding: rm_smtp_data_feed looks at in[0..len), writes up to
 *	out->span_max spans (at least RM_SMTP_DATA_SPANS_MIN) and up to
 *	out->bytes_max decoded bytes (SIZE_MAX: no limit), sets
 *	out->span_count and out->bytes, and returns how many input bytes it
 *	consumed; with no byte limit and len > 0 that is always > 0 until the
 *	data is done, so "while (len && !done) { n = feed(); ...; in += n;
 *	len -= n; }" ends.  Input after the end of data (the next pipelined
 *	command) or past the BDAT chunk is not consumed.  Spans are valid as
 *	long as the chunk is.
 *
 *	Back-pressure: when the spool takes only k of the bytes of one call,
 *	restore the struct copied before that call and feed the same input
 *	with out->bytes_max = k: the decoder then stops after exactly those
 *	k output bytes (the same bytes), possibly inside a CR LF it puts in,
 *	and returns how much input they used; the rest is fed again later.
 *	Output never depends on how input was cut or on where budgets
 *	stopped it; tests and the fuzzer hold it to that.
 *
 *	Counters: d->content_bytes is the decoded content so far (the session
 *	compares it with its size limit as it goes); d->long_line is set, once,
 *	when a decoded line passes o->line_bytes_max bytes, its CR LF included
 *	(RFC 5321 4.5.3.1.6: 1000; 0 checks nothing); the caller decides.
 * DIAGNOSTICS
 *	rm_smtp_data_status: NULL, or 550 5.6.0 for a REJECT-mode message with
 *	d->smuggle.  Feeding after the end consumes nothing and gives no span.
 *	A span_max below the minimum, a NULL input with len > 0, or a BDAT
 *	chunk announced before the last one is in are bugs and panic
 *	(RM_ASSERT).
 */
#ifndef RM_SMTP_DATA_H
#define RM_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/smtp_reply.h"

/* RFC 5321 4.5.3.1.6: a text line, CR LF included. */
#define RM_SMTP_DATA_LINE_BYTES_MAX 1000u
/* A feed needs room for this many spans to be sure to make progress. */
#define RM_SMTP_DATA_SPANS_MIN 8u

enum rm_smtp_data_mode { RM_SMTP_DATA_REJECT = 0, RM_SMTP_DATA_NORMALISE };

struct rm_smtp_data_opts {
	enum rm_smtp_data_mode mode;
	size_t line_bytes_max;		/* 0: no check */
};

struct rm_smtp_data_span {
	const uint8_t *ptr;
	size_t len;
};

struct rm_smtp_data_out {
	struct rm_smtp_data_span *span;	/* the caller's array */
	size_t span_max;
	size_t bytes_max;		/* decoded bytes this call may give */
	size_t span_count;		/* set by feed */
	size_t bytes;			/* set by feed */
};

struct rm_smtp_data {
	/* Set at init. */
	enum rm_smtp_data_mode mode;
	size_t line_bytes_max;
	bool bdat;
	bool binary;
	/* Where the decoder is: plain values, so a struct copy is a checkpoint. */
	uint8_t state;
	bool ls_crlf;			/* the line start was reached by CR LF (or is the start) */
	bool done;
	bool last;			/* BDAT: this is the LAST chunk */
	uint8_t owed_off;		/* constant bytes still owed after a byte limit */
	uint8_t owed_len;
	uint64_t chunk_left;		/* BDAT: bytes of the chunk not yet consumed */
	size_t line_bytes;		/* decoded bytes of the current line */
	/* Results. */
	uint64_t content_bytes;
	bool bare_cr;
	bool bare_lf;
	bool smuggle;
	bool long_line;
};

void rm_smtp_data_opts_default(struct rm_smtp_data_opts *o);
void rm_smtp_data_init(struct rm_smtp_data *d, const struct rm_smtp_data_opts *o);
void rm_smtp_data_init_bdat(struct rm_smtp_data *d, const struct rm_smtp_data_opts *o, bool binary);
void rm_smtp_data_bdat_chunk(struct rm_smtp_data *d, uint64_t bytes, bool last);
size_t rm_smtp_data_feed(struct rm_smtp_data *d, const uint8_t *in, size_t len,
			 struct rm_smtp_data_out *out);
bool rm_smtp_data_done(const struct rm_smtp_data *d);
bool rm_smtp_data_chunk_done(const struct rm_smtp_data *d);
const struct rm_smtp_status *rm_smtp_data_status(const struct rm_smtp_data *d);
bool rm_smtp_data_span_static(const struct rm_smtp_data_span *s);

#endif
