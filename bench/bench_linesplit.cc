/*
 * NAME
 *	bench_linesplit - throughput of proto/linesplit
 * DESCRIPTION
 *	A 64 KiB buffer of typical SMTP command lines (EHLO, MAIL FROM with
 *	parameters, a few RCPT TO, DATA, RSET, NOOP, QUIT; CR LF ends) is split
 *	fed whole, in 4096-byte chunks (a provided buffer of a small ring) and in
 *	17-byte chunks (a worst case: most lines cross a chunk and go through the
 *	hold buffer).  Reported as bytes/second and lines/second.
 */
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/linesplit.h"
}

namespace {

constexpr size_t kBufferBytes = 64 * 1024;
constexpr size_t kLineMax = 1000;	// RFC 5321 text line limit, terminator excluded

std::vector<uint8_t> smtp_lines()
{
	static const char *const lines[] = {
		"EHLO mail.client.example.org\r\n",
		"MAIL FROM:<alice.sender@client.example.org> SIZE=48213 BODY=8BITMIME\r\n",
		"RCPT TO:<bob@relay.example.net>\r\n",
		"RCPT TO:<carol.long-name@relay.example.net> NOTIFY=SUCCESS,FAILURE\r\n",
		"RCPT TO:<dave@relay.example.net>\r\n",
		"DATA\r\n",
		"RSET\r\n",
		"NOOP\r\n",
		"QUIT\r\n",
	};
	std::vector<uint8_t> buf;
	size_t i = 0;

	buf.reserve(kBufferBytes);
	// Whole lines only, so every pass ends on a line boundary.
	for (;;) {
		const char *line = lines[i++ % (sizeof(lines) / sizeof(lines[0]))];
		size_t len = strlen(line);

		if (buf.size() + len > kBufferBytes)
			break;
		buf.insert(buf.end(), line, line + len);
	}
	return buf;
}

void split(benchmark::State &state, size_t chunk_bytes)
{
	const std::vector<uint8_t> buf = smtp_lines();
	std::vector<uint8_t> hold(kLineMax + 1);
	struct rm_lines ls;
	size_t lines = 0;

	rm_lines_init(&ls, hold.data(), kLineMax);
	for (auto _ : state) {
		rm_lines_reset(&ls);
		for (size_t pos = 0; pos < buf.size(); pos += chunk_bytes) {
			size_t len = std::min(chunk_bytes, buf.size() - pos);
			const uint8_t *p = buf.data() + pos;

			while (len > 0) {
				struct rm_line line;
				size_t n = rm_lines_feed(&ls, p, len, &line);

				if (line.kind == RM_LINE_COMPLETE) {
					benchmark::DoNotOptimize(line.text);
					lines++;
				}
				p += n;
				len -= n;
			}
		}
	}
	if (lines == 0)
		state.SkipWithError("no lines split");
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * buf.size()));
	state.counters["lines"] = benchmark::Counter(static_cast<double>(lines),
						     benchmark::Counter::kIsRate);
}

void BM_LinesplitWhole(benchmark::State &state) { split(state, kBufferBytes); }
void BM_LinesplitChunks4096(benchmark::State &state) { split(state, 4096); }
void BM_LinesplitChunks17(benchmark::State &state) { split(state, 17); }

}  // namespace

BENCHMARK(BM_LinesplitWhole);
BENCHMARK(BM_LinesplitChunks4096);
BENCHMARK(BM_LinesplitChunks17);
