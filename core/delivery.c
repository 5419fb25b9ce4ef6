/*
 * NAME
 *	delivery - a worker's queue manager (see delivery.h)
 * DESCRIPTION
 *	Reading order: routing a recipient to a destination; destinations and
 *	their DNS resolution; connections and jobs; the end of an attempt
 *	(marks, retries, bounces); the tick that takes due messages.
 *
 *	Objects, all per worker and bounded:
 *	  attempt  a message in delivery: the entry, how many jobs are out,
 *	           each recipient's outcome;
 *	  job      some recipients of one attempt with one destination: waits
 *	           in the destination's queue, then runs on a connection;
 *	  dest     a next hop: its DNS results (the cache), its queue, its
 *	           connections;
 *	  link     an outbound connection (proto/smtp_out.h) and what it does.
 */
#include "core/delivery.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/dns.h"
#include "core/log.h"
#include "core/maps.h"
#include "core/route.h"
#include "core/spool.h"
#include "core/spool_recover.h"
#include "proto/dsn.h"
#include "proto/mx.h"
#include "proto/smtp_addr.h"
#include "proto/smtp_out.h"

#define DELIVERY_TICK_MS 20		/* how often due messages are looked for */
#define DELIVERY_TAKE_PER_TICK 512	/* messages taken off the queue per tick */
#define DEST_CANDIDATES_MAX 16		/* addresses tried per next hop */
#define DEST_HASH_BUCKETS 1024
#define DEST_RES_MIN_MS 1000		/* DNS results are kept at least this long */
#define REASON_BYTES_MAX RM_SMTP_OUT_TEXT_MAX
#define JOB_RESENDS_MAX 3		/* dead idle connections a job may meet before it defers */

enum outcome { OUT_PENDING = 0, OUT_SENT, OUT_BOUNCED, OUT_DEFERRED };

struct attempt {
	struct rm_queue_entry *e;
	struct rm_spool *sp;
	uint64_t started_ms;
	unsigned jobs_left;
	uint8_t *outcome;		/* per recipient of e (all of them, by index) */
	char **reason;			/* per recipient, NULL until known */
	char **relay;			/* "host[ip]" it went to, NULL until known */
	char (*status)[12];		/* per recipient: the enhanced status code, "" until known */
};

enum dest_res { DR_NONE = 0, DR_RESOLVING, DR_READY, DR_FAILED };

struct cand {
	char host[RM_DNS_NAME_TEXT_MAX + 1];
	union rm_sockaddr addr;
	socklen_t len;
};

struct job;
struct link;

struct dest {
	struct dest *hash_next;
	char key[RM_ROUTE_KEY_BYTES];
	enum rm_route_kind kind;
	char name[RM_DNS_NAME_TEXT_MAX + 1];
	uint16_t port;
	enum rm_tls_policy tls;
	bool smarthost;			/* AUTH with the configured credentials */
	/* DNS */
	enum dest_res res;
	bool res_permanent;		/* DR_FAILED: bounce (NXDOMAIN, null MX), else defer */
	const char *res_status;		/* DR_FAILED and permanent: the enhanced status code */
	char res_why[REASON_BYTES_MAX];
	uint64_t res_expires_ms;
	unsigned lookups_out;		/* A / AAAA queries still out while resolving */
	uint32_t res_ttl_s;
	unsigned mx_count;
	struct rm_mx_host mx[RM_MX_HOSTS_MAX];
	struct cand cand[DEST_CANDIDATES_MAX];
	unsigned cand_count;
	/* the same hosts' A and AAAA, gathered per host before ordering */
	struct cand per_host[RM_MX_HOSTS_MAX][2][RM_MX_ADDRS_MAX > 4 ? 4 : RM_MX_ADDRS_MAX];
	unsigned per_host_count[RM_MX_HOSTS_MAX][2];
	uint64_t dead_until_ms;
	char dead_why[REASON_BYTES_MAX];
	char dead_status[12];
	/* connections and jobs */
	unsigned links;			/* open (connecting, busy or idle) */
	struct link *idle;
	struct job *head, *tail;
	unsigned queued;
	uint64_t used_ms;		/* for dropping unused destinations */
};

struct job {
	struct job *next;
	struct attempt *att;
	struct dest *d;
	unsigned cand_next;		/* the candidate its next connection goes to */
	bool plaintext;			/* TLS failed there under "may": this connection goes without */
	unsigned resends;		/* times a dead idle connection handed it back unsent */
	struct rm_smtp_out_job oj;
};

struct link {
	struct rm_smtp_out *o;
	struct dest *d;
	struct job *job;		/* running, or the one it was opened for */
	struct link *next_idle;
	unsigned messages;
	struct rm_worker_timer idle_timer;
	struct worker_delivery *wd;
	bool idle_listed;
	unsigned cand;			/* which candidate it went to */
};

struct worker_delivery {
	struct rm_worker *w;
	struct rm_spool *sp;
	struct rm_dns *dns;
	struct rm_worker_timer tick;
	struct dest *hash[DEST_HASH_BUCKETS];
	unsigned dests;
	unsigned links;
	unsigned in_flight;
	uint64_t random;
	bool stopping;
};

static struct worker_delivery *deliveries[RM_WORKERS_MAX];
static struct rm_delivery_stats stats[RM_WORKERS_MAX];

const struct rm_delivery_stats *rm_delivery_stats(unsigned worker)
{
	return worker < RM_WORKERS_MAX ? &stats[worker] : NULL;
}

static struct rm_delivery_stats *st(const struct worker_delivery *wd)
{
	return &stats[rm_worker_index(wd->w)];
}

static const struct rm_config *cfg_of(const struct worker_delivery *wd)
{
	return rm_worker_config(wd->w);
}

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *xstrdup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static void kick_dest(struct worker_delivery *wd, struct dest *d);
static void job_finish_temp(struct worker_delivery *wd, struct job *j, const char *why, const char *status);
static void attempt_job_done(struct worker_delivery *wd, struct job *j);

/* ------------------------------------------------------------ routing */

static unsigned hash_key(const char *k)
{
	uint32_t h = 2166136261u;

	for (; *k != '\0'; k++)
		h = (h ^ (uint8_t)*k) * 16777619u;
	return h % DEST_HASH_BUCKETS;
}

/* Drop destinations nobody uses whose DNS results have expired, oldest first. */
static void dests_trim(struct worker_delivery *wd, uint64_t now)
{
	for (unsigned b = 0; b < DEST_HASH_BUCKETS && wd->dests >= cfg_of(wd)->limits.delivery_destinations_max; b++) {
		struct dest **pp = &wd->hash[b];

		while (*pp != NULL) {
			struct dest *d = *pp;

			if (d->links == 0 && d->queued == 0 && d->res != DR_RESOLVING && d->res_expires_ms <= now) {
				*pp = d->hash_next;
				free(d);
				wd->dests--;
				continue;
			}
			pp = &d->hash_next;
		}
	}
}

static void route_policy(const struct rm_config *cfg, struct rm_route_policy *p)
{
	*p = (struct rm_route_policy){
		.relay_domains = cfg->smtp.relay_domains,
		.smarthost = cfg->delivery.smarthost,
		.tls_policy_map = cfg->delivery.tls_policy_map,
		.tls_default = cfg->delivery.tls,
		.port = cfg->delivery.port,
		.local_hostname = cfg->smtp.hostname,
	};
}

