/*
 * NAME
 *	dsn - delivery status notifications composed as a message to spool
 * SUMMARY
 *	See proto/dsn.h for the interface.
 * DESCRIPTION
 *	What this codec writes itself comes in pieces ("units"): the message
 *	header with the first part's header and its opening text, one
 *	recipient's paragraph, the status part's header with the per-message
 *	fields, one recipient's fields, the original's part header, and the
 *	close.  Each starts at the beginning of a line and ends with CR LF,
 *	and each is a pure function of the report, so a write call that
 *	stops inside one keeps only the count of its bytes written
 *	(w->unit_off) and the next call generates it again, skipping those.
 *	That is what makes every write resumable with no buffer of ours and
 *	the output independent of the caps.  The original is the one stream
 *	that is not regenerated: its normaliser keeps its state in
 *	struct rm_dsn_orig and owes at most four bytes (w->owed) when the
 *	output fills in the middle of what one input byte became.
 *
 *	Every byte but the boundary's own goes through a guard: a matcher
 *	for the base "=_rm." id "." that, after it, follows the boundary's
 *	digits and writes the last one as 'X'.  The base has its only '=' at
 *	its start, so no proper prefix of it is also a suffix and the
 *	matcher needs no backtracking (after a mismatch only the current
 *	byte can start a new match).  At begin the same generators run in
 *	scan mode (nothing written) to find the longest run of digits after
 *	the base in what they would write; rm_dsn_scan_original does it for
 *	the original; the boundary's digits are one more than the longest,
 *	so the guard never fires unless the 70-byte limit cut them short or
 *	the original fed is not the one scanned.  Units start at a line
 *	start and the base has no CR or LF, so a match never spans units and
 *	each unit's guard starts afresh (which a regenerated unit needs).
 *
 *	Folding: a reply or reason is read as words (runs of anything but
 *	SP, HT, CR, LF) separated by runs of those; a word goes on the line
 *	if the column stays within 78, else after a fold; a separator with a
 *	line break always folds (a multi-line reply keeps its lines); a word
 *	that alone passes 998 is cut with a fold.  Folding is inserting CR
 *	LF before a space, so an unfolding reader gets the words back with
 *	single spaces.
 * DIAGNOSTICS
 *	See the header.
 */
#include <string.h>

#include "core/log.h"
#include "proto/dsn.h"

enum { PHASE_HEAD = 0, PHASE_ORIG, PHASE_END, PHASE_DONE };
enum { U_TOP = 0, U_TEXT_RCPT, U_STATUS, U_STATUS_RCPT, U_ORIG_HEAD, U_CLOSE };
enum { RM_DSN_INCLUDE_NONE = 0, RM_DSN_INCLUDE_HEADERS, RM_DSN_INCLUDE_FULL };
enum text_mode { T_TEXT, T_ADDR, T_UNITEXT };

#define NOT_AFTER 0xffu
#define BASE_PREFIX "=_rm."
/* 9999-12-31T23:59:59Z: RFC 5322 years have four digits here. */
#define UNIX_S_MAX 253402300799LL
#define TZ_OFFSET_MIN_MAX 1439
#define ORCPT_TYPE_BYTES_MAX 32u

static const char *const action_names[RM_DSN_ACTION_COUNT] = {
	"failed", "delayed", "delivered", "relayed", "expanded",
};

static const char *const action_texts[RM_DSN_ACTION_COUNT] = {
	"delivery failed",
	"not yet delivered",
	"delivered",
	"relayed to a system that sends no further reports",
	"delivered to the members of a list",
};

static const char *const err_texts[RM_DSN_E_COUNT] = {
	[RM_DSN_OK] = "ok",
	[RM_DSN_E_HOSTNAME] = "bad hostname",
	[RM_DSN_E_ID] = "bad id",
	[RM_DSN_E_DISPLAY] = "bad From display name",
	[RM_DSN_E_SENDER] = "null or too long sender",
	[RM_DSN_E_ENVID] = "ENVID too long",
	[RM_DSN_E_TIME] = "time or time zone offset out of range",
	[RM_DSN_E_RCPT_COUNT] = "no recipient or too many",
	[RM_DSN_E_RCPT_ADDR] = "empty or too long recipient",
	[RM_DSN_E_ORCPT] = "bad ORCPT",
	[RM_DSN_E_ACTION] = "bad action",
	[RM_DSN_E_STATUS] = "bad status or status class not the action's",
	[RM_DSN_E_REMOTE_MTA] = "bad remote MTA",
};

const char *rm_dsn_err_text(enum rm_dsn_err err)
{
	return (unsigned)err < RM_DSN_E_COUNT ? err_texts[err] : "unknown error";
}

