/*
 * NAME
 *	bench_smtp_addr - throughput of proto/smtp_addr
 * DESCRIPTION
 *	Parses a mix of realistic RCPT/MAIL paths (plain dot-strings of
 *	typical length, a quoted local part, an IPv4 and an IPv6 literal, a
 *	source route, the null path, a UTF-8 address under SMTPUTF8), one
 *	after another, as the SMTP session does for every MAIL and RCPT.
 *	Reported as paths/second and bytes/second; a second benchmark adds the
 *	policy work on each (domain normalised into a buffer, postmaster test).
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/smtp_addr.h"
}

namespace {

struct sample {
	std::string text;
	unsigned flags;
};

std::vector<sample> paths()
{
	return {
		{ "<alice.sender@client.example.org>", 0 },
		{ "<bob@relay.example.net>", 0 },
		{ "<carol.long-name+tag@mail.relay.example.net>", 0 },
		{ "<dave_99@example.com>", 0 },
		{ "<\"john smith\"@example.com>", 0 },
		{ "<postmaster@[192.0.2.17]>", 0 },
		{ "<ops@[IPv6:2001:db8::25]>", 0 },
		{ "<@hop1.example,@hop2.example:eve@example.org>", 0 },
		{ "<>", RM_SMTP_ADDR_NULL_OK },
		{ "<j\xc3\xb6rg@m\xc3\xbcller.example>", RM_SMTP_ADDR_UTF8 },
		{ "<bounce-12345-frank=example.org@lists.example.com>", 0 },
		{ "<Postmaster>", RM_SMTP_ADDR_POSTMASTER },
	};
}

size_t total_bytes(const std::vector<sample> &v)
{
	size_t n = 0;

	for (const auto &s : v)
		n += s.text.size();
	return n;
}

void BM_SmtpPathParse(benchmark::State &state)
{
	const std::vector<sample> v = paths();
	size_t parsed = 0;

	for (auto _ : state) {
		for (const auto &s : v) {
			struct rm_smtp_path p;
			size_t consumed;
			enum rm_smtp_addr_err err = rm_smtp_path_parse(
				reinterpret_cast<const uint8_t *>(s.text.data()), s.text.size(), s.flags,
				nullptr, &p, &consumed);

			benchmark::DoNotOptimize(p);
			parsed += err == RM_SMTP_ADDR_OK;
		}
	}
	if (parsed != state.iterations() * v.size())
		state.SkipWithError("a sample failed to parse");
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * total_bytes(v)));
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * v.size()));
}

void BM_SmtpPathParsePolicy(benchmark::State &state)
{
	const std::vector<sample> v = paths();
	uint8_t norm[RM_SMTP_DOMAIN_BYTES_MAX];
	size_t postmasters = 0;

	for (auto _ : state) {
		for (const auto &s : v) {
			struct rm_smtp_path p;
			size_t consumed;

			rm_smtp_path_parse(reinterpret_cast<const uint8_t *>(s.text.data()), s.text.size(),
					   s.flags, nullptr, &p, &consumed);
			ssize_t n = rm_smtp_domain_normalise(p.domain.text, p.domain.len, norm, sizeof(norm));

			benchmark::DoNotOptimize(n);
			benchmark::DoNotOptimize(norm);
			postmasters += rm_smtp_path_is_postmaster(&p);
		}
	}
	if (postmasters != 2 * static_cast<size_t>(state.iterations()))
		state.SkipWithError("postmaster count");
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * total_bytes(v)));
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * v.size()));
}

}  // namespace

BENCHMARK(BM_SmtpPathParse);
BENCHMARK(BM_SmtpPathParsePolicy);