/* The destination of one recipient address (core/route.h decides); NULL when no memory is left. */
static struct dest *route(struct worker_delivery *wd, const char *addr)
{
	struct rm_route_policy p;
	struct rm_route r;
	struct dest *d;
	unsigned b;

	route_policy(cfg_of(wd), &p);
	rm_route_recipient(&p, addr, &r);
	b = hash_key(r.key);
	for (d = wd->hash[b]; d != NULL; d = d->hash_next)
		if (strcmp(d->key, r.key) == 0)
			return d;
	dests_trim(wd, rm_worker_now_ms(wd->w));
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	snprintf(d->key, sizeof(d->key), "%s", r.key);
	snprintf(d->name, sizeof(d->name), "%s", r.name);
	d->kind = r.kind;
	d->port = r.port;
	d->smarthost = r.smarthost;
	d->tls = r.tls;
	d->hash_next = wd->hash[b];
	wd->hash[b] = d;
	wd->dests++;
	return d;
}

/* -------------------------------------------------------------- DNS */

struct lookup {
	struct worker_delivery *wd;
	struct dest *d;
	unsigned host;			/* index into d->mx */
	int family;
};

/* A candidate: host name (for TLS and logs) and one address of it. */
static void cand_set(struct cand *c, const char *host, int family, const uint8_t *addr, uint16_t port)
{
	memset(c, 0, sizeof(*c));
	memcpy(c->host, host, strnlen(host, sizeof(c->host) - 1));
	if (family == AF_INET) {
		c->addr.in4.sin_family = AF_INET;
		c->addr.in4.sin_port = htons(port);
		memcpy(&c->addr.in4.sin_addr, addr, 4);
		c->len = sizeof(c->addr.in4);
	} else {
		c->addr.in6.sin6_family = AF_INET6;
		c->addr.in6.sin6_port = htons(port);
		memcpy(&c->addr.in6.sin6_addr, addr, 16);
		c->len = sizeof(c->addr.in6);
	}
}

/*
 * How long the results are kept: their TTL, capped by limits.dns_ttl_max_ms,
 * but at least DEST_RES_MIN_MS.  A TTL of 0 (dnsmasq's own records, some
 * CDNs) or a cap of 0 must still serve the jobs that waited for the answer:
 * kick_dest would otherwise find them expired at once and look them up
 * again, for ever, without a connection.
 */
static void res_expire_set(struct worker_delivery *wd, struct dest *d)
{
	uint64_t ttl_ms = (uint64_t)d->res_ttl_s * 1000u, cap = cfg_of(wd)->limits.dns_ttl_max_ms;

	ttl_ms = ttl_ms < cap ? ttl_ms : cap;
	d->res_expires_ms = rm_worker_now_ms(wd->w) + (ttl_ms > DEST_RES_MIN_MS ? ttl_ms : DEST_RES_MIN_MS);
}

static void resolved(struct worker_delivery *wd, struct dest *d)
{
	/* Candidates in MX order; per host its IPv4 addresses, then IPv6. */
	d->cand_count = 0;
	for (unsigned h = 0; h < d->mx_count; h++)
		for (unsigned f = 0; f < 2; f++)
			for (unsigned i = 0; i < d->per_host_count[h][f] && d->cand_count < DEST_CANDIDATES_MAX; i++)
				d->cand[d->cand_count++] = d->per_host[h][f][i];
	if (d->cand_count == 0) {
		d->res = DR_FAILED;
		d->res_permanent = false;
		if (d->res_why[0] == '\0')
			snprintf(d->res_why, sizeof(d->res_why), "no address found for %s", d->name);
	} else {
		d->res = DR_READY;
	}
	res_expire_set(wd, d);
	kick_dest(wd, d);
}

static void ttl_min(struct dest *d, uint32_t ttl_s)
{
	if (ttl_s < d->res_ttl_s)
		d->res_ttl_s = ttl_s;
}

static void addr_done(void *arg, int status, const uint8_t *answer, size_t len)
{
	struct lookup *l = arg;
	struct worker_delivery *wd = l->wd;
	struct dest *d = l->d;
	unsigned h = l->host, f = l->family == AF_INET ? 0 : 1;

	free(l);
	if (wd->stopping)
		return;
	if (status == 0) {
		struct rm_mx_addrs a;

		rm_mx_addresses(answer, len, d->mx[h].name, &a);
		if (a.status == RM_MX_OK) {
			for (unsigned i = 0; i < a.count && d->per_host_count[h][f] < 4; i++) {
				cand_set(&d->per_host[h][f][d->per_host_count[h][f]++], d->mx[h].name, a.family, a.addr[i],
					 d->port);
			}
			ttl_min(d, a.ttl_s);
		} else if (a.status == RM_MX_TEMPFAIL) {
			snprintf(d->res_why, sizeof(d->res_why), "lookup of %s: %s", d->mx[h].name,
				 a.why != NULL ? a.why : "temporary DNS failure");
			ttl_min(d, 60);
		}
	} else {
		snprintf(d->res_why, sizeof(d->res_why), "lookup of %s: %s", d->mx[h].name, strerror(-status));
		ttl_min(d, 30);
	}
	if (--d->lookups_out == 0)
		resolved(wd, d);
}

static void lookup_addresses(struct worker_delivery *wd, struct dest *d)
{
	d->lookups_out = 0;
	memset(d->per_host_count, 0, sizeof(d->per_host_count));
	for (unsigned h = 0; h < d->mx_count; h++) {
		for (unsigned f = 0; f < 2; f++) {
			struct lookup *l = malloc(sizeof(*l));
			int rc;

			if (l == NULL)
				continue;
			*l = (struct lookup){ .wd = wd, .d = d, .host = h, .family = f == 0 ? AF_INET : AF_INET6 };
			d->lookups_out++;
			atomic_fetch_add_explicit(&st(wd)->dns_queries, 1, memory_order_relaxed);
			rc = rm_dns_query(wd->dns, d->mx[h].name, f == 0 ? ns_t_a : ns_t_aaaa, addr_done, l);
			if (rc < 0) {
				d->lookups_out--;
				free(l);
				snprintf(d->res_why, sizeof(d->res_why), "DNS queries full: %s", strerror(-rc));
			}
		}
	}
	if (d->lookups_out == 0)
		resolved(wd, d);
}

static void mx_done(void *arg, int status, const uint8_t *answer, size_t len)
{
	struct lookup *l = arg;
	struct worker_delivery *wd = l->wd;
	struct dest *d = l->d;
	struct rm_mx_result r;

	free(l);
	if (wd->stopping)
		return;
	if (status != 0) {
		d->res = DR_FAILED;
		d->res_permanent = false;
		snprintf(d->res_why, sizeof(d->res_why), "MX lookup of %s: %s", d->name, strerror(-status));
		d->res_expires_ms = rm_worker_now_ms(wd->w) + 30000;
		kick_dest(wd, d);
		return;
	}
	rm_mx_from_answer(answer, len, d->name, wd->random++, &r);
	d->res_ttl_s = r.ttl_s;
	switch (r.status) {
	case RM_MX_OK:
	case RM_MX_IMPLICIT:
		d->mx_count = r.count;
		memcpy(d->mx, r.hosts, sizeof(r.hosts[0]) * r.count);
		lookup_addresses(wd, d);
		return;
	case RM_MX_NULL:
	case RM_MX_NXDOMAIN:
		d->res = DR_FAILED;
		d->res_permanent = true;
		/* RFC 7505 4.2: 5.1.10 for a null MX; RFC 3463: 5.1.2 for no such system. */
		d->res_status = r.status == RM_MX_NULL ? "5.1.10" : "5.1.2";
		snprintf(d->res_why, sizeof(d->res_why), "%s: %s", d->name, rm_mx_status_text(r.status));
		break;
	case RM_MX_TEMPFAIL:
		d->res = DR_FAILED;
		d->res_permanent = false;
		snprintf(d->res_why, sizeof(d->res_why), "MX lookup of %s: %s", d->name,
			 r.why != NULL ? r.why : rm_mx_status_text(r.status));
		if (d->res_ttl_s > 60)
			d->res_ttl_s = 60;
		break;
	}
	res_expire_set(wd, d);
	kick_dest(wd, d);
}

