/*
 * NAME
 *	deny_io_uring - run a program with io_uring blocked by seccomp
 * SYNOPSIS
 *	deny_io_uring EPERM|ENOSYS PROGRAM [ARG...]
 * DESCRIPTION
 *	Installs a seccomp filter that fails io_uring_setup, io_uring_enter and
 *	io_uring_register with the given errno (what container runtimes' default
 *	profiles do), then executes PROGRAM.  The integration tests use it to
 *	check ringmaild's start-up probe: one clear message and exit 1, not a
 *	crash.  Test tool only; not installed.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define DENY(nr, err) \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((err) & SECCOMP_RET_DATA))

int main(int argc, char **argv)
{
	unsigned err;

	if (argc < 3 || (strcmp(argv[1], "EPERM") != 0 && strcmp(argv[1], "ENOSYS") != 0)) {
		fprintf(stderr, "usage: deny_io_uring EPERM|ENOSYS PROGRAM [ARG...]\n");
		return 2;
	}
	err = strcmp(argv[1], "EPERM") == 0 ? EPERM : ENOSYS;
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		DENY(__NR_io_uring_setup, err),
		DENY(__NR_io_uring_enter, err),
		DENY(__NR_io_uring_register, err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		perror("deny_io_uring: seccomp");
		return 2;
	}
	execvp(argv[2], argv + 2);
	perror("deny_io_uring: exec");
	return 2;
}
