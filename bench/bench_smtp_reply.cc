/*
 * NAME
 *	bench_smtp_reply - throughput of proto/smtp_reply
 * DESCRIPTION
 *	Builds the replies an SMTP session sends most: a one-line reply with
 *	an enhanced code ("250 2.1.5 Ok"), a three-line error with enhanced
 *	codes, a status struct as the command parser returns it, and the EHLO
 *	answer with nine keywords.  Reported as replies/second and bytes/second
 *	of reply written.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>

extern "C" {
#include "proto/smtp_reply.h"
}

namespace {

void finish(benchmark::State &state, size_t bytes, bool ok)
{
	if (!ok)
		state.SkipWithError("reply failed");
	state.SetBytesProcessed(static_cast<int64_t>(bytes));
	state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_SmtpReplyLine(benchmark::State &state)
{
	uint8_t buf[512];
	size_t bytes = 0;
	bool ok = true;

	for (auto _ : state) {
		ssize_t n = rm_smtp_reply_line(buf, sizeof(buf), 250, "2.1.5", "Ok");

		benchmark::DoNotOptimize(buf);
		ok &= n > 0;
		bytes += static_cast<size_t>(n);
	}
	finish(state, bytes, ok);
}

void BM_SmtpReplyStatus(benchmark::State &state)
{
	const struct rm_smtp_status st = { 501, "5.1.3", "Bad recipient address syntax" };
	uint8_t buf[512];
	size_t bytes = 0;
	bool ok = true;

	for (auto _ : state) {
		ssize_t n = rm_smtp_reply_status(buf, sizeof(buf), &st);

		benchmark::DoNotOptimize(buf);
		ok &= n > 0;
		bytes += static_cast<size_t>(n);
	}
	finish(state, bytes, ok);
}

void BM_SmtpReplyMultiLine(benchmark::State &state)
{
	static const char *const lines[] = {
		"The email account that you tried to reach does not exist.",
		"Please try double-checking the recipient's email address",
		"for typos or unnecessary spaces.",
	};
	uint8_t buf[1024];
	size_t bytes = 0;
	bool ok = true;

	for (auto _ : state) {
		struct rm_smtp_reply r;

		rm_smtp_reply_begin(&r, buf, sizeof(buf), 550, "5.1.1");
		for (const char *l : lines)
			rm_smtp_reply_add(&r, l, strlen(l));
		ssize_t n = rm_smtp_reply_end(&r);

		benchmark::DoNotOptimize(buf);
		ok &= n > 0;
		bytes += static_cast<size_t>(n);
	}
	finish(state, bytes, ok);
}

void BM_SmtpReplyEhlo(benchmark::State &state)
{
	static const char *const kw[] = {
		"PIPELINING", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
		"CHUNKING", "DSN", "STARTTLS", "AUTH PLAIN LOGIN",
	};
	uint8_t buf[1024];
	size_t bytes = 0;
	bool ok = true;

	for (auto _ : state) {
		ssize_t n = rm_smtp_reply_ehlo(buf, sizeof(buf), "mx.relay.example.net",
					       "Hello client.example.org [192.0.2.44]", kw, 9);

		benchmark::DoNotOptimize(buf);
		ok &= n > 0;
		bytes += static_cast<size_t>(n);
	}
	finish(state, bytes, ok);
}

}  // namespace

BENCHMARK(BM_SmtpReplyLine);
BENCHMARK(BM_SmtpReplyStatus);
BENCHMARK(BM_SmtpReplyMultiLine);
BENCHMARK(BM_SmtpReplyEhlo);