static void resolve(struct worker_delivery *wd, struct dest *d)
{
	uint8_t ip[16];
	int family;

	d->res = DR_RESOLVING;
	d->res_why[0] = '\0';
	d->res_ttl_s = UINT32_MAX;
	d->cand_count = 0;
	family = d->kind != RM_ROUTE_HOST ? 0 : inet_pton(AF_INET, d->name, ip) == 1 ? AF_INET
	       : inet_pton(AF_INET6, d->name, ip) == 1 ? AF_INET6 : 0;
	if (family != 0) {
		cand_set(&d->cand[0], d->name, family, ip, d->port);
		d->cand_count = 1;
		d->res = DR_READY;
		d->res_expires_ms = UINT64_MAX;	/* an address does not expire */
		return;
	}
	if (d->kind == RM_ROUTE_HOST) {
		d->mx_count = 1;
		memset(&d->mx[0], 0, sizeof(d->mx[0]));
		snprintf(d->mx[0].name, sizeof(d->mx[0].name), "%s", d->name);
		lookup_addresses(wd, d);
		return;
	}
	{
		struct lookup *l = malloc(sizeof(*l));
		int rc;

		if (l == NULL) {
			d->res = DR_NONE;
			return;
		}
		*l = (struct lookup){ .wd = wd, .d = d };
		atomic_fetch_add_explicit(&st(wd)->dns_queries, 1, memory_order_relaxed);
		rc = rm_dns_query(wd->dns, d->name, ns_t_mx, mx_done, l);
		if (rc < 0) {
			free(l);
			d->res = DR_NONE;	/* tried again at the next kick */
		}
	}
}

/* ---------------------------------------------------- connections, jobs */

static const struct rm_smtp_out_ops link_ops;

static void link_idle_fire(struct rm_worker *w, void *arg)
{
	struct link *k = arg;

	(void)w;
	if (k->idle_listed && k->o != NULL)
		rm_smtp_out_quit(k->o);
}

static void idle_unlist(struct link *k)
{
	struct link **pp;

	if (!k->idle_listed)
		return;
	for (pp = &k->d->idle; *pp != NULL; pp = &(*pp)->next_idle)
		if (*pp == k) {
			*pp = k->next_idle;
			break;
		}
	k->idle_listed = false;
	rm_worker_timer_cancel(k->wd->w, &k->idle_timer);
}

static void run_job(struct link *k, struct job *j)
{
	struct worker_delivery *wd = k->wd;

	k->job = j;
	if (k->messages > 0)
		atomic_fetch_add_explicit(&st(wd)->connections_reused, 1, memory_order_relaxed);
	k->messages++;
	atomic_fetch_add_explicit(&st(wd)->attempts, 1, memory_order_relaxed);
	if (rm_smtp_out_start(k->o, &j->oj) != 0) {
		k->job = NULL;
		job_finish_temp(wd, j, "internal: connection not idle", "4.3.0");
	}
}

static bool open_link(struct worker_delivery *wd, struct dest *d, struct job *j)
{
	const struct rm_config *cfg = cfg_of(wd);
	struct rm_smtp_out_params p;
	const struct cand *c = &d->cand[j->cand_next];
	struct link *k = calloc(1, sizeof(*k));
	int err = 0;

	if (k == NULL)
		return false;
	memset(&p, 0, sizeof(p));
	p.addr = c->addr;
	p.addr_len = c->len;
	p.host = c->host;
	p.helo = cfg->delivery.helo_name[0] ? cfg->delivery.helo_name : cfg->smtp.hostname;
	p.tls = j->plaintext ? RM_TLS_POLICY_NONE : d->tls;
	p.tls_ca = cfg->delivery.tls_ca;
	if (d->smarthost && cfg->delivery.smarthost_user[0] != '\0') {
		p.auth_user = cfg->delivery.smarthost_user;
		p.auth_pass = cfg->delivery.smarthost_password;
	}
	p.timeout_ms = cfg->limits.smtp_client_timeout_ms;
	p.data_timeout_ms = cfg->limits.smtp_client_data_timeout_ms;
	k->d = d;
	k->wd = wd;
	k->job = j;
	k->cand = j->cand_next;
	k->idle_timer.fire = link_idle_fire;
	k->idle_timer.arg = k;
	k->o = rm_smtp_out_open(wd->w, &p, &link_ops, k, &err);
	if (k->o == NULL) {
		free(k);
		return false;
	}
	d->links++;
	wd->links++;
	atomic_fetch_add_explicit(&st(wd)->connections, 1, memory_order_relaxed);
	return true;
}

static unsigned dest_share(const struct worker_delivery *wd)
{
	const struct rm_config *cfg = cfg_of(wd);
	unsigned workers = cfg->workers ? cfg->workers : 1;

	return (cfg->limits.delivery_concurrency_per_destination + workers - 1) / workers;
}

static struct job *dequeue(struct dest *d)
{
	struct job *j = d->head;

	if (j != NULL) {
		d->head = j->next;
		if (d->head == NULL)
			d->tail = NULL;
		d->queued--;
		j->next = NULL;
	}
	return j;
}

static void enqueue(struct dest *d, struct job *j, bool front)
{
	j->next = NULL;
	if (front) {
		j->next = d->head;
		d->head = j;
		if (d->tail == NULL)
			d->tail = j;
	} else {
		if (d->tail != NULL)
			d->tail->next = j;
		else
			d->head = j;
		d->tail = j;
	}
	d->queued++;
}

/* Every queued job of d fails: permanent (DNS said no such domain) or with status (class 4). */
static void fail_queue(struct worker_delivery *wd, struct dest *d, bool permanent, const char *why,
		       const char *temp_status)
{
	const char *status = permanent ? (d->res_status != NULL ? d->res_status : "5.1.2") : temp_status;
	struct job *j;

	/* Each job's end may enqueue nothing here (a new attempt routes anew): bounded by queued. */
	for (unsigned guard = d->queued; guard > 0 && (j = dequeue(d)) != NULL; guard--) {
		for (uint32_t i = 0; i < j->oj.count; i++) {
			struct rm_smtp_out_result *r = &j->oj.res[i];

			r->code = permanent ? 550 : 451;
			snprintf(r->enhanced, sizeof(r->enhanced), "%s", status);
			snprintf(r->text, sizeof(r->text), "%s", why);
		}
		attempt_job_done(wd, j);
	}
}

