/*
 * NAME
 *	bench_smtp_client - throughput of proto/smtp_client
 * DESCRIPTION
 *	Replies: a one-line "250 2.1.5 Ok", and a 9-line EHLO answer (the
 *	keywords a Postfix or Gmail MX offers) parsed, then parsed and read
 *	as EHLO keywords; replies/second and bytes/second.  Commands: a MAIL
 *	FROM with SIZE, BODY and ENVID (the path checked as a mailbox), and a
 *	RCPT TO with NOTIFY and ORCPT; commands/second.  DATA: 64 KiB of
 *	content dot-stuffed into a 16 KiB output buffer (as a session would
 *	fill its write blocks), a realistic message (78-byte text lines, a few
 *	starting with a dot) and a dot-heavy one (every line a dot), plus the
 *	same content with bare LF line ends (each made CR LF); bytes/second of
 *	content.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <vector>

extern "C" {
#include "proto/smtp_client.h"
}

namespace {

const char kEhlo[] =
	"250-mx.example.net Hello client.example.org [192.0.2.44]\r\n"
	"250-PIPELINING\r\n"
	"250-SIZE 52428800\r\n"
	"250-8BITMIME\r\n"
	"250-ENHANCEDSTATUSCODES\r\n"
	"250-SMTPUTF8\r\n"
	"250-CHUNKING\r\n"
	"250-STARTTLS\r\n"
	"250 AUTH PLAIN LOGIN\r\n";

void parse_bench(benchmark::State &state, const char *text, bool ehlo)
{
	static struct rm_smtp_replyp p;
	const uint8_t *in = reinterpret_cast<const uint8_t *>(text);
	size_t len = strlen(text), bytes = 0;
	bool ok = true;

	for (auto _ : state) {
		struct rm_smtp_server_reply r;
		struct rm_smtp_ehlo e;

		rm_smtp_replyp_init(&p, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT, RM_SMTP_CLIENT_LINES_DEFAULT);
		size_t n = rm_smtp_replyp_feed(&p, in, len, &r);

		ok &= n == len && r.complete;
		if (ehlo) {
			rm_smtp_ehlo_parse(&r, &e);
			benchmark::DoNotOptimize(e);
			ok &= e.size_bytes_max == 52428800;
		}
		benchmark::DoNotOptimize(r);
		bytes += n;
	}
	if (!ok)
		state.SkipWithError("parse failed");
	state.SetBytesProcessed(static_cast<int64_t>(bytes));
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_ReplyOneLine(benchmark::State &state)
{
	parse_bench(state, "250 2.1.5 Ok\r\n", false);
}

void BM_ReplyEhlo9Lines(benchmark::State &state)
{
	parse_bench(state, kEhlo, false);
}

void BM_ReplyEhlo9LinesInterpret(benchmark::State &state)
{
	parse_bench(state, kEhlo, true);
}

const struct rm_smtp_ehlo kAll = { 0x3ffu, 3u, 52428800 };

void BM_WriteMail(benchmark::State &state)
{
	const char from[] = "bounces+12345-abcd@mail.example.org";
	const char envid[] = "QQ+2B1-20251202";
	struct rm_smtp_mail_args m = { from, sizeof(from) - 1, 184320, RM_SMTP_BODY_8BITMIME, false,
				       RM_SMTP_RET_HDRS, envid, sizeof(envid) - 1 };
	uint8_t buf[RM_SMTP_CLIENT_CMD_BYTES_MAX];
	bool ok = true;

	for (auto _ : state) {
		ssize_t n = rm_smtp_write_mail(buf, sizeof(buf), &m, &kAll);

		benchmark::DoNotOptimize(buf);
		ok &= n > 0;
	}
	if (!ok)
		state.SkipWithError("write failed");
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_WriteRcpt(benchmark::State &state)
{
	const char to[] = "recipient.name@subsidiary.example.com";
	const char orcpt[] = "rfc822;recipient.name@subsidiary.example.com";
	struct rm_smtp_rcpt_args r = { to, sizeof(to) - 1,
				       RM_SMTP_NOTIFY_FAILURE | RM_SMTP_NOTIFY_DELAY, orcpt,
				       sizeof(orcpt) - 1, false };
	uint8_t buf[RM_SMTP_CLIENT_CMD_BYTES_MAX];
	bool ok = true;

	for (auto _ : state) {
		ssize_t n = rm_smtp_write_rcpt(buf, sizeof(buf), &r, &kAll);

		benchmark::DoNotOptimize(buf);
		ok &= n > 0;
	}
	if (!ok)
		state.SkipWithError("write failed");
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

/* 64 KiB of lines of `line_bytes` text (a dot starts every `dot_every`-th), ended by `eol`. */
std::vector<uint8_t> message(size_t line_bytes, size_t dot_every, const char *eol)
{
	std::vector<uint8_t> m;
	size_t eol_len = strlen(eol);

	for (size_t l = 0; m.size() < 65536; l++) {
		for (size_t k = 0; k < line_bytes; k++)
			m.push_back(k == 0 && l % dot_every == 0 ? '.' : static_cast<uint8_t>('a' + (l + k) % 26));
		m.insert(m.end(), eol, eol + eol_len);
	}
	m.resize(65536);
	return m;
}

void dotstuff_bench(benchmark::State &state, const std::vector<uint8_t> &m)
{
	static uint8_t out[16384];
	size_t bytes = 0;

	for (auto _ : state) {
		struct rm_smtp_dotstuff st;
		size_t pos = 0;

		rm_smtp_dotstuff_init(&st);
		while (pos < m.size()) {
			size_t w;

			pos += rm_smtp_dotstuff_feed(&st, m.data() + pos, m.size() - pos, out, sizeof(out), &w);
			benchmark::DoNotOptimize(out);
		}
		ssize_t n = rm_smtp_dotstuff_end(&st, out, sizeof(out));

		benchmark::DoNotOptimize(n);
		bytes += m.size();
	}
	state.SetBytesProcessed(static_cast<int64_t>(bytes));
}

void BM_Dotstuff64KRealistic(benchmark::State &state)
{
	static const std::vector<uint8_t> m = message(76, 40, "\r\n");

	dotstuff_bench(state, m);
}

void BM_Dotstuff64KDotHeavy(benchmark::State &state)
{
	static const std::vector<uint8_t> m = message(10, 1, "\r\n");

	dotstuff_bench(state, m);
}

void BM_Dotstuff64KBareLf(benchmark::State &state)
{
	static const std::vector<uint8_t> m = message(77, 40, "\n");

	dotstuff_bench(state, m);
}

}  // namespace

BENCHMARK(BM_ReplyOneLine);
BENCHMARK(BM_ReplyEhlo9Lines);
BENCHMARK(BM_ReplyEhlo9LinesInterpret);
BENCHMARK(BM_WriteMail);
BENCHMARK(BM_WriteRcpt);
BENCHMARK(BM_Dotstuff64KRealistic);
BENCHMARK(BM_Dotstuff64KDotHeavy);
BENCHMARK(BM_Dotstuff64KBareLf);
