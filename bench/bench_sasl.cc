/*
 * NAME
 *	bench_sasl - throughput of proto/sasl
 * DESCRIPTION
 *	What a session does with "AUTH PLAIN <initial-response>": the base64
 *	decode of a typical response (a 13-byte user name and a 12-byte
 *	password: 36 characters), the PLAIN parse of its result, and the two
 *	together; the same for the longest good PLAIN message (255 + 255 +
 *	1024 bytes, 2052 characters of base64), so the per-byte rate shows;
 *	one LOGIN field; and base64 encoding of 1 KiB.  Reported as
 *	operations/second and bytes/second of input.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/sasl.h"
}

namespace {

const uint8_t *u8(const std::string &s)
{
	return reinterpret_cast<const uint8_t *>(s.data());
}

std::string encode(const std::string &raw)
{
	std::string out(rm_base64_encoded_len(raw.size()), '\0');

	rm_base64_encode(u8(raw), raw.size(), &out[0], out.size());
	return out;
}

const std::string &typical_raw()
{
	static const std::string raw("\0demo@dev.test\0correcthorse", 27);
	return raw;
}

const std::string &longest_raw()
{
	static const std::string raw = std::string(RM_SASL_AUTHZID_BYTES_MAX, 'z') + '\0' +
				       std::string(RM_SASL_AUTHCID_BYTES_MAX, 'c') + '\0' +
				       std::string(RM_SASL_PASSWD_BYTES_MAX, 'p');
	return raw;
}

void decode(benchmark::State &state, const std::string &b64)
{
	std::vector<uint8_t> out(rm_base64_decoded_max(b64.size()));

	for (auto _ : state) {
		ssize_t n = rm_base64_decode(u8(b64), b64.size(), out.data(), out.size());

		benchmark::DoNotOptimize(n);
		benchmark::ClobberMemory();
	}
	state.SetItemsProcessed(state.iterations());
	state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(b64.size()));
}

void parse(benchmark::State &state, const std::string &raw)
{
	for (auto _ : state) {
		struct rm_sasl_plain p;

		benchmark::DoNotOptimize(rm_sasl_plain_parse(u8(raw), raw.size(), &p));
		benchmark::DoNotOptimize(p);
	}
	state.SetItemsProcessed(state.iterations());
	state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(raw.size()));
}

void decode_parse(benchmark::State &state, const std::string &b64)
{
	uint8_t out[RM_SASL_PLAIN_BYTES_MAX + 2];

	for (auto _ : state) {
		struct rm_sasl_plain p;
		ssize_t n = rm_base64_decode(u8(b64), b64.size(), out, sizeof(out));

		benchmark::DoNotOptimize(rm_sasl_plain_parse(out, static_cast<size_t>(n), &p));
		benchmark::DoNotOptimize(p);
	}
	state.SetItemsProcessed(state.iterations());
	state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(b64.size()));
}

void BM_Base64DecodeTypical(benchmark::State &state)
{
	decode(state, encode(typical_raw()));
}

void BM_PlainParseTypical(benchmark::State &state)
{
	parse(state, typical_raw());
}

void BM_DecodeAndParseTypical(benchmark::State &state)
{
	decode_parse(state, encode(typical_raw()));
}

void BM_Base64DecodeLongest(benchmark::State &state)
{
	decode(state, encode(longest_raw()));
}

void BM_PlainParseLongest(benchmark::State &state)
{
	parse(state, longest_raw());
}

void BM_DecodeAndParseLongest(benchmark::State &state)
{
	decode_parse(state, encode(longest_raw()));
}

void BM_LoginField(benchmark::State &state)
{
	static const std::string line = "ZGVtb0BkZXYudGVzdA==";	/* demo@dev.test */
	uint8_t out[RM_SASL_AUTHCID_BYTES_MAX];

	for (auto _ : state) {
		size_t n;

		benchmark::DoNotOptimize(rm_sasl_login_field(u8(line), line.size(), out, sizeof(out), &n));
		benchmark::DoNotOptimize(n);
	}
	state.SetItemsProcessed(state.iterations());
	state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(line.size()));
}

void BM_Base64Encode1K(benchmark::State &state)
{
	std::string raw(1024, '\0');
	std::string out(rm_base64_encoded_len(raw.size()), '\0');

	for (size_t i = 0; i < raw.size(); i++)
		raw[i] = static_cast<char>(i * 7);
	for (auto _ : state) {
		benchmark::DoNotOptimize(rm_base64_encode(u8(raw), raw.size(), &out[0], out.size()));
		benchmark::ClobberMemory();
	}
	state.SetItemsProcessed(state.iterations());
	state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(raw.size()));
}

}  // namespace

BENCHMARK(BM_Base64DecodeTypical);
BENCHMARK(BM_PlainParseTypical);
BENCHMARK(BM_DecodeAndParseTypical);
BENCHMARK(BM_Base64DecodeLongest);
BENCHMARK(BM_PlainParseLongest);
BENCHMARK(BM_DecodeAndParseLongest);
BENCHMARK(BM_LoginField);
BENCHMARK(BM_Base64Encode1K);