static void kick_dest(struct worker_delivery *wd, struct dest *d)
{
	const struct rm_config *cfg = cfg_of(wd);
	uint64_t now = rm_worker_now_ms(wd->w);

	d->used_ms = now;
	if (d->queued == 0)
		return;
	if (d->dead_until_ms > now) {
		fail_queue(wd, d, false, d->dead_why, d->dead_status);
		return;
	}
	if (d->res == DR_RESOLVING)
		return;
	if (d->res == DR_NONE || d->res_expires_ms <= now) {
		/* Connections still open keep their addresses; new ones use fresh results. */
		resolve(wd, d);
		if (d->res == DR_RESOLVING || d->res == DR_NONE)
			return;
	}
	if (d->res == DR_FAILED) {
		fail_queue(wd, d, d->res_permanent, d->res_why, "4.4.3");	/* directory server failure */
		return;
	}
	/* Bounded by the queue: each round starts a job or stops. */
	for (unsigned guard = d->queued; guard > 0 && d->head != NULL; guard--) {
		struct link *k = d->idle;

		if (k != NULL) {
			idle_unlist(k);
			run_job(k, dequeue(d));
			continue;
		}
		if (d->links >= dest_share(wd) || wd->links >= cfg->limits.delivery_connections_max)
			return;
		{
			struct job *j = dequeue(d);

			if (j->cand_next >= d->cand_count)
				j->cand_next = 0;
			if (!open_link(wd, d, j)) {
				job_finish_temp(wd, j, "cannot open a connection", "4.3.0");
				continue;
			}
		}
	}
}

static void link_ready(struct rm_smtp_out *o, void *arg)
{
	struct link *k = arg;
	struct worker_delivery *wd = k->wd;
	struct dest *d = k->d;
	struct job *j;

	if (k->job != NULL && k->messages == 0) {
		/* Opened for this job. */
		j = k->job;
		run_job(k, j);
		return;
	}
	if (k->job != NULL)
		return;	/* busy */
	if (k->messages >= cfg_of(wd)->limits.delivery_messages_per_connection || wd->stopping) {
		rm_smtp_out_quit(o);
		return;
	}
	j = dequeue(d);
	if (j != NULL) {
		run_job(k, j);
		return;
	}
	k->next_idle = d->idle;
	d->idle = k;
	k->idle_listed = true;
	rm_worker_timer_set(wd->w, &k->idle_timer, cfg_of(wd)->limits.delivery_connection_idle_ms
			    ? cfg_of(wd)->limits.delivery_connection_idle_ms : 1);
}

static void link_job_done(struct rm_smtp_out *o, struct rm_smtp_out_job *oj, void *arg)
{
	struct link *k = arg;
	struct job *j = oj->arg;
	const char *relay = rm_smtp_out_peer(o);

	char where[RM_SMTP_OUT_TEXT_MAX];
	const char *tls = rm_smtp_out_tls(o);

	k->job = NULL;
	snprintf(where, sizeof(where), "%s:%u%s%s", relay, k->d->port, tls != NULL ? ", tls=" : "",
		 tls != NULL ? tls : "");
	for (uint32_t i = 0; i < oj->count; i++) {
		char **slot = &j->att->relay[oj->idx[i]];

		free(*slot);
		*slot = xstrdup_or_null(where);
	}
	attempt_job_done(k->wd, j);
}

static void link_closed(struct rm_smtp_out *o, struct rm_smtp_out_job *oj, const char *why, bool before_ready,
			void *arg)
{
	struct link *k = arg;
	struct worker_delivery *wd = k->wd;
	struct dest *d = k->d;
	struct job *j = oj != NULL ? oj->arg : (k->messages == 0 ? k->job : NULL);

	idle_unlist(k);
	d->links--;
	wd->links--;
	k->o = NULL;
	if (j != NULL) {
		const char *status = rm_smtp_out_status(o);

		if (!before_ready && rm_smtp_out_job_unsent(o) && j->resends < JOB_RESENDS_MAX) {
			/* An idle connection the server had dropped: nothing was sent, a new one takes it. */
			rm_debug(0, "delivery: %s; the job goes on another connection", why);
			j->resends++;
			enqueue(d, j, true);
		} else if (before_ready && rm_smtp_out_tls_failed(o) && !j->plaintext) {
			/* Opportunistic TLS that failed does not stop delivery: the same host in plaintext. */
			rm_info(0, "delivery: %s; trying %s again without TLS", why, rm_smtp_out_peer(o));
			j->plaintext = true;
			enqueue(d, j, true);
		} else if (before_ready && j->cand_next + 1 < d->cand_count) {
			/* RFC 5321 5.1: the next address, then the next exchanger. */
			rm_debug(0, "delivery: %s; trying the next host", why);
			j->cand_next++;
			j->plaintext = false;
			enqueue(d, j, true);
		} else {
			if (before_ready && d->cand_count > 0 && cfg_of(wd)->limits.delivery_dead_destination_ms > 0) {
				/* No host of this next hop answered: spare the rest for a while. */
				d->dead_until_ms = rm_worker_now_ms(wd->w) + cfg_of(wd)->limits.delivery_dead_destination_ms;
				snprintf(d->dead_why, sizeof(d->dead_why), "%s", why);
				snprintf(d->dead_status, sizeof(d->dead_status), "%s", status);
			}
			job_finish_temp(wd, j, why, status);
		}
	}
	free(k);
	if (!wd->stopping)
		kick_dest(wd, d);
}

static const struct rm_smtp_out_ops link_ops = {
	.ready = link_ready,
	.job_done = link_job_done,
	.closed = link_closed,
};

/* ----------------------------------------------------- end of attempts */

/* The job's recipients deferred with why and an RFC 3463 code of class 4. */
static void job_finish_temp(struct worker_delivery *wd, struct job *j, const char *why, const char *status)
{
	for (uint32_t i = 0; i < j->oj.count; i++) {
		struct rm_smtp_out_result *r = &j->oj.res[i];

		r->code = 0;
		snprintf(r->enhanced, sizeof(r->enhanced), "%s", status != NULL && status[0] == '4' ? status : "4.0.0");
		snprintf(r->text, sizeof(r->text), "%s", why);
	}
	attempt_job_done(wd, j);
}

static void log_outcome(struct worker_delivery *wd, const struct attempt *a, uint32_t i, const char *status)
{
	char id[RM_QUEUE_ID_TEXT_BYTES];
	uint64_t now = unix_ms();
	const struct rm_queue_entry *e = a->e;
	const char *why = a->reason[i] != NULL ? a->reason[i] : "";
	const char *said = strstr(why, " said: ");

	/* Postfix's delivery line: the relay once, the reply as the server gave it. */
	rm_queue_id_format(e->qid, id);
	rm_info(0, "%s: to=<%s>, relay=%s, delay=%.2f, dsn=%s, status=%s (%s)", id, e->rcpts[i].addr,
		a->relay[i] != NULL ? a->relay[i] : "none", (double)(now - e->received_unix_ms) / 1000.0,
		a->status[i][0] != '\0' ? a->status[i] : "4.0.0", status, said != NULL ? said + 7 : why);
	(void)wd;
}

struct bounce;
static struct bounce *bounce_make(struct worker_delivery *wd, struct attempt *a, uint32_t *idx, uint32_t n,
				  bool defer, uint64_t next_attempt_ms, const char *defer_why);
