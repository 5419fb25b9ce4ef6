/*
 * NAME
 *	spool_dump - print the queue that recovery finds in one worker's spool
 * SYNOPSIS
 *	spool_dump SPOOL_DIR WORKER
 *	spool_dump --content QUEUE_ID SPOOL_DIR WORKER
 *	spool_dump --envelope QUEUE_ID SPOOL_DIR WORKER
 *	spool_dump --hash < FILE
 * DESCRIPTION
 *	For the integration tests (the crash test above all): runs the spool's
 *	own recovery (core/spool_recover.h) over SPOOL_DIR/wNN/<seq>.seg, in
 *	sequence order, and prints one line per queued message:
 *	  msg QUEUE_ID SIZE XXH3 SENDER RCPT[,RCPT...]
 *	where XXH3 is computed here over the content bytes as they are read from
 *	the segments through the recovered extents (not copied from the END
 *	record), so a test comparing it with its own hash of what it sent checks
 *	the bytes on disk.  The null sender prints as <>.  Then a line
 *	"stats ..." with recovery's counts.  Read-only: nothing is deleted or
 *	written.
 *
 *	--content writes the content of one queued message to standard output,
 *	as it is on disk; --envelope prints its envelope, one "key value" line
 *	each (sender, helo, client, auth, envid, ret, body, smtputf8,
 *	size_declared, then "rcpt ADDR notify N orcpt ORCPT" per recipient).
 *	Both exit 1 when the message is not in that worker's spool.
 *
 *	--hash prints the xxh3-64 (seed 0) of standard input, 16 hex digits:
 *	Debian's python3 has no xxhash module.
 * DIAGNOSTICS
 *	Exit 0; 1 for an unreadable directory or recovery over its limits;
 *	2 for bad usage.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/spool_recover.h"

#define SEGMENTS_MAX 100000
#define STDIN_MAX_BYTES (256u << 20)

struct seg {
	uint64_t seq;
	const uint8_t *map;
	size_t len;
};

static int hash_stdin(void)
{
	XXH3_state_t st;
	static uint8_t buf[1 << 16];
	size_t total = 0;
	ssize_t n;

	XXH3_64bits_reset(&st);
	while ((n = read(0, buf, sizeof(buf))) > 0 && total < STDIN_MAX_BYTES) {
		XXH3_64bits_update(&st, buf, (size_t)n);
		total += (size_t)n;
	}
	printf("%016" PRIx64 "\n", (uint64_t)XXH3_64bits_digest(&st));
	return 0;
}

static int cmp_seg(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static const struct seg *find(const struct seg *segs, uint32_t n, uint64_t seq)
{
	for (uint32_t i = 0; i < n; i++)
		if (segs[i].seq == seq)
			return &segs[i];
	return NULL;
}

static int write_content(const struct seg *segs, uint32_t n, const struct rm_recover_msg *m)
{
	for (uint32_t x = 0; x < m->content_count; x++) {
		const struct seg *s = find(segs, n, m->content[x].seq);

		if (s == NULL || m->content[x].offset + m->content[x].len > s->len) {
			fprintf(stderr, "spool_dump: extent outside its segment\n");
			return 1;
		}
		if (fwrite(s->map + m->content[x].offset, 1, m->content[x].len, stdout) != m->content[x].len)
			return 1;
	}
	return fflush(stdout) == 0 ? 0 : 1;
}

#define STR(x) (int)(x).len, (const char *)(x).ptr

static int print_envelope(const struct seg *segs, uint32_t n, const struct rm_recover_msg *m)
{
	for (uint32_t x = 0; x < m->env_count; x++) {
		const struct seg *s = find(segs, n, m->env[x].seq);
		struct rm_spool_record rec;
		struct rm_spool_rcpt_iter it;
		struct rm_spool_rcpt rc;

		if (s == NULL || rm_spool_decode(s->map + m->env[x].offset, m->env[x].len, &rec) != RM_SPOOL_OK) {
			fprintf(stderr, "spool_dump: envelope record unreadable\n");
			return 1;
		}
		if (rec.type == RM_SPOOL_BEGIN) {
			const struct rm_spool_envelope *e = &rec.u.begin.env;

			printf("sender %.*s\nhelo %.*s\nclient %.*s\nauth %.*s\nenvid %.*s\n", STR(e->reverse_path),
			       STR(e->helo), STR(e->client_addr), STR(e->auth_user), STR(e->envid));
			printf("ret %u\nbody %u\nsmtputf8 %u\nsize_declared %" PRIu64 "\n", e->ret, e->body_type,
			       e->smtputf8 ? 1u : 0u, e->size_declared_bytes);
		}
		rm_spool_rcpt_iter_init(&it, &rec);
		for (uint32_t guard = 0; guard < m->rcpt_total && rm_spool_rcpt_next(&it, &rc); guard++)
			printf("rcpt %.*s notify %u orcpt %.*s\n", STR(rc.addr), rc.notify, STR(rc.orcpt));
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct seg segs[SEGMENTS_MAX];
	struct rm_recover_limits lim = { .messages_max = 1u << 20, .open_max = 1u << 16,
					 .extents_max = 1u << 22, .rcpts_max = 1u << 21,
					 .segments_max = SEGMENTS_MAX };
	struct rm_recover r;
	char dir[4096];
	uint32_t n = 0;
	struct dirent *de;
	DIR *d;

	const char *only = NULL;	/* --content / --envelope: this queue id */
	bool content = false;

	if (argc == 2 && strcmp(argv[1], "--hash") == 0)
		return hash_stdin();
	if (argc == 5 && (strcmp(argv[1], "--content") == 0 || strcmp(argv[1], "--envelope") == 0)) {
		content = strcmp(argv[1], "--content") == 0;
		only = argv[2];
		argv += 2;
		argc -= 2;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: spool_dump [--content|--envelope QUEUE_ID] SPOOL_DIR WORKER | "
			"spool_dump --hash < FILE\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "%s/w%02u", argv[1], (unsigned)atoi(argv[2]));
	d = opendir(dir);
	if (d == NULL) {
		if (errno == ENOENT) {
			if (only != NULL)
				return 1;
			printf("stats recovered 0\n");
			return 0;
		}
		fprintf(stderr, "spool_dump: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	while ((de = readdir(d)) != NULL && n < SEGMENTS_MAX) {
		unsigned long long seq;
		char path[4200];
		struct stat st;
		int fd;

		if (strlen(de->d_name) != 20 || sscanf(de->d_name, "%16llx.seg", &seq) != 1)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0 || fstat(fd, &st) < 0) {
			fprintf(stderr, "spool_dump: %s: %s\n", path, strerror(errno));
			return 1;
		}
		segs[n].seq = seq;
		segs[n].len = (size_t)st.st_size;
		segs[n].map = st.st_size > 0 ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
		if (segs[n].map == MAP_FAILED) {
			fprintf(stderr, "spool_dump: mmap %s: %s\n", path, strerror(errno));
			return 1;
		}
		close(fd);
		n++;
	}
	closedir(d);
	qsort(segs, n, sizeof(segs[0]), cmp_seg);

	size_t arena_bytes = rm_recover_arena_bytes(&lim);
	void *arena = malloc(arena_bytes);

	if (arena == NULL || rm_recover_init(&r, &lim, arena, arena_bytes) != 0) {
		fprintf(stderr, "spool_dump: cannot set up recovery\n");
		return 1;
	}
	for (uint32_t i = 0; i < n; i++)
		if (rm_recover_feed(&r, segs[i].map, segs[i].len) == -ENOBUFS) {
			fprintf(stderr, "spool_dump: recovery limit %s\n", r.limit);
			return 1;
		}
	if (rm_recover_finish(&r) < 0) {
		fprintf(stderr, "spool_dump: recovery limit %s\n", r.limit);
		return 1;
	}
	for (uint32_t i = 0; i < rm_recover_count(&r); i++) {
		const struct rm_recover_msg *m = rm_recover_message(&r, i);
		char id[RM_QUEUE_ID_TEXT_BYTES];
		XXH3_state_t st;
		uint64_t bytes = 0;

		rm_queue_id_format(m->qid, id);
		if (only != NULL) {
			if (strcmp(id, only) != 0)
				continue;
			return content ? write_content(segs, n, m) : print_envelope(segs, n, m);
		}
		XXH3_64bits_reset(&st);
		for (uint32_t x = 0; x < m->content_count; x++) {
			const struct seg *s = find(segs, n, m->content[x].seq);

			if (s == NULL || m->content[x].offset + m->content[x].len > s->len) {
				fprintf(stderr, "spool_dump: extent outside its segment\n");
				return 1;
			}
			XXH3_64bits_update(&st, s->map + m->content[x].offset, m->content[x].len);
			bytes += m->content[x].len;
		}
		printf("msg %s %" PRIu64 " %016" PRIx64 " ", id, bytes, (uint64_t)XXH3_64bits_digest(&st));
		/* Envelope: sender from BEGIN, recipients from BEGIN and RCPT records. */
		bool first = true;

		for (uint32_t x = 0; x < m->env_count; x++) {
			const struct seg *s = find(segs, n, m->env[x].seq);
			struct rm_spool_record rec;
			struct rm_spool_rcpt_iter it;
			struct rm_spool_rcpt rc;

			if (s == NULL || rm_spool_decode(s->map + m->env[x].offset, m->env[x].len, &rec) != RM_SPOOL_OK) {
				fprintf(stderr, "spool_dump: envelope record unreadable\n");
				return 1;
			}
			if (rec.type == RM_SPOOL_BEGIN && rec.u.begin.env.reverse_path.len == 0)
				printf("<> ");
			else if (rec.type == RM_SPOOL_BEGIN)
				printf("%.*s ", (int)rec.u.begin.env.reverse_path.len, rec.u.begin.env.reverse_path.ptr);
			rm_spool_rcpt_iter_init(&it, &rec);
			for (uint32_t guard = 0; guard < m->rcpt_total && rm_spool_rcpt_next(&it, &rc); guard++) {
				printf("%s%.*s", first ? "" : ",", (int)rc.addr.len, rc.addr.ptr);
				first = false;
			}
		}
		printf("\n");
	}
	if (only != NULL)
		return 1;

	const struct rm_recover_stats *st = rm_recover_stats(&r);

	printf("stats recovered %" PRIu64 " final %" PRIu64 " discarded %" PRIu64 " aborted %" PRIu64
	       " records %" PRIu64 "\n", st->recovered, st->final, st->discarded, st->aborted, st->records);
	return 0;
}
