/*
 * NAME
 *	route - where a recipient goes, and when a failed one is tried again (see route.h)
 */
#include "core/route.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/maps.h"
#include "proto/smtp_addr.h"

static bool is_ip(const char *s)
{
	uint8_t tmp[16];

	return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

static void lower(char *s)
{
	for (; *s != '\0'; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s + ('a' - 'A'));
}

/* A port as written after the colon; the default when it is not a port. */
static uint16_t port_of(const char *text, uint16_t default_port)
{
	char *end;
	unsigned long v = strtoul(text, &end, 10);

	return end != text && *end == '\0' && v > 0 && v <= 65535 ? (uint16_t)v : default_port;
}

static void key_make(struct rm_route *r)
{
	snprintf(r->key, sizeof(r->key), "%s:%s:%u%s", r->kind == RM_ROUTE_MX ? "mx" : "host", r->name, r->port,
		 r->smarthost ? ":auth" : "");
}

void rm_route_nexthop_parse(const char *text, uint16_t default_port, struct rm_route *out)
{
	const char *host = text, *colon = NULL;
	size_t n;

	memset(out, 0, sizeof(*out));
	out->kind = RM_ROUTE_MX;
	out->port = default_port;
	if (text[0] == '[') {
		const char *end;

		host = text + 1;
		end = strchr(host, ']');
		n = end != NULL ? (size_t)(end - host) : strlen(host);
		colon = end != NULL && end[1] == ':' ? end + 1 : NULL;
		out->kind = RM_ROUTE_HOST;
	} else {
		/* "host:port"; a bare IPv6 address has several colons and no port. */
		colon = strchr(text, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL)
			colon = NULL;
		n = colon != NULL ? (size_t)(colon - text) : strlen(text);
	}
	if (n > RM_ROUTE_NAME_MAX)
		n = RM_ROUTE_NAME_MAX;
	memcpy(out->name, host, n);
	out->name[n] = '\0';
	lower(out->name);
	if (colon != NULL)
		out->port = port_of(colon + 1, default_port);
	if (is_ip(out->name))
		out->kind = RM_ROUTE_HOST;
	key_make(out);
}

enum rm_tls_policy rm_route_tls_policy(const struct rm_route_policy *p, const char *domain, const char *nexthop)
{
	const char *v = NULL;

	if (p->tls_policy_map != NULL) {
		if (nexthop != NULL)
			v = rm_map_get(p->tls_policy_map, nexthop, strlen(nexthop));
		if (v == NULL && domain != NULL && domain[0] != '\0')
			v = rm_map_get(p->tls_policy_map, domain, strlen(domain));
	}
	if (v == NULL)
		return p->tls_default;
	return strcmp(v, "none") == 0 ? RM_TLS_POLICY_NONE : strcmp(v, "encrypt") == 0 ? RM_TLS_POLICY_ENCRYPT
	     : strcmp(v, "verify") == 0 ? RM_TLS_POLICY_VERIFY : RM_TLS_POLICY_MAY;
}

void rm_route_recipient(const struct rm_route_policy *p, const char *addr, struct rm_route *out)
{
	char domain[RM_SMTP_DOMAIN_BYTES_MAX + 2] = "";
	const char *at = strrchr(addr, '@'), *nexthop = NULL;
	bool smarthost = false;

	if (at != NULL) {
		ssize_t n = rm_smtp_domain_normalise((const uint8_t *)at + 1, strlen(at + 1), (uint8_t *)domain,
						     sizeof(domain) - 1);

		domain[n > 0 ? n : 0] = '\0';
	}
	if (domain[0] != '\0' && p->relay_domains != NULL)
		nexthop = rm_map_get(p->relay_domains, domain, strlen(domain));
	if (nexthop == NULL && p->smarthost != NULL && p->smarthost[0] != '\0') {
		nexthop = p->smarthost;
		smarthost = true;
	}
	if (nexthop != NULL) {
		rm_route_nexthop_parse(nexthop, p->port, out);
	} else if (domain[0] == '[') {
		/* An address literal: that address (RFC 5321 4.1.3; IPv6 ones carry "IPv6:"). */
		const char *lit = domain + 1;
		size_t n;

		if (strncmp(lit, "ipv6:", 5) == 0)
			lit += 5;
		n = strcspn(lit, "]");
		memset(out, 0, sizeof(*out));
		snprintf(out->name, sizeof(out->name), "%.*s", (int)n, lit);
		out->kind = RM_ROUTE_HOST;
		out->port = p->port;
	} else {
		memset(out, 0, sizeof(*out));
		snprintf(out->name, sizeof(out->name), "%.254s",
			 domain[0] != '\0' ? domain : p->local_hostname != NULL ? p->local_hostname : "");
		lower(out->name);
		out->kind = RM_ROUTE_MX;
		out->port = p->port;
	}
	out->smarthost = smarthost;
	out->tls = rm_route_tls_policy(p, domain, nexthop);
	key_make(out);
}

uint64_t rm_retry_backoff_ms(const struct rm_retry_policy *p, uint32_t attempts)
{
	uint64_t ms = p->initial_ms;

	/* Bounded: at most 64 rounds, and doubling stops at max_ms before it could overflow. */
	for (uint32_t i = 0; i < attempts && i < 64 && ms < p->max_ms; i++)
		ms = ms > p->max_ms / 2 ? p->max_ms : ms * 2;
	return ms < p->max_ms ? ms : p->max_ms;
}

void rm_retry_decide(const struct rm_retry_policy *p, const struct rm_retry_state *s, struct rm_retry_verdict *out)
{
	uint64_t age = s->now_ms > s->received_ms ? s->now_ms - s->received_ms : 0;

	memset(out, 0, sizeof(*out));
	if (age >= p->lifetime_ms) {
		out->expired = true;
		return;
	}
	out->next_attempt_ms = s->now_ms + rm_retry_backoff_ms(p, s->attempts);
	if (p->delay_warning_ms > 0 && age >= p->delay_warning_ms) {
		uint64_t prev_ms;

		if (s->attempts == 0) {
			out->delay_warning = true;	/* the first attempt is already past the mark */
			return;
		}
		prev_ms = (s->due_ms != 0 ? s->due_ms : s->now_ms) - rm_retry_backoff_ms(p, s->attempts - 1);
		out->delay_warning = prev_ms < s->received_ms + p->delay_warning_ms;
	}
}