static struct bounce *delay_notice_make(struct worker_delivery *wd, struct attempt *a, const uint32_t *idx,
					uint32_t n);
static void bounce_spool(struct bounce *b);

/*
 * A mark that the spool could not write (it failed, -EIO / -ENOSPC, or no
 * memory): the message stays in delivery until a restart, which delivers it
 * again; never lost, and logged.
 */
static void mark_checked(const struct rm_queue_entry *e, int rc, const char *what)
{
	char id[RM_QUEUE_ID_TEXT_BYTES];

	if (rc == 0)
		return;
	rm_queue_id_format(e->qid, id);
	rm_error(0, "%s: cannot mark %s in the spool: %s; it is tried again after a restart", id, what,
		 strerror(-rc));
}

static void retry_policy(const struct rm_config *cfg, struct rm_retry_policy *p)
{
	*p = (struct rm_retry_policy){
		.initial_ms = cfg->limits.delivery_retry_initial_ms,
		.max_ms = cfg->limits.delivery_retry_max_ms,
		.lifetime_ms = cfg->limits.delivery_queue_lifetime_ms,
		.delay_warning_ms = cfg->limits.delivery_delay_warning_ms,
	};
}

static void attempt_free(struct attempt *a, uint32_t total)
{
	for (uint32_t i = 0; i < total; i++) {
		free(a->reason[i]);
		free(a->relay[i]);
	}
	free(a->reason);
	free(a->relay);
	free(a->status);
	free(a->outcome);
	free(a);
}

/* Every job of the attempt is done: the marks, the retry or the bounce. */
static void attempt_finish(struct worker_delivery *wd, struct attempt *a)
{
	const struct rm_config *cfg = cfg_of(wd);
	struct rm_queue_entry *e = a->e;
	uint32_t total = e->rcpt_total, nsent = 0, nbounce = 0, ndefer = 0;
	uint32_t *sent = calloc(total ? total : 1, sizeof(*sent));
	uint32_t *bounced = calloc(total ? total : 1, sizeof(*bounced));
	uint32_t *deferred = calloc(total ? total : 1, sizeof(*deferred));
	uint64_t now = unix_ms();
	struct rm_retry_policy rp;
	struct rm_retry_state rs = { .received_ms = e->received_unix_ms, .now_ms = now,
				     .due_ms = e->next_attempt_unix_ms, .attempts = e->attempts };
	struct rm_retry_verdict v;
	const char *defer_why = NULL;
	char expired_why[REASON_BYTES_MAX + 64];

	retry_policy(cfg, &rp);
	rm_retry_decide(&rp, &rs, &v);
	if (sent == NULL || bounced == NULL || deferred == NULL) {
		free(sent);
		free(bounced);
		free(deferred);
		mark_checked(e, rm_spool_mark_deferred(a->sp, e, now + cfg->limits.delivery_retry_initial_ms,
						       "out of memory"), "deferred");
		goto done;
	}
	for (uint32_t i = 0; i < total; i++) {
		if (e->rcpts[i].state != RM_RCPT_PENDING)
			continue;
		switch (a->outcome[i]) {
		case OUT_SENT:
			sent[nsent++] = i;
			log_outcome(wd, a, i, "sent");
			break;
		case OUT_BOUNCED:
			bounced[nbounce++] = i;
			log_outcome(wd, a, i, "bounced");
			break;
		default:
			if (v.expired) {
				snprintf(expired_why, sizeof(expired_why), "message expired in the queue; last error: %s",
					 a->reason[i] != NULL ? a->reason[i] : "none");
				free(a->reason[i]);
				a->reason[i] = strdup(expired_why);
				snprintf(a->status[i], sizeof(a->status[i]), "%s", "5.4.7");	/* delivery time expired */
				bounced[nbounce++] = i;
				log_outcome(wd, a, i, "bounced");
			} else {
				deferred[ndefer++] = i;
				defer_why = a->reason[i];
				log_outcome(wd, a, i, "deferred");
			}
			break;
		}
	}
	atomic_fetch_add_explicit(&st(wd)->delivered, nsent, memory_order_relaxed);
	atomic_fetch_add_explicit(&st(wd)->bounced, nbounce, memory_order_relaxed);
	atomic_fetch_add_explicit(&st(wd)->deferred, ndefer, memory_order_relaxed);
	if (ndefer > 0 && v.delay_warning) {
		/* Composed now, from the attempt's reasons; queued on its own: no mark waits for it. */
		struct bounce *n = delay_notice_make(wd, a, deferred, ndefer);

		if (n != NULL)
			bounce_spool(n);
	}
	/* Pending recipients (bounced, deferred) keep the entry alive through this mark. */
	if (nsent > 0)
		mark_checked(e, rm_spool_mark_delivered(a->sp, e, sent, nsent), "delivered");
	if (nbounce > 0) {
		/*
		 * The bounced recipients are marked once their report is durable
		 * (a crash before that sends the report again, never loses it), and
		 * the deferred ones after them: until then the message stays in
		 * delivery, so no new attempt takes the bounced recipients again.
		 */
		struct bounce *b = bounce_make(wd, a, bounced, nbounce, ndefer > 0, v.next_attempt_ms, defer_why);

		bounced = NULL;	/* the bounce owns it */
		if (b != NULL)
			bounce_spool(b);
	} else if (ndefer > 0) {
		mark_checked(e, rm_spool_mark_deferred(a->sp, e, v.next_attempt_ms, defer_why != NULL ? defer_why : ""),
			     "deferred");
	}
	free(sent);
	free(bounced);
	free(deferred);
done:
	/* The entry may be gone now: the attempt's own copies only. */
	attempt_free(a, total);
	wd->in_flight--;
	atomic_store_explicit(&st(wd)->in_flight, wd->in_flight, memory_order_relaxed);
}

static void attempt_job_done(struct worker_delivery *wd, struct job *j)
{
	struct attempt *a = j->att;

	for (uint32_t i = 0; i < j->oj.count; i++) {
		const struct rm_smtp_out_result *r = &j->oj.res[i];
		uint32_t ri = j->oj.idx[i];

		a->outcome[ri] = r->code / 100 == 2 ? OUT_SENT : r->code / 100 == 5 ? OUT_BOUNCED : OUT_DEFERRED;
		free(a->reason[ri]);
		a->reason[ri] = strdup(r->text);
		snprintf(a->status[ri], sizeof(a->status[ri]), "%s",
			 r->enhanced[0] != '\0' ? r->enhanced
			 : a->outcome[ri] == OUT_SENT ? "2.0.0" : a->outcome[ri] == OUT_BOUNCED ? "5.0.0" : "4.0.0");
	}
	free(j->oj.idx);
	free(j->oj.res);
	free(j);
	if (--a->jobs_left == 0)
		attempt_finish(wd, a);
}

