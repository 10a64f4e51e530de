#define _GNU_SOURCE
#include "cshim_seccomp.h"
#include <errno.h>
#include <seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

int shim_seccomp_resolve(const char *name) { return seccomp_syscall_resolve_name(name); }

int shim_seccomp_load(int action, const int *syscalls, size_t count, const uint32_t *ioctl_requests,
                      size_t request_count, int tsync, int *failed_at) {
    *failed_at = -1;
    uint32_t def = action == SHIM_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
    scmp_filter_ctx ctx = seccomp_init(def);
    if (!ctx) return -ENOMEM;
    int rc = 0;
    if (tsync && (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0) goto out;
    for (size_t i = 0; i < count; i++) {
        if (syscalls[i] == SCMP_SYS(ioctl)) continue;
        if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, syscalls[i], 0)) < 0) { *failed_at = (int)i; goto out; }
    }
    for (size_t i = 0; i < request_count; i++) {
        // The request is an unsigned long whose low 32 bits the kernel reads (dir, size,
        // type, nr); a caller that passed an int may have sign-extended the rest.
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0x00000000FFFFFFFFULL, (uint64_t)ioctl_requests[i]));
        if (rc < 0) goto out;
    }
    rc = seccomp_load(ctx);
out:
    seccomp_release(ctx);
    return rc;
}

static __thread char thread_kind[16] = "main";

void shim_seccomp_set_thread_kind(const char *kind) {
    strncpy(thread_kind, kind, sizeof thread_kind - 1);
    thread_kind[sizeof thread_kind - 1] = 0;
}

// Async-signal-safe pieces: appending text and numbers to a stack buffer.
static size_t put_str(char *buf, size_t at, size_t cap, const char *s) {
    while (*s && at + 1 < cap) buf[at++] = *s++;
    return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, unsigned long v, int base) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v && n < 24);
    while (n && at + 1 < cap) buf[at++] = tmp[--n];
    return at;
}

static void report_sigsys(int sig, siginfo_t *info, void *context) {
    (void)sig;
    char buf[256];
    size_t at = 0, cap = sizeof buf;
    int nr = info->si_syscall;
    at = put_str(buf, at, cap, "swiftvmm: seccomp: the ");
    at = put_str(buf, at, cap, thread_kind);
    at = put_str(buf, at, cap, " thread made a system call outside its allowlist: number ");
    at = put_num(buf, at, cap, (unsigned long)nr, 10);
    if (nr == SCMP_SYS(ioctl)) {
        ucontext_t *uc = context;
        at = put_str(buf, at, cap, " (ioctl), request 0x");
        at = put_num(buf, at, cap, (unsigned long)uc->uc_mcontext.gregs[REG_RSI], 16);
    }
    at = put_str(buf, at, cap, " (ausyscall x86_64 NUMBER names it); the VMM stops with SIGSYS\n");
    (void)!write(2, buf, at);
    // Die of the signal itself: the default action, delivered now (SA_NODEFER).
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGSYS, &dfl, NULL);
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGSYS);
}

int shim_seccomp_install_reporter(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = report_sigsys;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGSYS, &sa, NULL) == 0 ? 0 : -errno;
}

long shim_seccomp_forbidden_call(long nr) { return syscall(nr, 0, 0, 0, 0, 0, 0); }
