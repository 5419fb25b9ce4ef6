/*
 * NAME
 *	bench_proxy_proto - throughput of proto/proxy_proto
 * DESCRIPTION
 *	Parses the header a proxy sends before each connection, as it
 *	arrives in one receive: a v1 TCP4 line and a v1 TCP6 line (the text
 *	form: address parsing dominates), a v2 IPv6 header without TLVs (a
 *	few compares and copies), and a v2 IPv6 header as HAProxy sends it
 *	with TLVs (authority, SSL with version and CN sub-TLVs, CRC32C: the
 *	CRC dominates).  Reported as headers/second and bytes/second.  The
 *	headers are made by the codec's own writers plus the TLVs built here.
 */
#include <benchmark/benchmark.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/proxy_proto.h"
}

namespace {

std::vector<uint8_t> v1_tcp4()
{
	static const char line[] = "PROXY TCP4 203.0.113.195 198.51.100.25 56324 25\r\n";

	return std::vector<uint8_t>(line, line + sizeof(line) - 1);
}

std::vector<uint8_t> v1_tcp6()
{
	static const char line[] = "PROXY TCP6 2001:db8:85a3::8a2e:370:7334 2001:db8:1::25 49152 587\r\n";

	return std::vector<uint8_t>(line, line + sizeof(line) - 1);
}

std::vector<uint8_t> v2_ipv6()
{
	struct sockaddr_in6 s = {}, d = {};
	uint8_t buf[RM_PROXY_V2_WRITE_BYTES_MAX];

	s.sin6_family = d.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8:85a3::8a2e:370:7334", &s.sin6_addr);
	inet_pton(AF_INET6, "2001:db8:1::25", &d.sin6_addr);
	s.sin6_port = htons(49152);
	d.sin6_port = htons(587);
	ssize_t n = rm_proxy_write_v2(reinterpret_cast<const sockaddr *>(&s),
				      reinterpret_cast<const sockaddr *>(&d), buf, sizeof(buf));
	return std::vector<uint8_t>(buf, buf + (n > 0 ? n : 0));
}

void put_tlv(std::vector<uint8_t> &h, uint8_t type, const std::string &value)
{
	h.push_back(type);
	h.push_back(static_cast<uint8_t>(value.size() >> 8));
	h.push_back(static_cast<uint8_t>(value.size()));
	h.insert(h.end(), value.begin(), value.end());
}

std::vector<uint8_t> v2_ipv6_tlvs()
{
	std::vector<uint8_t> h = v2_ipv6(), sub;
	std::string ssl("\x01\0\0\0\0", 5);

	put_tlv(h, RM_PP2_TYPE_AUTHORITY, "mail.example.org");
	put_tlv(sub, 0x21, "TLSv1.3");
	put_tlv(sub, 0x22, "client.example.org");
	ssl.append(sub.begin(), sub.end());
	put_tlv(h, RM_PP2_TYPE_SSL, ssl);
	put_tlv(h, RM_PP2_TYPE_CRC32C, std::string(4, '\0'));
	size_t body = h.size() - RM_PROXY_V2_FIXED_BYTES;
	h[14] = static_cast<uint8_t>(body >> 8);
	h[15] = static_cast<uint8_t>(body);
	uint32_t crc = rm_proxy_crc32c(h.data(), h.size());
	for (int i = 0; i < 4; i++)
		h[h.size() - 4 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
	return h;
}

void run(benchmark::State &state, const std::vector<uint8_t> &hdr)
{
	struct rm_proxy_opts o;
	size_t good = 0;

	rm_proxy_opts_default(&o);
	for (auto _ : state) {
		struct rm_proxy_header h;

		good += rm_proxy_parse(hdr.data(), hdr.size(), &o, &h) == RM_PROXY_OK && h.consumed == hdr.size();
		benchmark::DoNotOptimize(h);
	}
	if (good != static_cast<size_t>(state.iterations()))
		state.SkipWithError("the header failed to parse");
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * hdr.size()));
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_ProxyV1Tcp4(benchmark::State &state) { run(state, v1_tcp4()); }
void BM_ProxyV1Tcp6(benchmark::State &state) { run(state, v1_tcp6()); }
void BM_ProxyV2Ipv6(benchmark::State &state) { run(state, v2_ipv6()); }
void BM_ProxyV2Ipv6Tlvs(benchmark::State &state) { run(state, v2_ipv6_tlvs()); }

}  // namespace

BENCHMARK(BM_ProxyV1Tcp4);
BENCHMARK(BM_ProxyV1Tcp6);
BENCHMARK(BM_ProxyV2Ipv6);
BENCHMARK(BM_ProxyV2Ipv6Tlvs);