/* A message off the queue: its pending recipients grouped by destination, one job each. */
static void attempt_start(struct worker_delivery *wd, struct rm_queue_entry *e)
{
	struct attempt *a = calloc(1, sizeof(*a));
	uint32_t total = e->rcpt_total;
	struct dest **dests = NULL;
	bool failed = false;

	if (a == NULL || (a->outcome = calloc(total, 1)) == NULL || (a->reason = calloc(total, sizeof(char *))) == NULL ||
	    (a->relay = calloc(total, sizeof(char *))) == NULL || (a->status = calloc(total, sizeof(*a->status))) == NULL ||
	    (dests = calloc(total, sizeof(*dests))) == NULL) {
		if (a != NULL) {
			free(a->outcome);
			free(a->reason);
			free(a->relay);
			free(a->status);
		}
		free(a);
		free(dests);
		mark_checked(e, rm_spool_mark_deferred(wd->sp, e, unix_ms() + 60000, "out of memory"), "deferred");
		return;
	}
	a->e = e;
	a->sp = wd->sp;
	a->started_ms = rm_worker_now_ms(wd->w);
	wd->in_flight++;
	atomic_store_explicit(&st(wd)->in_flight, wd->in_flight, memory_order_relaxed);
	for (uint32_t i = 0; i < total; i++)
		if (e->rcpts[i].state == RM_RCPT_PENDING && (dests[i] = route(wd, e->rcpts[i].addr)) == NULL)
			failed = true;
	/* One job per distinct destination (a hold on the attempt until all are made). */
	a->jobs_left = 1;
	for (uint32_t i = 0; i < total && !failed; i++) {
		struct job *j;
		uint32_t n = 0;

		if (dests[i] == NULL)
			continue;
		for (uint32_t k = i; k < total; k++)
			n += dests[k] == dests[i];
		j = calloc(1, sizeof(*j));
		if (j == NULL || (j->oj.idx = calloc(n, sizeof(uint32_t))) == NULL ||
		    (j->oj.res = calloc(n, sizeof(*j->oj.res))) == NULL) {
			if (j != NULL) {
				free(j->oj.idx);
				free(j);
			}
			failed = true;
			break;
		}
		j->att = a;
		j->d = dests[i];
		j->oj.sp = wd->sp;
		j->oj.e = e;
		j->oj.arg = j;
		for (uint32_t k = i; k < total; k++) {
			if (dests[k] == j->d) {
				j->oj.idx[j->oj.count++] = k;
				if (k != i)
					dests[k] = NULL;
			}
		}
		dests[i] = NULL;
		a->jobs_left++;
		enqueue(j->d, j, false);
		kick_dest(wd, j->d);
	}
	free(dests);
	if (failed)
		for (uint32_t i = 0; i < total; i++)
			if (e->rcpts[i].state == RM_RCPT_PENDING && a->outcome[i] == OUT_PENDING && a->reason[i] == NULL)
				a->reason[i] = strdup("out of memory");
	if (--a->jobs_left == 0)
		attempt_finish(wd, a);
}

/* ---------------------------------------------------------------- tick */

static void tick(struct rm_worker *w, void *arg)
{
	struct worker_delivery *wd = arg;
	const struct rm_config *cfg = rm_worker_config(w);
	uint64_t now = unix_ms();

	if (wd->stopping)
		return;
	for (unsigned n = 0; n < DELIVERY_TAKE_PER_TICK && wd->in_flight < cfg->limits.delivery_in_flight_max; n++) {
		struct rm_queue_entry *e = rm_queue_next_due(wd->sp, now);

		if (e == NULL)
			break;
		attempt_start(wd, e);
	}
	rm_worker_timer_set(w, &wd->tick, DELIVERY_TICK_MS);
}

void rm_delivery_kick(struct rm_worker *w)
{
	struct worker_delivery *wd = deliveries[rm_worker_index(w)];

	if (wd != NULL && !wd->stopping)
		rm_worker_timer_set(w, &wd->tick, 1);
}

int rm_delivery_start(struct rm_worker *w)
{
	const struct rm_config *cfg = rm_worker_config(w);
	struct worker_delivery *wd;
	struct rm_dns_options o = {
		.servers = cfg->delivery.dns_servers,
		.timeout_ms = cfg->limits.dns_timeout_ms,
		.tries = cfg->limits.dns_tries,
		.pending_max = cfg->limits.dns_queries_max,
	};
	char err[256];

	if (!cfg->delivery.enabled)
		return 0;
	wd = calloc(1, sizeof(*wd));
	if (wd == NULL)
		return -1;
	wd->w = w;
	wd->sp = rm_spool_of(w);
	if (wd->sp == NULL || rm_dns_open(w, &o, &wd->dns, err, sizeof(err)) != 0) {
		rm_error(0, "delivery on worker %u: %s", rm_worker_index(w), wd->sp == NULL ? "no spool" : err);
		free(wd);
		return -1;
	}
	if (getrandom(&wd->random, sizeof(wd->random), 0) != sizeof(wd->random))
		wd->random = rm_now_ms() ^ ((uint64_t)rm_worker_index(w) << 32);
	wd->tick.fire = tick;
	wd->tick.arg = wd;
	deliveries[rm_worker_index(w)] = wd;
	rm_worker_timer_set(w, &wd->tick, DELIVERY_TICK_MS);
	return 0;
}

void rm_delivery_stop(struct rm_worker *w)
{
	struct worker_delivery *wd = deliveries[rm_worker_index(w)];

	if (wd == NULL || wd->stopping)
		return;
	/* No new attempts; idle connections QUIT; busy ones finish their job (or
	 * the engine closes them at the shutdown deadline).  What is in delivery
	 * and unmarked is due again after a restart. */
	wd->stopping = true;
	rm_worker_timer_cancel(w, &wd->tick);
	for (unsigned b = 0; b < DEST_HASH_BUCKETS; b++)
		for (struct dest *d = wd->hash[b]; d != NULL; d = d->hash_next)
			for (unsigned guard = 0; d->idle != NULL && guard < 1u << 20; guard++) {
				struct link *k = d->idle;

				idle_unlist(k);
				rm_smtp_out_quit(k->o);
			}
	rm_dns_close(wd->dns);
	wd->dns = NULL;
}

/* -------------------------------------------------------------- bounces */

/* The most of the original a report carries (RFC 3464 says the headers are enough). */
#define BOUNCE_ORIGINAL_BYTES_MAX 65536u
#define BOUNCE_READ_BYTES 16384u

struct bounce {
	struct worker_delivery *wd;
	struct rm_spool *sp;
	struct rm_queue_entry *e;	/* in delivery until the marks */
	uint32_t *idx;			/* the bounced recipients */
	uint32_t n;
	char *reason;			/* for the spool's bounce record */
	bool defer;			/* other recipients are deferred: mark them after */
	uint64_t next_attempt_ms;
	char *defer_why;
	bool send;			/* a report goes out (not to <>, NOTIFY allows) */
	bool notice;			/* a delay notice: no marks wait for it, e is not kept */
	uint64_t orig_qid;		/* the message reported on */
	char *to;			/* its envelope sender, the report's recipient */
	bool smtputf8;
	uint8_t *buf;			/* the report */
	size_t len, off;
	struct rm_spool_msg *msg;
};

static void bounce_marks(struct bounce *b, bool report_queued)
{
	if (b->notice) {
		/* Nothing to mark: the message was marked deferred when the notice was made. */
	} else if (report_queued || !b->send) {
		mark_checked(b->e, rm_spool_mark_bounced(b->sp, b->e, b->idx, b->n, b->reason), "bounced");
		if (b->defer)
			mark_checked(b->e, rm_spool_mark_deferred(b->sp, b->e, b->next_attempt_ms,
								  b->defer_why != NULL ? b->defer_why : ""), "deferred");
	} else {
		/* The report could not be queued: everything is tried again later. */
		mark_checked(b->e, rm_spool_mark_deferred(b->sp, b->e, unix_ms() +
							  cfg_of(b->wd)->limits.delivery_retry_initial_ms,
							  "bounce report not queued"), "deferred");
	}
	free(b->idx);
	free(b->reason);
	free(b->defer_why);
	free(b->to);
	free(b->buf);
	free(b);
}

