/*
 * NAME
 *	bench_spool_format - throughput of core/spool_format and core/spool_recover
 * DESCRIPTION
 *	EncodeData: one DATA record of 1, 4 or 64 KiB of content copied into a
 *	buffer and checksummed (rm_spool_encode_data).  DataZeroCopy: what the
 *	writer does for writev: header, checksum of the content where it lies,
 *	trailer; no copy.  DecodeData: decode and verify the same records.
 *	All reported as content bytes/second.
 *
 *	RecoverScan: a 64 MiB in-memory segment of messages with 4 KiB of
 *	content (BEGIN with one recipient, one DATA, END; every other message
 *	then DELIVERED) recovered from scratch: header check, every record's
 *	checksum, the per-message content hash, the tables.  Reported as
 *	bytes/second and messages/second.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" {
#include "core/spool_format.h"
#include "core/spool_recover.h"
}

namespace {

constexpr uint64_t kT0UnixMs = 1767225600000ULL;
constexpr size_t kSegmentBytes = 64u << 20;
constexpr size_t kMessageContentBytes = 4096;

std::vector<uint8_t> content_of(size_t len)
{
	std::vector<uint8_t> c(len);

	for (size_t i = 0; i < len; i++)
		c[i] = static_cast<uint8_t>("abcdefghijklmnopqrstuvwxyz\r\n"[i % 28]);
	return c;
}

void BM_EncodeData(benchmark::State &state)
{
	const size_t len = static_cast<size_t>(state.range(0));
	const std::vector<uint8_t> content = content_of(len);
	std::vector<uint8_t> buf(RM_SPOOL_RECORD_BYTES(len));

	for (auto _ : state) {
		ssize_t n = rm_spool_encode_data(buf.data(), buf.size(), 42, content.data(), len);

		benchmark::DoNotOptimize(n);
		benchmark::ClobberMemory();
	}
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * len));
}

void BM_DataZeroCopy(benchmark::State &state)
{
	const size_t len = static_cast<size_t>(state.range(0));
	const std::vector<uint8_t> content = content_of(len);
	uint8_t hdr[RM_SPOOL_HEADER_BYTES];
	uint8_t trailer[RM_SPOOL_TRAILER_BYTES_MAX];

	for (auto _ : state) {
		rm_spool_data_header(hdr, 42, static_cast<uint32_t>(len));
		uint64_t sum = rm_spool_data_checksum(hdr, content.data(), len);
		size_t t = rm_spool_data_trailer_hash(trailer, sum, static_cast<uint32_t>(len));

		benchmark::DoNotOptimize(t);
		benchmark::ClobberMemory();
	}
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * len));
}

void BM_DecodeData(benchmark::State &state)
{
	const size_t len = static_cast<size_t>(state.range(0));
	const std::vector<uint8_t> content = content_of(len);
	std::vector<uint8_t> buf(RM_SPOOL_RECORD_BYTES(len));
	struct rm_spool_record rec;

	if (rm_spool_encode_data(buf.data(), buf.size(), 42, content.data(), len) <= 0) {
		state.SkipWithError("encode failed");
		return;
	}
	for (auto _ : state) {
		enum rm_spool_result res = rm_spool_decode(buf.data(), buf.size(), &rec);

		benchmark::DoNotOptimize(res);
		benchmark::DoNotOptimize(rec.payload);
	}
	if (rm_spool_decode(buf.data(), buf.size(), &rec) != RM_SPOOL_OK)
		state.SkipWithError("decode failed");
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * len));
}

/* Fills seg with whole messages until the next would not fit; returns the bytes used. */
size_t build_segment(std::vector<uint8_t> &seg, uint32_t *messages)
{
	const std::vector<uint8_t> content = content_of(kMessageContentBytes);
	const uint64_t hash = XXH3_64bits(content.data(), content.size());
	const char *from = "alice@client.example.org";
	const char *to = "bob@relay.example.net";
	struct rm_spool_envelope env = {};
	struct rm_spool_rcpt rcpt = {};
	struct rm_spool_segment h = { RM_SPOOL_VERSION, 0, 1, kT0UnixMs };
	struct rm_queue_id_gen gen;
	size_t at = 0;
	const size_t per_message_max = 512 + RM_SPOOL_RECORD_BYTES(kMessageContentBytes);

	env.received_unix_ms = kT0UnixMs;
	env.reverse_path = { from, strlen(from) };
	env.helo = { "client.example.org", 18 };
	env.client_addr = { "192.0.2.1", 9 };
	rcpt.addr = { to, strlen(to) };
	rm_queue_id_gen_init(&gen, 0, kT0UnixMs);
	at += static_cast<size_t>(rm_spool_encode_segment(seg.data(), seg.size(), &h));
	*messages = 0;
	while (seg.size() - at >= per_message_max) {
		uint64_t qid = rm_queue_id_gen_next(&gen, kT0UnixMs + *messages / 64);

		at += static_cast<size_t>(rm_spool_encode_begin(seg.data() + at, seg.size() - at, qid, &env,
								1, &rcpt, 1));
		at += static_cast<size_t>(rm_spool_encode_data(seg.data() + at, seg.size() - at, qid,
							       content.data(), content.size()));
		at += static_cast<size_t>(rm_spool_encode_end(seg.data() + at, seg.size() - at, qid,
							      content.size(), hash));
		if (*messages % 2 == 0)
			at += static_cast<size_t>(rm_spool_encode_delivered(seg.data() + at, seg.size() - at,
									    qid, true, nullptr, 0));
		(*messages)++;
	}
	return at;
}

void BM_RecoverScan(benchmark::State &state)
{
	std::vector<uint8_t> seg(kSegmentBytes);
	uint32_t messages = 0;
	const size_t used = build_segment(seg, &messages);
	const struct rm_recover_limits lim = { messages, 16, messages, messages, 4 };
	std::vector<uint8_t> arena(rm_recover_arena_bytes(&lim));
	struct rm_recover r;

	for (auto _ : state) {
		if (rm_recover_init(&r, &lim, arena.data(), arena.size()) != 0 ||
		    rm_recover_feed(&r, seg.data(), used) != 0 || rm_recover_finish(&r) != 0) {
			state.SkipWithError("recovery failed");
			return;
		}
		benchmark::DoNotOptimize(rm_recover_count(&r));
	}
	if (rm_recover_count(&r) != messages / 2 || rm_recover_stats(&r)->final != (messages + 1) / 2)
		state.SkipWithError("wrong recovery result");
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * used));
	state.counters["messages"] = benchmark::Counter(static_cast<double>(state.iterations()) * messages,
							benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_EncodeData)->Arg(1024)->Arg(4096)->Arg(65536);
BENCHMARK(BM_DataZeroCopy)->Arg(1024)->Arg(4096)->Arg(65536);
BENCHMARK(BM_DecodeData)->Arg(1024)->Arg(4096)->Arg(65536);
BENCHMARK(BM_RecoverScan)->Unit(benchmark::kMillisecond);
