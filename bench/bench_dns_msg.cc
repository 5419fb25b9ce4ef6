/*
 * NAME
 *	bench_dns_msg - throughput of proto/dns_msg and proto/mx
 * DESCRIPTION
 *	Decides where mail goes from a typical MX answer (three exchangers,
 *	two of equal preference, compressed names, an additional section of
 *	A records) and collects the addresses of an A answer: answers/second.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>

extern "C" {
#include "proto/dns_msg.h"
#include "proto/mx.h"
}

namespace {

std::string name(const std::string &n)
{
	std::string out;
	size_t p = 0;

	while (p < n.size()) {
		size_t dot = n.find('.', p);
		std::string l = n.substr(p, dot == std::string::npos ? std::string::npos : dot - p);

		out += static_cast<char>(l.size());
		out += l;
		p = dot == std::string::npos ? n.size() : dot + 1;
	}
	out += '\0';
	return out;
}

void put16(std::string &s, unsigned v)
{
	s += static_cast<char>((v >> 8) & 0xff);
	s += static_cast<char>(v & 0xff);
}

void rr(std::string &s, const std::string &owner, unsigned type, const std::string &rdata)
{
	s += owner;
	put16(s, type);
	put16(s, 1);
	put16(s, 0);
	put16(s, 300);
	put16(s, static_cast<unsigned>(rdata.size()));
	s += rdata;
}

std::string mx_answer()
{
	std::string s;
	const std::string ptr("\xc0\x0c", 2);

	put16(s, 0x1234);
	put16(s, 0x8180);
	put16(s, 1);
	put16(s, 3);
	put16(s, 0);
	put16(s, 3);
	s += name("example.org");
	put16(s, 15);
	put16(s, 1);
	for (int i = 0; i < 3; i++) {
		std::string rd;

		put16(rd, i == 2 ? 20 : 10);
		rd += std::string(1, 3) + "mx" + std::to_string(i) + ptr;
		rr(s, ptr, 15, rd);
	}
	for (int i = 0; i < 3; i++)
		rr(s, name("mx" + std::to_string(i) + ".example.org"), 1, std::string("\x7f\x00\x00\x01", 4));
	return s;
}

void BM_MxFromAnswer(benchmark::State &state)
{
	const std::string a = mx_answer();
	struct rm_mx_result r;
	uint64_t seed = 0;

	for (auto _ : state) {
		rm_mx_from_answer(reinterpret_cast<const uint8_t *>(a.data()), a.size(), "example.org", seed++, &r);
		benchmark::DoNotOptimize(r);
	}
	if (r.status != RM_MX_OK || r.count != 3)
		state.SkipWithError("unexpected result");
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * a.size()));
}
BENCHMARK(BM_MxFromAnswer);

void BM_Addresses(benchmark::State &state)
{
	std::string s;
	const std::string ptr("\xc0\x0c", 2);
	struct rm_mx_addrs a;

	put16(s, 1);
	put16(s, 0x8180);
	put16(s, 1);
	put16(s, 2);
	put16(s, 0);
	put16(s, 0);
	s += name("mx1.example.org");
	put16(s, 1);
	put16(s, 1);
	rr(s, ptr, 1, std::string("\x7f\x00\x00\x01", 4));
	rr(s, ptr, 1, std::string("\x7f\x00\x00\x02", 4));
	for (auto _ : state) {
		rm_mx_addresses(reinterpret_cast<const uint8_t *>(s.data()), s.size(), "mx1.example.org", &a);
		benchmark::DoNotOptimize(a);
	}
	if (a.status != RM_MX_OK || a.count != 2)
		state.SkipWithError("unexpected result");
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_Addresses);

}  // namespace