/* Grow buf by writing with fn until it says it is done; false without memory. */
static bool grow(uint8_t **buf, size_t *len, size_t *cap, size_t need)
{
	uint8_t *p;
	size_t c = *cap ? *cap : 16384;

	if (*len + need <= *cap)
		return true;
	while (c < *len + need)
		c *= 2;
	p = realloc(*buf, c);
	if (p == NULL)
		return false;
	*buf = p;
	*cap = c;
	return true;
}

/* The RFC 3464 report in memory: head, the original (or its headers), end. */
static uint8_t *bounce_compose(struct worker_delivery *wd, const struct attempt *a, const uint32_t *idx, uint32_t n,
			       enum rm_dsn_action action, size_t *out_len, bool *body_8bit)
{
	const struct rm_config *cfg = cfg_of(wd);
	const struct rm_queue_entry *e = a->e;
	struct rm_dsn_rcpt *rc = calloc(n, sizeof(*rc));
	struct rm_dsn_report r;
	struct rm_dsn_writer w;
	char id[RM_QUEUE_ID_TEXT_BYTES + 8];
	uint8_t *buf = NULL, *in = malloc(BOUNCE_READ_BYTES);
	size_t len = 0, cap = 0;
	uint64_t now_s = unix_ms() / 1000u;
	struct tm tm;
	time_t t = (time_t)now_s;
	enum rm_dsn_err err;

	if (rc == NULL || in == NULL)
		goto fail;
	localtime_r(&t, &tm);
	rm_queue_id_format(e->qid, id);
	for (uint32_t k = 0; k < n; k++) {
		const struct rm_queue_rcpt *q = &e->rcpts[idx[k]];
		const char *why = a->reason[idx[k]] != NULL ? a->reason[idx[k]] : "failed";
		const char *said = strstr(why, " said: ");
		const char *semi = strchr(q->orcpt, ';');

		rc[k].addr = (struct rm_smtp_span){ (const uint8_t *)q->addr, strlen(q->addr) };
		if (semi != NULL) {
			rc[k].orcpt_type = (struct rm_smtp_span){ (const uint8_t *)q->orcpt, (size_t)(semi - q->orcpt) };
			rc[k].orcpt = (struct rm_smtp_span){ (const uint8_t *)semi + 1, strlen(semi + 1) };
		}
		rc[k].action = action;
		if (action == RM_DSN_DELAYED) {
			rc[k].status = a->status[idx[k]][0] == '4' ? a->status[idx[k]] : "4.0.0";
			rc[k].retry_until_unix_s =
				(int64_t)((e->received_unix_ms + cfg->limits.delivery_queue_lifetime_ms) / 1000u);
		} else {
			rc[k].status = a->status[idx[k]][0] == '5' ? a->status[idx[k]] : "5.0.0";
		}
		if (a->relay[idx[k]] != NULL) {
			const char *br = strchr(a->relay[idx[k]], '[');
			size_t hl = br != NULL ? (size_t)(br - a->relay[idx[k]]) : strlen(a->relay[idx[k]]);

			rc[k].remote_mta = (struct rm_smtp_span){ (const uint8_t *)a->relay[idx[k]], hl };
		}
		if (said != NULL)
			rc[k].reply = (struct rm_smtp_span){ (const uint8_t *)said + 7, strlen(said + 7) };
		else
			rc[k].reason = (struct rm_smtp_span){ (const uint8_t *)why, strlen(why) };
		rc[k].last_attempt_unix_s = (int64_t)now_s;
	}
	memset(&r, 0, sizeof(r));
	r.hostname = (struct rm_smtp_span){ (const uint8_t *)cfg->smtp.hostname, strlen(cfg->smtp.hostname) };
	r.from_display = (struct rm_smtp_span){ (const uint8_t *)"Mail Delivery System", 20 };
	r.id = (struct rm_smtp_span){ (const uint8_t *)id, strlen(id) };
	r.sender = (struct rm_smtp_span){ (const uint8_t *)e->sender, strlen(e->sender) };
	if (e->envid[0] != '\0')
		r.envid = (struct rm_smtp_span){ (const uint8_t *)e->envid, strlen(e->envid) };
	/* RFC 3461 4.3: RET is about failures; a delay notice carries the headers, as Postfix's does. */
	r.ret = action == RM_DSN_DELAYED ? RM_SMTP_RET_HDRS
	      : e->ret == RM_SPOOL_RET_FULL ? RM_SMTP_RET_FULL : e->ret == RM_SPOOL_RET_HDRS ? RM_SMTP_RET_HDRS
	      : RM_SMTP_RET_NONE;
	r.smtputf8 = e->smtputf8;
	r.arrival_unix_s = (int64_t)(e->received_unix_ms / 1000u);
	r.now_unix_s = (int64_t)now_s;
	r.tz_offset_min = (int32_t)(tm.tm_gmtoff / 60);
	r.original_bytes = e->size_bytes;
	r.original_bytes_max = BOUNCE_ORIGINAL_BYTES_MAX;
	r.rcpt = rc;
	r.rcpt_count = n;
	err = rm_dsn_begin(&w, &r);
	if (err != RM_DSN_OK) {
		rm_warn(0, "%s: bounce report not made: %s", id, rm_dsn_err_text(err));
		goto fail;
	}
	/* The scan, then the writing: both read the original from the spool, bounded by its cap. */
	for (uint64_t off = 0; off < e->size_bytes && off < BOUNCE_ORIGINAL_BYTES_MAX;) {
		ssize_t got = rm_spool_read(a->sp, e, off, in, BOUNCE_READ_BYTES);

		if (got <= 0)
			break;
		if (rm_dsn_scan_original(&w, in, (size_t)got) < (size_t)got)
			break;
		off += (uint64_t)got;
	}
	for (unsigned guard = 0; !rm_dsn_head_done(&w) && guard < 1u << 20; guard++) {
		if (!grow(&buf, &len, &cap, 16384))
			goto fail;
		len += rm_dsn_write_head(&w, buf + len, cap - len);
	}
	for (uint64_t off = 0; !rm_dsn_original_done(&w) && off < e->size_bytes;) {
		ssize_t got = rm_spool_read(a->sp, e, off, in, BOUNCE_READ_BYTES);
		size_t used = 0;

		if (got <= 0)
			break;
		for (unsigned guard = 0; used < (size_t)got && !rm_dsn_original_done(&w) && guard < 1u << 20; guard++) {
			size_t consumed = 0;

			if (!grow(&buf, &len, &cap, 4 * BOUNCE_READ_BYTES))
				goto fail;
			len += rm_dsn_feed_original(&w, in + used, (size_t)got - used, buf + len, cap - len, &consumed);
			used += consumed;
		}
		off += used;
		if (used < (size_t)got)
			break;
	}
	for (unsigned guard = 0; !rm_dsn_done(&w) && guard < 1u << 20; guard++) {
		if (!grow(&buf, &len, &cap, 16384))
			goto fail;
		len += rm_dsn_end(&w, buf + len, cap - len);
	}
	*body_8bit = w.body_8bit;
	*out_len = len;
	free(rc);
	free(in);
	return buf;
fail:
	free(rc);
	free(in);
	free(buf);
	return NULL;
}