bool rm_dsn_should_send(const uint8_t *sender, size_t sender_len, uint8_t notify,
			enum rm_dsn_action action, bool delay_if_unset)
{
	/* RFC 5321 4.5.5 and RFC 3461 6.2: nothing ever goes to <>. */
	if (sender == NULL || sender_len == 0 ||
	    (sender_len == 2 && sender[0] == '<' && sender[1] == '>'))
		return false;
	if (notify & RM_SMTP_NOTIFY_NEVER)
		return false;
	switch (action) {
	case RM_DSN_FAILED:
		return notify == 0 || (notify & RM_SMTP_NOTIFY_FAILURE) != 0;
	case RM_DSN_DELAYED:
		return notify == 0 ? delay_if_unset : (notify & RM_SMTP_NOTIFY_DELAY) != 0;
	case RM_DSN_DELIVERED:
	case RM_DSN_RELAYED:
	case RM_DSN_EXPANDED:
		return (notify & RM_SMTP_NOTIFY_SUCCESS) != 0;
	default:
		return false;
	}
}

/* --- the guard and the scan ------------------------------------------------ */

static void match_reset(struct rm_dsn_match *m)
{
	m->base_at = 0;
	m->d_at = NOT_AFTER;
	m->run = 0;
}

/* One byte against the base; true when it completes it. */
static bool base_step(const struct rm_dsn_writer *w, struct rm_dsn_match *m, uint8_t b)
{
	if (b == (uint8_t)w->boundary[m->base_at]) {
		if (++m->base_at < w->base_len)
			return false;
		m->base_at = 0;
		return true;
	}
	/* No border: only b itself can start the next match. */
	m->base_at = b == (uint8_t)w->boundary[0] ? 1 : 0;
	return false;
}

static void scan_byte(struct rm_dsn_writer *w, struct rm_dsn_match *m, uint8_t b)
{
	if (m->d_at != NOT_AFTER) {
		if (b >= '0' && b <= '9') {
			if (m->run < UINT8_MAX)
				m->run++;
			if (m->run > w->run_max)
				w->run_max = m->run;
			return;
		}
		m->d_at = NOT_AFTER;
	}
	if (base_step(w, m, b)) {
		m->d_at = 0;
		m->run = 0;
	}
}

/* The byte to write for b: b, or 'X' when it would complete the boundary. */
static uint8_t guard_byte(struct rm_dsn_writer *w, struct rm_dsn_match *m, uint8_t b, bool *hit)
{
	*hit = false;
	if (m->d_at != NOT_AFTER) {
		if (b == (uint8_t)w->boundary[w->base_len + m->d_at]) {
			if (++m->d_at == w->boundary_len - w->base_len) {
				m->d_at = NOT_AFTER;
				*hit = true;
				return 'X';
			}
			return b;
		}
		m->d_at = NOT_AFTER;
	}
	if (base_step(w, m, b))
		m->d_at = 0;
	return b;
}

/* --- the sink: where a unit's bytes go ------------------------------------- */

struct sink {
	struct rm_dsn_writer *w;
	uint8_t *out;
	size_t room;
	size_t skip;			/* bytes of the unit written by earlier calls */
	size_t pos;			/* bytes of the unit generated so far */
	size_t n;			/* bytes written by this call */
	size_t col;			/* bytes on the current line */
	bool full;
	bool scan;
	bool utf8;
	struct rm_dsn_match m;
};

static void sink_init(struct sink *s, struct rm_dsn_writer *w, bool scan, uint8_t *out,
		      size_t room, size_t skip)
{
	memset(s, 0, sizeof(*s));
	s->w = w;
	s->scan = scan;
	s->out = out;
	s->room = room;
	s->skip = skip;
	s->utf8 = w->r->smtputf8;
	match_reset(&s->m);
}

static void sink_emit(struct sink *s, uint8_t b, bool hit)
{
	if (s->pos++ >= s->skip) {
		if (s->n == s->room) {
			s->full = true;
			return;
		}
		s->out[s->n++] = b;
		if (hit)
			s->w->boundary_hits++;
	}
	if (b == '\n')
		s->col = 0;
	else if (b != '\r')
		s->col++;
}

static void put_byte(struct sink *s, uint8_t b)
{
	bool hit;

	if (s->full)
		return;
	if (s->scan) {
		scan_byte(s->w, &s->m, b);
		if (b >= 0x80)
			s->w->parts_8bit = true;
		s->col = b == '\n' ? 0 : b == '\r' ? s->col : s->col + 1;
		return;
	}
	b = guard_byte(s->w, &s->m, b, &hit);
	sink_emit(s, b, hit);
}

static void put_bytes(struct sink *s, const void *p, size_t n)
{
	for (size_t i = 0; i < n && !s->full; i++)
		put_byte(s, ((const uint8_t *)p)[i]);
}

static void put_str(struct sink *s, const char *str)
{
	put_bytes(s, str, strlen(str));
}

static void put_span(struct sink *s, struct rm_smtp_span sp)
{
	put_bytes(s, sp.ptr, sp.len);
}

/* The boundary itself: not guarded (it is the one place it belongs), not scanned. */
static void put_boundary(struct sink *s)
{
	for (size_t i = 0; i < s->w->boundary_len && !s->full && !s->scan; i++)
		sink_emit(s, (uint8_t)s->w->boundary[i], false);
	match_reset(&s->m);
}

static void put_delimiter(struct sink *s)
{
	put_str(s, "\r\n--");
	put_boundary(s);
	put_str(s, "\r\n");
}

