/*
 * NAME
 *	bench_smtp_data - throughput of proto/smtp_data
 * DESCRIPTION
 *	Decodes a realistic 64 KiB message (a header block, a text part with
 *	lines of 40-78 bytes, a base64 attachment in 76-byte lines, a few
 *	stuffed dots, CR LF "." CR LF) and a dot-heavy one of the same size
 *	(every line starts with a stuffed dot, so every line costs a span),
 *	fed whole and in 4096-byte receive chunks, REJECT mode (the default),
 *	and the realistic one in NORMALISE mode too; and a 64 KiB binary BDAT
 *	chunk.  Spans are handed to a sink that only sums them, as the spool
 *	would take them.  Reported as bytes/second of input.
 */
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/smtp_data.h"
}

namespace {

constexpr size_t kMessageBytes = 64 * 1024;

std::vector<uint8_t> realistic()
{
	std::string m =
		"Received: from client.example.org (client.example.org [192.0.2.44])\r\n"
		"\tby mx.relay.example.net with ESMTPS id 4Xq2Lm0Zz9; Tue, 1 Dec 2026 21:22:00 +0000\r\n"
		"From: Alice Sender <alice.sender@client.example.org>\r\n"
		"To: Bob <bob@relay.example.net>\r\n"
		"Subject: Quarterly figures, as discussed\r\n"
		"Date: Tue, 1 Dec 2026 21:21:58 +0000\r\n"
		"Message-ID: <20261201212158.12345@client.example.org>\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n\r\n";
	static const char *const text[] = {
		"Hello Bob,",
		"here are the figures for the last quarter, with the notes from the meeting.",
		"..and a line that started with a dot, stuffed by the client.",
		"Revenue went up a little; costs went up a little more than expected.",
		"Regards,",
		"Alice",
	};
	for (int i = 0; i < 24; i++)
		m += std::string(text[i % 6]) + "\r\n";
	m += "--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n";
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t x = 12345;
	while (m.size() + 80 + 12 < kMessageBytes) {
		for (int i = 0; i < 76; i++) {
			x = x * 1103515245u + 12345u;
			m += b64[(x >> 16) % 64];
		}
		m += "\r\n";
	}
	m += "--b1--\r\n";
	while (m.size() + 5 < kMessageBytes)
		m += "x";
	m += "\r\n.\r\n";
	return std::vector<uint8_t>(m.begin(), m.end());
}

std::vector<uint8_t> dot_heavy()
{
	std::string m;

	while (m.size() + 24 + 3 < kMessageBytes)
		m += "..a dot-stuffed line\r\n";
	while (m.size() + 3 < kMessageBytes)
		m += ".";
	m += "\r\n.\r\n";
	return std::vector<uint8_t>(m.begin(), m.end());
}

void decode(benchmark::State &state, const std::vector<uint8_t> &msg, size_t chunk_bytes,
	    enum rm_smtp_data_mode mode, bool bdat_binary)
{
	struct rm_smtp_data_opts o;
	struct rm_smtp_data_span spans[64];
	size_t content = 0, span_total = 0;

	rm_smtp_data_opts_default(&o);
	o.mode = mode;
	for (auto _ : state) {
		struct rm_smtp_data d;

		if (bdat_binary) {
			rm_smtp_data_init_bdat(&d, &o, true);
			rm_smtp_data_bdat_chunk(&d, msg.size(), true);
		} else {
			rm_smtp_data_init(&d, &o);
		}
		for (size_t pos = 0; pos < msg.size() && !rm_smtp_data_done(&d);) {
			size_t len = std::min(chunk_bytes, msg.size() - pos);
			const uint8_t *p = msg.data() + pos;

			while (len > 0 && !rm_smtp_data_done(&d)) {
				struct rm_smtp_data_out out = { spans, 64, SIZE_MAX, 0, 0 };
				size_t n = rm_smtp_data_feed(&d, p, len, &out);

				for (size_t i = 0; i < out.span_count; i++)
					content += spans[i].len;
				span_total += out.span_count;
				benchmark::DoNotOptimize(spans);
				p += n;
				len -= n;
				pos += n;
			}
		}
		if (!rm_smtp_data_done(&d))
			state.SkipWithError("message did not end");
	}
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * msg.size()));
	state.counters["spans/msg"] = static_cast<double>(span_total) /
				      static_cast<double>(std::max<int64_t>(1, state.iterations()));
	benchmark::DoNotOptimize(content);
}

const std::vector<uint8_t> &real_msg()
{
	static const std::vector<uint8_t> m = realistic();
	return m;
}

const std::vector<uint8_t> &dots_msg()
{
	static const std::vector<uint8_t> m = dot_heavy();
	return m;
}

void BM_SmtpDataRealisticWhole(benchmark::State &s) { decode(s, real_msg(), SIZE_MAX, RM_SMTP_DATA_REJECT, false); }
void BM_SmtpDataRealistic4K(benchmark::State &s) { decode(s, real_msg(), 4096, RM_SMTP_DATA_REJECT, false); }
void BM_SmtpDataRealisticNormalise4K(benchmark::State &s) { decode(s, real_msg(), 4096, RM_SMTP_DATA_NORMALISE, false); }
void BM_SmtpDataDotHeavyWhole(benchmark::State &s) { decode(s, dots_msg(), SIZE_MAX, RM_SMTP_DATA_REJECT, false); }
void BM_SmtpDataDotHeavy4K(benchmark::State &s) { decode(s, dots_msg(), 4096, RM_SMTP_DATA_REJECT, false); }
void BM_SmtpBdatBinary(benchmark::State &s) { decode(s, real_msg(), SIZE_MAX, RM_SMTP_DATA_REJECT, true); }

}  // namespace

BENCHMARK(BM_SmtpDataRealisticWhole);
BENCHMARK(BM_SmtpDataRealistic4K);
BENCHMARK(BM_SmtpDataRealisticNormalise4K);
BENCHMARK(BM_SmtpDataDotHeavyWhole);
BENCHMARK(BM_SmtpDataDotHeavy4K);
BENCHMARK(BM_SmtpBdatBinary);
