/*
 * NAME
 *	bench_smtp_cmd - throughput of proto/smtp_cmd
 * DESCRIPTION
 *	Parses the command lines of typical SMTP transactions (as the line
 *	splitter hands them over, without CR LF): EHLO, MAIL FROM with SIZE
 *	and BODY, MAIL FROM with the DSN parameters, RCPT TO plain and with
 *	NOTIFY/ORCPT, DATA, BDAT, AUTH PLAIN with an initial response, RSET,
 *	NOOP, QUIT; and separately the cheapest and dearest lines alone.
 *	Reported as commands/second and bytes/second.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "proto/smtp_cmd.h"
}

namespace {

const std::vector<std::string> &session_lines()
{
	static const std::vector<std::string> lines = {
		"EHLO mail.client.example.org",
		"AUTH PLAIN AGFsaWNlAHNlY3JldHBhc3N3b3Jk",
		"MAIL FROM:<alice.sender@client.example.org> SIZE=48213 BODY=8BITMIME",
		"RCPT TO:<bob@relay.example.net>",
		"RCPT TO:<carol.long-name@relay.example.net> NOTIFY=SUCCESS,FAILURE "
		"ORCPT=rfc822;carol.long-name@relay.example.net",
		"RCPT TO:<dave@relay.example.net>",
		"DATA",
		"MAIL FROM:<bounces+1234@lists.example.com> RET=HDRS ENVID=QQ314159",
		"RCPT TO:<erin@relay.example.net>",
		"BDAT 65536 LAST",
		"RSET",
		"NOOP",
		"QUIT",
	};
	return lines;
}

void run(benchmark::State &state, const std::vector<std::string> &lines)
{
	struct rm_smtp_cmd_opts o;
	size_t bytes = 0, good = 0;

	rm_smtp_cmd_opts_default(&o);
	for (const auto &l : lines)
		bytes += l.size();
	for (auto _ : state) {
		for (const auto &l : lines) {
			struct rm_smtp_cmd c;

			good += rm_smtp_cmd_parse(reinterpret_cast<const uint8_t *>(l.data()), l.size(), &o,
						  &c) == RM_SMTP_OK;
			benchmark::DoNotOptimize(c);
		}
	}
	if (good != static_cast<size_t>(state.iterations()) * lines.size())
		state.SkipWithError("a line failed to parse");
	state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * lines.size()));
}

void BM_SmtpCmdSession(benchmark::State &state) { run(state, session_lines()); }
void BM_SmtpCmdData(benchmark::State &state) { run(state, { "DATA" }); }
void BM_SmtpCmdRcpt(benchmark::State &state) { run(state, { "RCPT TO:<bob@relay.example.net>" }); }
void BM_SmtpCmdMailAllParams(benchmark::State &state)
{
	run(state, { "MAIL FROM:<alice@example.org> SIZE=48213 BODY=8BITMIME SMTPUTF8 RET=HDRS "
		     "ENVID=QQ+2B314159 AUTH=<>" });
}

}  // namespace

BENCHMARK(BM_SmtpCmdSession);
BENCHMARK(BM_SmtpCmdData);
BENCHMARK(BM_SmtpCmdRcpt);
BENCHMARK(BM_SmtpCmdMailAllParams);