static void put_u64(struct sink *s, uint64_t v, unsigned width)
{
	char d[20];
	unsigned n = 0;

	do {
		d[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0 && n < sizeof(d));
	while (n < width && n < sizeof(d))
		d[n++] = '0';
	while (n > 0)
		put_byte(s, (uint8_t)d[--n]);
}

/* Days since 1970-01-01 to a civil date (H. Hinnant's days_from_civil, inverted). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;

	*d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	*m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

/* RFC 5322 3.3 date-time: "Tue, 1 Jul 2025 10:52:37 +0200". */
static void put_date(struct sink *s, int64_t unix_s, int32_t tz_min)
{
	static const char wdays[7][4] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	int64_t local = unix_s + (int64_t)tz_min * 60;
	int64_t days = local / 86400, secs = local % 86400, y;
	unsigned m, d, off = (unsigned)(tz_min < 0 ? -tz_min : tz_min);

	if (secs < 0) {
		secs += 86400;
		days--;
	}
	civil_from_days(days, &y, &m, &d);
	put_str(s, wdays[((days % 7) + 7) % 7]);
	put_str(s, ", ");
	put_u64(s, d, 1);
	put_byte(s, ' ');
	put_str(s, months[m - 1]);
	put_byte(s, ' ');
	put_u64(s, (uint64_t)y, 4);
	put_byte(s, ' ');
	put_u64(s, (uint64_t)secs / 3600, 2);
	put_byte(s, ':');
	put_u64(s, (uint64_t)secs / 60 % 60, 2);
	put_byte(s, ':');
	put_u64(s, (uint64_t)secs % 60, 2);
	put_str(s, tz_min < 0 ? " -" : " +");
	put_u64(s, off / 60 * 100 + off % 60, 4);
}

/* --- text from outside ------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at t (RFC 3629), 0 if there is none. */
static size_t utf8_seq_len(const uint8_t *t, size_t n)
{
	uint8_t c = t[0];
	size_t len;
	uint8_t lo = 0x80, hi = 0xbf;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	/* Overlong forms, surrogates and past U+10FFFF are refused by the second byte. */
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (t[1] < lo || t[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (t[i] < 0x80 || t[i] > 0xbf)
			return 0;
	return len;
}

static bool is_sep(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * One unit of outside text at t[0..n): returns the input bytes it takes
 * (at least 1) and puts what it becomes in o (at most 6 bytes).  UTF-8
 * passes only with SMTPUTF8 and only well formed; everything else that is
 * not printable ASCII is '?' (a whole sequence one '?'), except that the
 * unitext form (RFC 6533) escapes the ASCII it may not hold as \x{HH}.
 */
static size_t text_unit(const uint8_t *t, size_t n, enum text_mode mode, bool utf8, uint8_t *o,
			size_t *olen)
{
	static const char hex[] = "0123456789ABCDEF";
	uint8_t c = t[0];

	if (c >= 0x80) {
		size_t u = utf8_seq_len(t, n);

		if (u > 0 && utf8) {
			memcpy(o, t, u);
			*olen = u;
			return u;
		}
		o[0] = '?';
		*olen = 1;
		return u > 0 ? u : 1;
	}
	if (mode == T_UNITEXT && (c <= ' ' || c == '+' || c == '=' || c == '\\' || c == 0x7f)) {
		o[0] = '\\';
		o[1] = 'x';
		o[2] = '{';
		o[3] = (uint8_t)hex[c >> 4];
		o[4] = (uint8_t)hex[c & 15];
		o[5] = '}';
		*olen = 6;
		return 1;
	}
	o[0] = c < ' ' || c == 0x7f ? '?' : c;
	*olen = 1;
	return 1;
}

static void put_fold(struct sink *s, const char *indent)
{
	put_str(s, "\r\n");
	put_str(s, indent);
}

/* Outside text as one word: folded only where a line would pass 998 bytes. */
static void put_word(struct sink *s, const uint8_t *t, size_t len, enum text_mode mode,
		     const char *indent)
{
	for (size_t i = 0; i < len && !s->full;) {
		uint8_t o[6];
		size_t olen, u = text_unit(t + i, len - i, mode, s->utf8, o, &olen);

		if (s->col + olen > RM_DSN_LINE_BYTES_MAX)
			put_fold(s, indent);
		put_bytes(s, o, olen);
		i += u;
	}
}

/* A reply or reason, folded as described at the top; at most RM_DSN_TEXT_BYTES_MAX of it. */
static void put_text(struct sink *s, struct rm_smtp_span sp, const char *indent)
{
	const uint8_t *t = sp.ptr;
	size_t len = sp.len < RM_DSN_TEXT_BYTES_MAX ? sp.len : RM_DSN_TEXT_BYTES_MAX;
	size_t i = 0;
	bool first = true;

	while (i < len && !s->full) {
		bool brk = false;
		size_t end, bytes = 0;

		for (; i < len && is_sep(t[i]); i++)
			brk |= t[i] == '\r' || t[i] == '\n';
		if (i == len)
			break;
		for (end = i; end < len && !is_sep(t[end]);) {
			uint8_t o[6];
			size_t olen;

			end += text_unit(t + end, len - end, T_TEXT, s->utf8, o, &olen);
			bytes += olen;
		}
		if (!first) {
			if (brk || s->col + 1 + bytes > RM_DSN_FOLD_COLUMN)
				put_fold(s, indent);
			else
				put_byte(s, ' ');
		}
		put_word(s, t + i, end - i, T_TEXT, indent);
		first = false;
		i = end;
	}
}

static bool has_8bit(struct rm_smtp_span sp)
{
	for (size_t i = 0; i < sp.len; i++)
		if (sp.ptr[i] >= 0x80)
			return true;
	return false;
}

/* An xtext value decoded (RFC 3461 4), or as sent when it is not good xtext. */
static void put_xtext(struct sink *s, struct rm_smtp_span sp, uint8_t *buf, size_t cap)
{
	ssize_t n = rm_smtp_xtext_decode(sp.ptr, sp.len, buf, cap);

	if (n >= 0)
		put_word(s, buf, (size_t)n, T_ADDR, " ");
	else
		put_word(s, sp.ptr, sp.len, T_ADDR, " ");
}

/* --- the units --------------------------------------------------------------- */

static void gen_top(struct sink *s)
{
	const struct rm_dsn_writer *w = s->w;
	const struct rm_dsn_report *r = w->r;

	put_str(s, "From: ");
	if (r->from_display.len > 0) {
		put_byte(s, '"');
		for (size_t i = 0; i < r->from_display.len; i++) {
			uint8_t c = r->from_display.ptr[i];

			if (c == '"' || c == '\\')
				put_byte(s, '\\');
			put_byte(s, c);
		}
		put_str(s, "\" ");
	}
	put_str(s, "<MAILER-DAEMON@");
	put_span(s, r->hostname);
	put_str(s, ">\r\nTo: ");
	put_word(s, r->sender.ptr, r->sender.len, T_ADDR, " ");
	put_str(s, "\r\nSubject: ");
	put_str(s, w->any_failed ? "Undelivered Mail Returned to Sender" :
		   w->any_delayed ? "Delayed Mail (still being retried)" :
		   "Successful Mail Delivery Report");
	put_str(s, "\r\nDate: ");
	put_date(s, r->now_unix_s, r->tz_offset_min);
	put_str(s, "\r\nMessage-ID: <");
	put_span(s, r->id);
	put_byte(s, '.');
	put_u64(s, (uint64_t)r->now_unix_s, 1);
	put_byte(s, '@');
	put_span(s, r->hostname);
	put_str(s, ">\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
	put_str(s, r->smtputf8 ? "Content-Type: multipart/report; report-type=global-delivery-status;\r\n" :
		   "Content-Type: multipart/report; report-type=delivery-status;\r\n");
	put_str(s, "\tboundary=\"");
	put_boundary(s);
	put_str(s, "\"\r\n");
	if (w->body_8bit)
		put_str(s, "Content-Transfer-Encoding: 8bit\r\n");
	put_str(s, "\r\nThis is a MIME-encapsulated message.\r\n");
	put_delimiter(s);
	put_str(s, "Content-Description: Notification\r\n");
	put_str(s, r->smtputf8 ? "Content-Type: text/plain; charset=utf-8\r\n" :
		   "Content-Type: text/plain; charset=us-ascii\r\n");
	if (w->parts_8bit)
		put_str(s, "Content-Transfer-Encoding: 8bit\r\n");
	put_str(s, "\r\nThis is the mail delivery system at ");
	put_span(s, r->hostname);
	put_str(s, ".\r\n\r\n");
	if (w->any_failed)
		put_str(s, "Your message could not be delivered to one or more of its recipients.\r\n"
			   "The reasons are given below.\r\n");
	else if (w->any_delayed)
		put_str(s, "Your message has not yet been delivered to one or more of its recipients.\r\n"
			   "Delivery is still being attempted; you do not need to send it again.\r\n");
	else
		put_str(s, "This is a report on the delivery of your message.\r\n");
	switch (w->include) {
	case RM_DSN_INCLUDE_FULL:
		put_str(s, "Your message is attached.\r\n");
		break;
	case RM_DSN_INCLUDE_HEADERS:
		if (w->too_big) {
			put_str(s, "Your message was larger than ");
			put_u64(s, r->original_bytes_max, 1);
			put_str(s, " bytes, so only its headers are attached.\r\n");
		} else {
			put_str(s, "The headers of your message are attached.\r\n");
		}
		break;
	default:
		put_str(s, "Your message is not attached.\r\n");
		break;
	}
	put_str(s, "\r\n");
}

static void gen_text_rcpt(struct sink *s, const struct rm_dsn_rcpt *rc)
{
	put_byte(s, '<');
	put_word(s, rc->addr.ptr, rc->addr.len, T_ADDR, "    ");
	put_str(s, ">: ");
	put_str(s, action_texts[rc->action]);
	put_str(s, " (status ");
	put_str(s, rc->status);
	put_str(s, ")\r\n");
	if (rc->reply.ptr != NULL) {
		if (rc->remote_mta.ptr != NULL) {
			put_str(s, "    host ");
			put_span(s, rc->remote_mta);
			put_str(s, " said: ");
		} else {
			put_str(s, "    the remote server said: ");
		}
		put_text(s, rc->reply, "    ");
		put_str(s, "\r\n");
	} else if (rc->reason.ptr != NULL) {
		put_str(s, "    ");
		put_text(s, rc->reason, "    ");
		put_str(s, "\r\n");
	}
	if (rc->action == RM_DSN_DELAYED && rc->retry_until_unix_s != 0) {
		put_str(s, "    Delivery will be tried until ");
		put_date(s, rc->retry_until_unix_s, s->w->r->tz_offset_min);
		put_str(s, ".\r\n");
	}
	put_str(s, "\r\n");
}

static void gen_status(struct sink *s)
{
	const struct rm_dsn_report *r = s->w->r;
	uint8_t buf[RM_SMTP_ENVID_BYTES_MAX];

	put_delimiter(s);
	put_str(s, "Content-Description: Delivery report\r\n");
	put_str(s, r->smtputf8 ? "Content-Type: message/global-delivery-status\r\n" :
		   "Content-Type: message/delivery-status\r\n");
	if (s->w->parts_8bit)
		put_str(s, "Content-Transfer-Encoding: 8bit\r\n");
	put_str(s, "\r\n");
	if (r->envid.ptr != NULL) {
		put_str(s, "Original-Envelope-Id: ");
		put_xtext(s, r->envid, buf, sizeof(buf));
		put_str(s, "\r\n");
	}
	put_str(s, "Reporting-MTA: dns; ");
	put_span(s, r->hostname);
	put_str(s, "\r\nArrival-Date: ");
	put_date(s, r->arrival_unix_s, r->tz_offset_min);
	put_str(s, "\r\n");
}

static void gen_status_rcpt(struct sink *s, const struct rm_dsn_rcpt *rc)
{
	int32_t tz = s->w->r->tz_offset_min;
	uint8_t buf[RM_SMTP_ORCPT_BYTES_MAX];

	put_str(s, "\r\n");
	if (rc->orcpt_type.ptr != NULL) {
		put_str(s, "Original-Recipient: ");
		put_span(s, rc->orcpt_type);
		put_str(s, "; ");
		put_xtext(s, rc->orcpt, buf, sizeof(buf));
		put_str(s, "\r\n");
	}
	if (s->utf8 && has_8bit(rc->addr)) {
		put_str(s, "Final-Recipient: utf-8; ");
		put_word(s, rc->addr.ptr, rc->addr.len, T_UNITEXT, " ");
	} else {
		put_str(s, "Final-Recipient: rfc822; ");
		put_word(s, rc->addr.ptr, rc->addr.len, T_ADDR, " ");
	}
	put_str(s, "\r\nAction: ");
	put_str(s, action_names[rc->action]);
	put_str(s, "\r\nStatus: ");
	put_str(s, rc->status);
	put_str(s, "\r\n");
	if (rc->remote_mta.ptr != NULL) {
		put_str(s, "Remote-MTA: dns; ");
		put_span(s, rc->remote_mta);
		put_str(s, "\r\n");
	}
	if (rc->reply.ptr != NULL) {
		put_str(s, "Diagnostic-Code: smtp; ");
		put_text(s, rc->reply, " ");
		put_str(s, "\r\n");
	} else if (rc->reason.ptr != NULL) {
		/* RFC 3464 2.3.6: a diagnostic that is not SMTP's has an X- type. */
		put_str(s, "Diagnostic-Code: X-ringmail; ");
		put_text(s, rc->reason, " ");
		put_str(s, "\r\n");
	}
	if (rc->last_attempt_unix_s != 0) {
		put_str(s, "Last-Attempt-Date: ");
		put_date(s, rc->last_attempt_unix_s, tz);
		put_str(s, "\r\n");
	}
	if (rc->action == RM_DSN_DELAYED && rc->retry_until_unix_s != 0) {
		put_str(s, "Will-Retry-Until: ");
		put_date(s, rc->retry_until_unix_s, tz);
		put_str(s, "\r\n");
	}
}

static void gen_orig_head(struct sink *s)
{
	const struct rm_dsn_writer *w = s->w;
	bool utf8 = w->r->smtputf8;

	put_delimiter(s);
	if (w->include == RM_DSN_INCLUDE_FULL) {
		put_str(s, "Content-Description: Original message\r\n");
		put_str(s, utf8 ? "Content-Type: message/global\r\n" : "Content-Type: message/rfc822\r\n");
	} else {
		put_str(s, "Content-Description: Original message headers\r\n");
		put_str(s, utf8 ? "Content-Type: message/global-headers\r\n" :
			   "Content-Type: text/rfc822-headers\r\n");
	}
	if (w->orig_8bit)
		put_str(s, "Content-Transfer-Encoding: 8bit\r\n");
	put_str(s, "\r\n");
}

static void gen_close(struct sink *s)
{
	if (s->w->close_crlf)
		put_str(s, "\r\n");
	put_str(s, "\r\n--");
	put_boundary(s);
	put_str(s, "--\r\n");
}

static void gen_unit(struct sink *s, uint8_t unit, size_t ri)
{
	const struct rm_dsn_report *r = s->w->r;

	switch (unit) {
	case U_TOP:
		gen_top(s);
		break;
	case U_TEXT_RCPT:
		gen_text_rcpt(s, &r->rcpt[ri]);
		break;
	case U_STATUS:
		gen_status(s);
		break;
	case U_STATUS_RCPT:
		gen_status_rcpt(s, &r->rcpt[ri]);
		break;
	case U_ORIG_HEAD:
		gen_orig_head(s);
		break;
	default:
		gen_close(s);
		break;
	}
}

/* The unit after the current one; the phase moves on after the last of each. */
static void next_unit(struct rm_dsn_writer *w)
{
	w->unit_off = 0;
	switch (w->unit) {
	case U_TOP:
		w->unit = U_TEXT_RCPT;
		w->rcpt_i = 0;
		break;
	case U_TEXT_RCPT:
		if (++w->rcpt_i < w->r->rcpt_count)
			break;
		w->unit = U_STATUS;
		break;
	case U_STATUS:
		w->unit = U_STATUS_RCPT;
		w->rcpt_i = 0;
		break;
	case U_STATUS_RCPT:
		if (++w->rcpt_i < w->r->rcpt_count)
			break;
		if (w->include != RM_DSN_INCLUDE_NONE) {
			w->unit = U_ORIG_HEAD;
			break;
		}
		w->phase = PHASE_ORIG;
		break;
	case U_ORIG_HEAD:
		w->phase = PHASE_ORIG;
		break;
	default:
		w->phase = PHASE_DONE;
		break;
	}
}

/* Writes units of the current phase into out until it is full or the phase ends. */
static size_t write_units(struct rm_dsn_writer *w, uint8_t *out, size_t cap)
{
	size_t n = 0;
	uint8_t phase = w->phase;

	/* Each round ends a unit or fills out: at most 2 * rcpt_count + 4 rounds. */
	while (w->phase == phase && n < cap) {
		struct sink s;

		sink_init(&s, w, false, out + n, cap - n, w->unit_off);
		gen_unit(&s, w->unit, w->rcpt_i);
		n += s.n;
		if (s.full) {
			w->unit_off += s.n;
			break;
		}
		next_unit(w);
	}
	return n;
}

/* --- the original ------------------------------------------------------------ */

/*
 * One input byte of the original: false if the included part ended
 * before it (it is not taken); else what it becomes, 0 to 4 bytes, in o.
 */
static bool orig_step(struct rm_dsn_writer *w, struct rm_dsn_orig *st, uint8_t c, uint8_t *o,
		      size_t *k, bool feed)
{
	*k = 0;
	if (st->done)
		return false;
	if (c == '\n' && st->prev_cr) {
		st->prev_cr = false;
	} else if (c == '\r' || c == '\n') {
		st->prev_cr = c == '\r';
		if (st->line_bytes == 0 && !st->in_body) {
			/* The empty line: the header section ends here. */
			if (w->include == RM_DSN_INCLUDE_HEADERS) {
				st->done = true;
				return false;
			}
			st->in_body = true;
		}
		o[(*k)++] = '\r';
		o[(*k)++] = '\n';
		st->line_bytes = 0;
	} else {
		st->prev_cr = false;
		if (st->line_bytes >= RM_DSN_LINE_BYTES_MAX) {
			/* A header line goes on folded; a body line is cut. */
			o[(*k)++] = '\r';
			o[(*k)++] = '\n';
			st->line_bytes = 0;
			if (!st->in_body) {
				o[(*k)++] = ' ';
				st->line_bytes = 1;
			}
		}
		if (c >= 0x80 && !feed)
			w->orig_8bit = true;
		if (c == 0 || (c >= 0x80 && !w->orig_8bit)) {
			if (feed)
				w->replaced++;
			c = '?';
		}
		o[(*k)++] = c;
		st->line_bytes++;
	}
	if (++st->in_bytes >= w->r->original_bytes_max)
		st->done = true;
	return true;
}

size_t rm_dsn_scan_original(struct rm_dsn_writer *w, const uint8_t *in, size_t len)
{
	size_t i;

	RM_ASSERT(w->err == RM_DSN_OK && w->phase == PHASE_HEAD && !w->boundary_ready);
	RM_ASSERT(in != NULL || len == 0);
	for (i = 0; i < len; i++) {
		uint8_t o[4];
		size_t k;

		if (!orig_step(w, &w->scan, in[i], o, &k, false))
			break;
		for (size_t j = 0; j < k; j++)
			scan_byte(w, &w->scan.m, o[j]);
	}
	return i;
}

static size_t flush_owed(struct rm_dsn_writer *w, uint8_t *out, size_t cap)
{
	size_t n = w->owed_len - w->owed_off;

	if (n > cap)
		n = cap;
	if (n > 0)
		memcpy(out, w->owed + w->owed_off, n);
	w->owed_off = (uint8_t)(w->owed_off + n);
	if (w->owed_off == w->owed_len)
		w->owed_off = w->owed_len = 0;
	return n;
}

size_t rm_dsn_feed_original(struct rm_dsn_writer *w, const uint8_t *in, size_t len, uint8_t *out,
			    size_t cap, size_t *consumed)
{
	size_t n, i;

	RM_ASSERT(w->err == RM_DSN_OK && w->phase == PHASE_ORIG);
	RM_ASSERT(in != NULL || len == 0);
	n = flush_owed(w, out, cap);
	for (i = 0; i < len && n < cap && w->owed_len == 0; i++) {
		uint8_t o[4];
		size_t k;

		if (!orig_step(w, &w->feed, in[i], o, &k, true))
			break;
		for (size_t j = 0; j < k; j++) {
			bool hit;
			uint8_t b = guard_byte(w, &w->feed.m, o[j], &hit);

			w->boundary_hits += hit;
			if (n < cap)
				out[n++] = b;
			else
				w->owed[w->owed_len++] = b;
		}
	}
	*consumed = i;
	return n;
}

size_t rm_dsn_end(struct rm_dsn_writer *w, uint8_t *out, size_t cap)
{
	size_t n;

	RM_ASSERT(w->err == RM_DSN_OK && w->phase >= PHASE_ORIG);
	n = flush_owed(w, out, cap);
	if (w->owed_len > 0)
		return n;
	if (w->phase == PHASE_ORIG) {
		w->close_crlf = w->feed.line_bytes > 0;
		w->phase = PHASE_END;
		w->unit = U_CLOSE;
		w->unit_off = 0;
	}
	if (w->phase == PHASE_END)
		n += write_units(w, out + n, cap - n);
	return n;
}

/* --- begin ------------------------------------------------------------------- */

static bool span_chars(struct rm_smtp_span sp, size_t max, const char *extra, bool alnum,
		       uint8_t lo, uint8_t hi)
{
	if (sp.ptr == NULL || sp.len == 0 || sp.len > max)
		return false;
	for (size_t i = 0; i < sp.len; i++) {
		uint8_t c = sp.ptr[i];
		bool ok = (c >= lo && c <= hi) ||
			  (alnum && ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))) ||
			  (c != 0 && extra != NULL && strchr(extra, c) != NULL);

		if (!ok)
			return false;
	}
	return true;
}

static bool time_ok(int64_t t, bool zero_ok)
{
	return (zero_ok && t == 0) || (t > 0 && t <= UNIX_S_MAX);
}

static enum rm_dsn_err check_rcpt(const struct rm_dsn_rcpt *rc)
{
	static const unsigned class_codes[RM_DSN_ACTION_COUNT] = { 500, 400, 200, 200, 200 };

	if (rc->addr.ptr == NULL || rc->addr.len == 0 || rc->addr.len > RM_SMTP_PATH_BYTES_MAX)
		return RM_DSN_E_RCPT_ADDR;
	if (rc->orcpt_type.ptr != NULL &&
	    (!span_chars(rc->orcpt_type, ORCPT_TYPE_BYTES_MAX, "-_.", true, 1, 0) ||
	     rc->orcpt.ptr == NULL || rc->orcpt.len > RM_SMTP_ORCPT_BYTES_MAX))
		return RM_DSN_E_ORCPT;
	if ((unsigned)rc->action >= RM_DSN_ACTION_COUNT)
		return RM_DSN_E_ACTION;
	if (rc->status == NULL || !rm_smtp_enhanced_valid(rc->status, class_codes[rc->action]))
		return RM_DSN_E_STATUS;
	if (rc->remote_mta.ptr != NULL &&
	    !span_chars(rc->remote_mta, RM_DSN_REMOTE_MTA_BYTES_MAX, NULL, false, 33, 126))
		return RM_DSN_E_REMOTE_MTA;
	if (!time_ok(rc->last_attempt_unix_s, true) || !time_ok(rc->retry_until_unix_s, true))
		return RM_DSN_E_TIME;
	return RM_DSN_OK;
}

static enum rm_dsn_err check_report(struct rm_dsn_writer *w, const struct rm_dsn_report *r)
{
	if (!span_chars(r->hostname, RM_DSN_HOSTNAME_BYTES_MAX, "-.", true, 1, 0))
		return RM_DSN_E_HOSTNAME;
	if (!span_chars(r->id, RM_DSN_ID_BYTES_MAX, "-_", true, 1, 0))
		return RM_DSN_E_ID;
	if (r->from_display.len > 0 &&
	    !span_chars(r->from_display, RM_DSN_DISPLAY_BYTES_MAX, NULL, false, 32, 126))
		return RM_DSN_E_DISPLAY;
	if (!rm_dsn_should_send(r->sender.ptr, r->sender.len, 0, RM_DSN_FAILED, true) ||
	    r->sender.len > RM_SMTP_PATH_BYTES_MAX)
		return RM_DSN_E_SENDER;
	if (r->envid.ptr != NULL && r->envid.len > RM_SMTP_ENVID_BYTES_MAX)
		return RM_DSN_E_ENVID;
	if (!time_ok(r->arrival_unix_s, false) || !time_ok(r->now_unix_s, false) ||
	    r->tz_offset_min < -TZ_OFFSET_MIN_MAX || r->tz_offset_min > TZ_OFFSET_MIN_MAX)
		return RM_DSN_E_TIME;
	if (r->rcpt == NULL || r->rcpt_count == 0 || r->rcpt_count > RM_DSN_RCPT_MAX)
		return RM_DSN_E_RCPT_COUNT;
	for (size_t i = 0; i < r->rcpt_count; i++) {
		enum rm_dsn_err e = check_rcpt(&r->rcpt[i]);

		if (e != RM_DSN_OK) {
			w->err_rcpt = i;
			return e;
		}
	}
	return RM_DSN_OK;
}

enum rm_dsn_err rm_dsn_begin(struct rm_dsn_writer *w, const struct rm_dsn_report *r)
{
	struct sink s;

	memset(w, 0, sizeof(*w));
	w->r = r;
	w->err = check_report(w, r);
	if (w->err != RM_DSN_OK)
		return w->err;
	for (size_t i = 0; i < r->rcpt_count; i++) {
		w->any_failed |= r->rcpt[i].action == RM_DSN_FAILED;
		w->any_delayed |= r->rcpt[i].action == RM_DSN_DELAYED;
	}
	if (r->original_bytes_max == 0) {
		w->include = RM_DSN_INCLUDE_NONE;
	} else if (r->ret == RM_SMTP_RET_FULL && r->original_bytes <= r->original_bytes_max) {
		w->include = RM_DSN_INCLUDE_FULL;
	} else {
		w->include = RM_DSN_INCLUDE_HEADERS;
		w->too_big = r->ret == RM_SMTP_RET_FULL;
	}
	/* The base: "=_rm." id "." (at most 38 bytes: 32 or more left for the digits). */
	memcpy(w->boundary, BASE_PREFIX, sizeof(BASE_PREFIX) - 1);
	memcpy(w->boundary + sizeof(BASE_PREFIX) - 1, r->id.ptr, r->id.len);
	w->base_len = (uint8_t)(sizeof(BASE_PREFIX) - 1 + r->id.len);
	w->boundary[w->base_len++] = '.';
	w->boundary_len = w->base_len;
	match_reset(&w->scan.m);
	match_reset(&w->feed.m);
	w->scan.done = w->feed.done = w->include == RM_DSN_INCLUDE_NONE;

	/* What this codec will write, scanned for the base (nothing is written). */
	sink_init(&s, w, true, NULL, 0, 0);
	gen_unit(&s, U_TOP, 0);
	for (size_t i = 0; i < r->rcpt_count; i++) {
		sink_init(&s, w, true, NULL, 0, 0);
		gen_unit(&s, U_TEXT_RCPT, i);
	}
	sink_init(&s, w, true, NULL, 0, 0);
	gen_unit(&s, U_STATUS, 0);
	for (size_t i = 0; i < r->rcpt_count; i++) {
		sink_init(&s, w, true, NULL, 0, 0);
		gen_unit(&s, U_STATUS_RCPT, i);
	}
	w->phase = PHASE_HEAD;
	w->unit = U_TOP;
	return RM_DSN_OK;
}

/* The digits: one more than the longest run after the base, as the limit allows. */
static void boundary_finish(struct rm_dsn_writer *w)
{
	size_t room = RM_DSN_BOUNDARY_BYTES_MAX - w->base_len;
	size_t d = (size_t)w->run_max + 1;

	if (d > room)
		d = room;
	w->boundary[w->base_len] = '1';
	memset(w->boundary + w->base_len + 1, '0', d - 1);
	w->boundary_len = (uint8_t)(w->base_len + d);
	w->boundary[w->boundary_len] = '\0';
	w->body_8bit = w->parts_8bit || w->orig_8bit;
	w->boundary_ready = true;
}

size_t rm_dsn_write_head(struct rm_dsn_writer *w, uint8_t *out, size_t cap)
{
	RM_ASSERT(w->err == RM_DSN_OK && w->r != NULL);
	if (!w->boundary_ready)
		boundary_finish(w);
	if (w->phase != PHASE_HEAD)
		return 0;
	return write_units(w, out, cap);
}

bool rm_dsn_head_done(const struct rm_dsn_writer *w)
{
	return w->err == RM_DSN_OK && w->phase > PHASE_HEAD;
}

bool rm_dsn_original_done(const struct rm_dsn_writer *w)
{
	return w->feed.done;
}

bool rm_dsn_done(const struct rm_dsn_writer *w)
{
	return w->err == RM_DSN_OK && w->phase == PHASE_DONE;
}

const char *rm_dsn_boundary(const struct rm_dsn_writer *w, size_t *len)
{
	*len = w->boundary_ready ? w->boundary_len : 0;
	return w->boundary_ready ? w->boundary : NULL;
}
