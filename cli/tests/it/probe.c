/* The security tests' probe: makes raw syscalls inside a container and prints one line per
 * check, "NAME=ok" or "NAME=errN" (N the errno), each check in a child of its own so that
 * one (unshare, personality) cannot change the next. Built static by the tests with cc.
 *
 *   probe keyring:DESC add_key unshare_user perf personality mount ptrace clone_newns
 *         clone3 io_uring uname chroot status tty tiocsti ids
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY_SPEC_USER_KEYRING -4
#define KEYCTL_UNLINK 9
#define KEYCTL_SEARCH 10
#define KEYCTL_READ 11

static int report(const char *name, long rc) {
    if (rc < 0)
        printf("%s=err%d\n", name, errno);
    else
        printf("%s=ok\n", name);
    return 0;
}

/* Finds the key DESC in the user keyring and prints its payload. */
static int keyring(const char *arg) {
    const char *desc = arg + strlen("keyring:");
    long id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", desc, 0);
    if (id < 0)
        return report(arg, id);
    char buf[256] = {0};
    long n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, sizeof buf - 1);
    if (n < 0)
        return report(arg, n);
    printf("%s=ok:%s\n", arg, buf);
    return 0;
}

static int add_key(void) {
    long id = syscall(SYS_add_key, "user", "berth-probe-planted", "x", 1, KEY_SPEC_USER_KEYRING);
    if (id >= 0)
        syscall(SYS_keyctl, KEYCTL_UNLINK, id, KEY_SPEC_USER_KEYRING);
    return report("add_key", id);
}

static int perf(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    return report("perf", syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
}

/* Attaches to a child that became another user: needs CAP_SYS_PTRACE. */
static int ptrace_other(void) {
    int p[2];
    if (pipe(p) < 0)
        return report("ptrace", -1);
    pid_t child = fork();
    if (child == 0) {
        if (setresuid(1000, 1000, 1000) < 0)
            _exit(1);
        if (write(p[1], "u", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char c;
    if (read(p[0], &c, 1) != 1)
        return report("ptrace", -1);
    long rc = ptrace(PTRACE_ATTACH, child, 0, 0);
    int saved = errno;
    kill(child, SIGKILL);
    waitpid(child, 0, 0);
    errno = saved;
    return report("ptrace", rc);
}

static int clone_newns(void) {
    long pid = syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid(pid, 0, 0);
    return report("clone_newns", pid);
}

static int status(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "Seccomp:", 8) || !strncmp(line, "NoNewPrivs", 10))
            fputs(line, stdout);
    return 0;
}

static int check(const char *name) {
    struct utsname u;
    char params[120] = {0};
    if (!strncmp(name, "keyring:", 8))
        return keyring(name);
    if (!strcmp(name, "add_key"))
        return add_key();
    if (!strcmp(name, "unshare_user"))
        return report(name, unshare(CLONE_NEWUSER));
    if (!strcmp(name, "perf"))
        return perf();
    if (!strcmp(name, "personality"))
        return report(name, personality(PER_LINUX | READ_IMPLIES_EXEC));
    if (!strcmp(name, "mount"))
        return report(name, mount("none", "/tmp", "tmpfs", 0, 0));
    if (!strcmp(name, "ptrace"))
        return ptrace_other();
    if (!strcmp(name, "clone_newns"))
        return clone_newns();
    if (!strcmp(name, "clone3"))
        return report(name, syscall(SYS_clone3, 0, 0));
    if (!strcmp(name, "io_uring"))
        return report(name, syscall(SYS_io_uring_setup, 1, params));
    if (!strcmp(name, "uname"))
        return report(name, uname(&u));
    if (!strcmp(name, "chroot"))
        return report(name, chroot("/"));
    if (!strcmp(name, "status"))
        return status();
    /* The controlling terminal, and pushing a byte into the input of the terminal on stdout. */
    if (!strcmp(name, "tty"))
        return report(name, open("/dev/tty", O_RDWR));
    if (!strcmp(name, "tiocsti"))
        return report(name, ioctl(1, TIOCSTI, " "));
    /* Real and effective uid: a set-uid copy of the probe shows whether the bit took. */
    if (!strcmp(name, "ids"))
        return printf("uid=%d\neuid=%d\n", (int)getuid(), (int)geteuid()), 0;
    printf("%s=unknown\n", name);
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            check(argv[i]);
            fflush(stdout);
            _exit(0);
        }
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        waitpid(pid, 0, 0);
    }
    return 0;
}
