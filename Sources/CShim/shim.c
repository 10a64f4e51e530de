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