/* RFC 3461: a report of action when any of the recipients idx allows it (never to <>). */
static bool report_wanted(const struct rm_queue_entry *e, const uint32_t *idx, uint32_t n, enum rm_dsn_action action)
{
	/* No NOTIFY: failures are reported, and delays too (RFC 3461 4.1 leaves it to us; Postfix does). */
	for (uint32_t k = 0; k < n; k++)
		if (rm_dsn_should_send((const uint8_t *)e->sender, strlen(e->sender), e->rcpts[idx[k]].notify, action,
				       action == RM_DSN_DELAYED))
			return true;
	return false;
}

/* A report about a's message to its sender, with its own copies of what the spooling needs. */
static struct bounce *report_new(struct worker_delivery *wd, const struct attempt *a)
{
	struct bounce *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return NULL;
	b->wd = wd;
	b->sp = a->sp;
	b->orig_qid = a->e->qid;
	b->smtputf8 = a->e->smtputf8;
	b->to = xstrdup_or_null(a->e->sender);
	return b;
}

static struct bounce *bounce_make(struct worker_delivery *wd, struct attempt *a, uint32_t *idx, uint32_t n,
				  bool defer, uint64_t next_attempt_ms, const char *defer_why)
{
	struct rm_queue_entry *e = a->e;
	struct bounce *b = report_new(wd, a);
	bool body_8bit = false;

	if (b == NULL) {
		free(idx);
		mark_checked(e, rm_spool_mark_deferred(a->sp, e, unix_ms() + 60000, "out of memory"), "deferred");
		return NULL;
	}
	b->e = e;
	b->idx = idx;
	b->n = n;
	b->reason = xstrdup_or_null(a->reason[idx[0]] != NULL ? a->reason[idx[0]] : "failed");
	b->defer = defer;
	b->next_attempt_ms = next_attempt_ms;
	b->defer_why = xstrdup_or_null(defer_why);
	b->send = report_wanted(e, idx, n, RM_DSN_FAILED);
	if (!b->send && e->sender[0] == '\0') {
		/* RFC 5321 6.1: a bounce that fails is not bounced again; the log line is all that is left. */
		char id[RM_QUEUE_ID_TEXT_BYTES];

		rm_queue_id_format(e->qid, id);
		rm_info(0, "%s: undeliverable message from the null sender dropped, no report", id);
	}
	if (b->send && b->to == NULL)
		b->send = false;
	if (b->send) {
		b->buf = bounce_compose(wd, a, idx, n, RM_DSN_FAILED, &b->len, &body_8bit);
		if (b->buf == NULL) {
			/* A report that cannot be made (bad stored data): bounce without one, logged. */
			char id[RM_QUEUE_ID_TEXT_BYTES];

			rm_queue_id_format(e->qid, id);
			rm_warn(0, "%s: no bounce report for <%s>: it could not be composed", id, e->sender);
			b->send = false;
		}
	}
	(void)body_8bit;
	return b;
}

/*
 * A delay notice for the deferred recipients idx (RFC 3464, Action:
 * delayed), when one of them allows it: NOTIFY=DELAY, or no NOTIFY at all.
 * It refers to nothing of the entry once made; NULL when none goes.
 */
static struct bounce *delay_notice_make(struct worker_delivery *wd, struct attempt *a, const uint32_t *idx,
					uint32_t n)
{
	const struct rm_queue_entry *e = a->e;
	struct bounce *b;
	bool body_8bit = false;

	if (!report_wanted(e, idx, n, RM_DSN_DELAYED) || (b = report_new(wd, a)) == NULL)
		return NULL;
	b->notice = true;
	b->send = true;
	b->buf = b->to != NULL ? bounce_compose(wd, a, idx, n, RM_DSN_DELAYED, &b->len, &body_8bit) : NULL;
	if (b->buf == NULL) {
		char id[RM_QUEUE_ID_TEXT_BYTES];

		rm_queue_id_format(e->qid, id);
		rm_warn(0, "%s: no delay notice for <%s>: it could not be composed", id, e->sender);
		free(b->to);
		free(b);
		return NULL;
	}
	return b;
}

static void bounce_step(struct bounce *b);

static void bounce_room(void *arg)
{
	bounce_step(arg);
}

static void bounce_committed(void *arg, uint64_t qid, int err)
{
	struct bounce *b = arg;
	char id[RM_QUEUE_ID_TEXT_BYTES], orig[RM_QUEUE_ID_TEXT_BYTES];

	b->msg = NULL;
	rm_queue_id_format(qid, id);
	rm_queue_id_format(b->orig_qid, orig);
	if (err == 0) {
		/* Postfix's words for the two kinds. */
		rm_info(0, "%s: sender %s notification: %s", orig, b->notice ? "delay" : "non-delivery", id);
		atomic_fetch_add_explicit(&st(b->wd)->dsn_sent, 1, memory_order_relaxed);
	} else {
		rm_warn(0, "%s: %s not queued: %s", orig, b->notice ? "delay notice" : "bounce report", strerror(-err));
	}
	bounce_marks(b, err == 0);
}

/* begin, append, commit, each waiting for spool room as it must. */
static void bounce_step(struct bounce *b)
{
	if (b->msg == NULL) {
		struct rm_spool_envelope env;
		struct rm_spool_rcpt rcpt;
		const char *host = cfg_of(b->wd)->smtp.hostname;
		int rc;

		memset(&env, 0, sizeof(env));
		memset(&rcpt, 0, sizeof(rcpt));
		env.received_unix_ms = unix_ms();
		env.reverse_path = (struct rm_spool_str){ "", 0 };	/* RFC 5321 4.5.5: the null sender */
		env.client_addr = (struct rm_spool_str){ "127.0.0.1", 9 };
		env.helo = (struct rm_spool_str){ host, strlen(host) };
		env.smtputf8 = b->smtputf8;
		rcpt.addr = (struct rm_spool_str){ b->to, strlen(b->to) };
		rc = rm_spool_begin(b->sp, &env, &rcpt, 1, b->len, &b->msg);
		if (rc == -EAGAIN) {
			rm_spool_wait_begin(b->sp, bounce_room, b);
			return;
		}
		if (rc != 0) {
			b->msg = NULL;
			bounce_committed(b, 0, rc);
			return;
		}
		b->off = 0;
	}
	while (b->off < b->len) {
		ssize_t r = rm_spool_append(b->msg, b->buf + b->off, b->len - b->off);

		if (r < 0) {
			rm_spool_abort(b->msg);
			b->msg = NULL;
			bounce_committed(b, 0, (int)r);
			return;
		}
		b->off += (size_t)r;
		if (r == 0) {
			rm_spool_wait_room(b->msg, bounce_room, b);
			return;
		}
	}
	{
		int rc = rm_spool_commit(b->msg, bounce_committed, b);

		if (rc == -EAGAIN) {
			b->off = b->len + 1;	/* content is in: only the commit is left */
			rm_spool_wait_room(b->msg, bounce_room, b);
		} else if (rc != 0) {
			b->msg = NULL;
			bounce_committed(b, 0, rc);
		}
	}
}

static void bounce_spool(struct bounce *b)
{
	if (!b->send) {
		bounce_marks(b, false);
		return;
	}
	bounce_step(b);
}
