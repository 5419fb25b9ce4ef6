/*
 * NAME
 *	bench_dsn - throughput of proto/dsn
 * DESCRIPTION
 *	A failure DSN for one recipient with a three-line remote reply and a
 *	4 KiB original (1 KiB of headers, 3 KiB of body), written in 4 KiB
 *	pieces as the spool would take them: RET=FULL (the original scanned,
 *	then fed whole), the default (headers only: the scan and the feed
 *	stop at the empty line), and RET=FULL written into 256-byte pieces
 *	(what resuming costs: pieces are regenerated).  Also five recipients
 *	with mixed actions, headers only.  Reported as DSNs/second and
 *	bytes/second of DSN written.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/dsn.h"
}

namespace {

rm_smtp_span span(const char *s)
{
	return rm_smtp_span{ reinterpret_cast<const uint8_t *>(s), strlen(s) };
}

const char kReply[] =
	"550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
	"550-5.1.1 double-checking the recipient's email address for typos or\r\n"
	"550 5.1.1 unnecessary spaces. https://support.example.com/mail/?p=NoSuchUser";

std::string original_4k()
{
	std::string m;

	m += "Return-Path: <alice@example.com>\r\n";
	while (m.size() < 960)
		m += "Received: from client.example.org (client.example.org [192.0.2.44])"
		     " by mx.example.org with ESMTPS\r\n";
	m += "From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: report\r\n\r\n";
	while (m.size() < 4096 - 2)
		m += "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
	m.resize(4094);
	m += "\r\n";
	return m;
}

struct Fixture {
	std::string orig = original_4k();
	std::vector<rm_dsn_rcpt> rcpt;
	rm_dsn_report r{};
	std::vector<uint8_t> out = std::vector<uint8_t>(64 * 1024);

	explicit Fixture(size_t n, rm_smtp_ret ret)
	{
		static const rm_dsn_action actions[] = { RM_DSN_FAILED, RM_DSN_DELAYED, RM_DSN_FAILED,
							 RM_DSN_DELIVERED, RM_DSN_FAILED };
		static const char *const status[] = { "5.1.1", "4.4.1", "5.2.2", "2.0.0", "5.7.1" };

		for (size_t i = 0; i < n; i++) {
			rm_dsn_rcpt rc{};

			rc.addr = span("bob@example.net");
			rc.action = actions[i % 5];
			rc.status = status[i % 5];
			rc.remote_mta = span("mx1.example.net");
			rc.reply = span(kReply);
			rc.orcpt_type = span("rfc822");
			rc.orcpt = span("Bob+2Btag@example.net");
			rc.last_attempt_unix_s = 1700000000;
			rc.retry_until_unix_s = 1700400000;
			rcpt.push_back(rc);
		}
		r.hostname = span("mx.example.org");
		r.from_display = span("Mail Delivery System");
		r.id = span("4ABCDEF0123-1");
		r.sender = span("alice@example.com");
		r.envid = span("QQ314159");
		r.ret = ret;
		r.arrival_unix_s = 1699990000;
		r.now_unix_s = 1700000000;
		r.original_bytes = orig.size();
		r.original_bytes_max = 10 * 1024 * 1024;
		r.rcpt = rcpt.data();
		r.rcpt_count = rcpt.size();
	}

	/* One DSN in pieces of at most piece bytes; returns its size, 0 on error. */
	size_t write(size_t piece)
	{
		rm_dsn_writer w;
		const uint8_t *in = reinterpret_cast<const uint8_t *>(orig.data());
		size_t n = 0, pos = 0, used;

		if (rm_dsn_begin(&w, &r) != RM_DSN_OK)
			return 0;
		rm_dsn_scan_original(&w, in, orig.size());
		while (!rm_dsn_head_done(&w))
			n += rm_dsn_write_head(&w, out.data() + n, std::min(piece, out.size() - n));
		while (pos < orig.size() && !rm_dsn_original_done(&w)) {
			n += rm_dsn_feed_original(&w, in + pos, orig.size() - pos, out.data() + n,
						  std::min(piece, out.size() - n), &used);
			pos += used;
		}
		while (!rm_dsn_done(&w))
			n += rm_dsn_end(&w, out.data() + n, std::min(piece, out.size() - n));
		return n;
	}
};

void run(benchmark::State &state, size_t rcpts, rm_smtp_ret ret, size_t piece)
{
	Fixture f(rcpts, ret);
	size_t bytes = 0;
	bool ok = true;

	for (auto _ : state) {
		size_t n = f.write(piece);

		benchmark::DoNotOptimize(f.out.data());
		ok &= n > 0;
		bytes += n;
	}
	if (!ok)
		state.SkipWithError("DSN failed");
	state.SetBytesProcessed(static_cast<int64_t>(bytes));
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_DsnFull4k(benchmark::State &state)
{
	run(state, 1, RM_SMTP_RET_FULL, 4096);
}

void BM_DsnHeaders4k(benchmark::State &state)
{
	run(state, 1, RM_SMTP_RET_NONE, 4096);
}

void BM_DsnFull4kPieces256(benchmark::State &state)
{
	run(state, 1, RM_SMTP_RET_FULL, 256);
}

void BM_DsnFiveRcptHeaders(benchmark::State &state)
{
	run(state, 5, RM_SMTP_RET_HDRS, 4096);
}

}  // namespace

BENCHMARK(BM_DsnFull4k);
BENCHMARK(BM_DsnHeaders4k);
BENCHMARK(BM_DsnFull4kPieces256);
BENCHMARK(BM_DsnFiveRcptHeaders);
