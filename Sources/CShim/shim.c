#define _GNU_SOURCE
#include "cshim.h"
#include <sys/mman.h>
#include <string.h>

// Layouts SwiftVMM relies on (linux/kvm.h, x86_64). A changed uAPI fails the build.
_Static_assert(sizeof(struct kvm_regs) == 144, "kvm_regs");
_Static_assert(sizeof(struct kvm_sregs) == 312, "kvm_sregs");
_Static_assert(sizeof(struct kvm_segment) == 24, "kvm_segment");
_Static_assert(sizeof(struct kvm_fpu) == 416, "kvm_fpu");
_Static_assert(sizeof(struct kvm_lapic_state) == 1024, "kvm_lapic_state");
_Static_assert(sizeof(struct kvm_cpuid_entry2) == 40, "kvm_cpuid_entry2");
_Static_assert(sizeof(struct kvm_cpuid2) == 8, "kvm_cpuid2");
_Static_assert(sizeof(struct kvm_msr_entry) == 16, "kvm_msr_entry");
_Static_assert(sizeof(struct kvm_msrs) == 8, "kvm_msrs");
_Static_assert(sizeof(struct kvm_userspace_memory_region) == 32, "kvm_userspace_memory_region");
_Static_assert(sizeof(struct kvm_irq_level) == 8, "kvm_irq_level");
_Static_assert(sizeof(struct kvm_irqfd) == 32, "kvm_irqfd");
_Static_assert(sizeof(struct kvm_pit_config) == 64, "kvm_pit_config");
_Static_assert(sizeof(struct kvm_irq_routing_entry) == 48, "kvm_irq_routing_entry");
_Static_assert(sizeof(struct kvm_ioeventfd) == 64, "kvm_ioeventfd");
_Static_assert(sizeof(struct kvm_irq_routing) == 8, "kvm_irq_routing");
_Static_assert(sizeof(struct kvm_create_device) == 12, "kvm_create_device");
_Static_assert(sizeof(struct kvm_device_attr) == 24, "kvm_device_attr");
_Static_assert(offsetof(struct kvm_run, exit_reason) == 8, "kvm_run.exit_reason");
_Static_assert(offsetof(struct kvm_run, io) == 32, "kvm_run union at 32");
_Static_assert(offsetof(struct kvm_run, mmio.data) == 40, "kvm_run.mmio.data");

int shim_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
int shim_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int shim_errno(void) { return errno; }

static void noop_handler(int signo) { (void)signo; }

int shim_install_noop_handler(int signo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = noop_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
    return sigaction(signo, &sa, NULL);
}

int shim_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }

int shim_fallocate(int fd, int mode, int64_t offset, int64_t length) { return fallocate(fd, mode, offset, length); }
_Static_assert(SHIM_FALLOC_FL_KEEP_SIZE == FALLOC_FL_KEEP_SIZE, "FALLOC_FL_KEEP_SIZE");
_Static_assert(SHIM_FALLOC_FL_PUNCH_HOLE == FALLOC_FL_PUNCH_HOLE, "FALLOC_FL_PUNCH_HOLE");
_Static_assert(SHIM_FALLOC_FL_ZERO_RANGE == FALLOC_FL_ZERO_RANGE, "FALLOC_FL_ZERO_RANGE");
_Static_assert(SHIM_O_DIRECT == O_DIRECT, "O_DIRECT");

#include <sys/sysmacros.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <stdio.h>

unsigned int shim_major(uint64_t dev) { return major(dev); }
unsigned int shim_minor(uint64_t dev) { return minor(dev); }

int shim_cap_last(void) {
    int last = CAP_LAST_CAP;
    FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
    if (f) {
        int v;
        if (fscanf(f, "%d", &v) == 1 && v > 0 && v < 64) last = v;
        fclose(f);
    }
    return last;
}

int shim_caps_read(struct shim_caps *out) {
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capget, &h, d) != 0) return -1;
    out->effective = (uint64_t)d[1].effective << 32 | d[0].effective;
    out->permitted = (uint64_t)d[1].permitted << 32 | d[0].permitted;
    out->inheritable = (uint64_t)d[1].inheritable << 32 | d[0].inheritable;
    out->ambient = 0;
    out->bounding = 0;
    int last = shim_cap_last();
    for (int c = 0; c <= last; c++) {
        if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1) out->bounding |= 1ULL << c;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1) out->ambient |= 1ULL << c;
    }
    return 0;
}

int shim_caps_drop_all(void) {
    struct shim_caps now;
    if (shim_caps_read(&now) != 0) return -1;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which capset below removes.
    for (int c = 0; c < 64; c++) {
        if ((now.bounding & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0) return -1;
    }
    if (now.ambient != 0 && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return -1;
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) != 0) return -1;
    return 0;
}

int shim_set_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }

#include <sys/resource.h>

int shim_memlock_limit(uint64_t *soft) {
    struct rlimit r;
    if (getrlimit(RLIMIT_MEMLOCK, &r) != 0) return -1;
    *soft = r.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)r.rlim_cur;
    return 0;
}

int shim_memlock_unlimited(void) {
    struct rlimit r = { .rlim_cur = RLIM_INFINITY, .rlim_max = RLIM_INFINITY };
    return setrlimit(RLIMIT_MEMLOCK, &r);
}

int shim_set_thread_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

#include <sys/socket.h>
#include <errno.h>
#include <unistd.h>

long shim_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > SHIM_MAX_PASSED_FDS) { errno = EINVAL; return -1; }
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union { char buf[CMSG_SPACE(sizeof(int) * SHIM_MAX_PASSED_FDS)]; struct cmsghdr align; } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

long shim_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated) {
    *nfds = 0;
    *truncated = 0;
    if (maxfds < 0 || maxfds > SHIM_MAX_PASSED_FDS) { errno = EINVAL; return -1; }
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    union { char buf[CMSG_SPACE(sizeof(int) * SHIM_MAX_PASSED_FDS)]; struct cmsghdr align; } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = sizeof(control.buf) };
    long n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return -1;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int *passed = (const int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            if (*nfds < maxfds) fds[(*nfds)++] = passed[i];
            else { close(passed[i]); *truncated = 1; }
        }
    }
    return n;
}
