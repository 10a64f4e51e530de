// SwiftVMM C shim: the Linux uAPI as Swift sees it.
// Ioctl request numbers are macros Swift cannot import, so they are exported
// here as constants; offsets into kvm_run's anonymous union likewise.
// Layouts SwiftVMM relies on are checked with _Static_assert in shim.c.
#ifndef SWIFTVMM_CSHIM_H
#define SWIFTVMM_CSHIM_H

#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <termios.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <poll.h>
#include <sys/resource.h>
#include <linux/kvm.h>

// --- /dev/kvm system ioctls (linux/kvm.h) ---
static const unsigned long SHIM_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long SHIM_KVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long SHIM_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long SHIM_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long SHIM_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long SHIM_KVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;

// --- VM ioctls ---
static const unsigned long SHIM_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long SHIM_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long SHIM_KVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long SHIM_KVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long SHIM_KVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long SHIM_KVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long SHIM_KVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long SHIM_KVM_IRQFD = KVM_IRQFD;
static const unsigned long SHIM_KVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long SHIM_KVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
static const unsigned long SHIM_KVM_CREATE_DEVICE = KVM_CREATE_DEVICE;
static const unsigned long SHIM_KVM_SET_DEVICE_ATTR = KVM_SET_DEVICE_ATTR;
static const unsigned long SHIM_KVM_ENABLE_CAP = KVM_ENABLE_CAP;

// --- vCPU ioctls ---
static const unsigned long SHIM_KVM_RUN = KVM_RUN;
static const unsigned long SHIM_KVM_GET_REGS = KVM_GET_REGS;
static const unsigned long SHIM_KVM_SET_REGS = KVM_SET_REGS;
static const unsigned long SHIM_KVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long SHIM_KVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long SHIM_KVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long SHIM_KVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long SHIM_KVM_SET_FPU = KVM_SET_FPU;
static const unsigned long SHIM_KVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long SHIM_KVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long SHIM_KVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long SHIM_KVM_GET_MP_STATE = KVM_GET_MP_STATE;

// --- irqfd / ioeventfd / GSI routing flags ---
static const uint32_t SHIM_KVM_IRQFD_FLAG_DEASSIGN = KVM_IRQFD_FLAG_DEASSIGN;
static const uint32_t SHIM_KVM_IRQFD_FLAG_RESAMPLE = KVM_IRQFD_FLAG_RESAMPLE;
static const uint32_t SHIM_KVM_IOEVENTFD_FLAG_DATAMATCH = KVM_IOEVENTFD_FLAG_DATAMATCH;
static const uint32_t SHIM_KVM_IOEVENTFD_FLAG_PIO = KVM_IOEVENTFD_FLAG_PIO;
static const uint32_t SHIM_KVM_IOEVENTFD_FLAG_DEASSIGN = KVM_IOEVENTFD_FLAG_DEASSIGN;
static const uint32_t SHIM_KVM_IRQ_ROUTING_IRQCHIP = KVM_IRQ_ROUTING_IRQCHIP;
static const uint32_t SHIM_KVM_IRQ_ROUTING_MSI = KVM_IRQ_ROUTING_MSI;
static const uint32_t SHIM_KVM_IRQCHIP_PIC_MASTER = KVM_IRQCHIP_PIC_MASTER;
static const uint32_t SHIM_KVM_IRQCHIP_PIC_SLAVE = KVM_IRQCHIP_PIC_SLAVE;
static const uint32_t SHIM_KVM_IRQCHIP_IOAPIC = KVM_IRQCHIP_IOAPIC;

// --- in-kernel devices (KVM_CREATE_DEVICE): the kvm-vfio pseudo device ---
static const uint32_t SHIM_KVM_DEV_TYPE_VFIO = KVM_DEV_TYPE_VFIO;
static const uint32_t SHIM_KVM_DEV_VFIO_FILE = KVM_DEV_VFIO_FILE;
static const uint64_t SHIM_KVM_DEV_VFIO_FILE_ADD = KVM_DEV_VFIO_FILE_ADD;
static const uint64_t SHIM_KVM_DEV_VFIO_FILE_DEL = KVM_DEV_VFIO_FILE_DEL;

// --- capabilities ---
static const int SHIM_KVM_CAP_IRQCHIP = KVM_CAP_IRQCHIP;
static const int SHIM_KVM_CAP_USER_MEMORY = KVM_CAP_USER_MEMORY;
static const int SHIM_KVM_CAP_SET_TSS_ADDR = KVM_CAP_SET_TSS_ADDR;
static const int SHIM_KVM_CAP_PIT2 = KVM_CAP_PIT2;
static const int SHIM_KVM_CAP_IRQFD = KVM_CAP_IRQFD;
static const int SHIM_KVM_CAP_IOEVENTFD = KVM_CAP_IOEVENTFD;
static const int SHIM_KVM_CAP_EXT_CPUID = KVM_CAP_EXT_CPUID;
static const int SHIM_KVM_CAP_IMMEDIATE_EXIT = KVM_CAP_IMMEDIATE_EXIT;
static const int SHIM_KVM_CAP_IRQ_ROUTING = KVM_CAP_IRQ_ROUTING;
static const int SHIM_KVM_CAP_SET_IDENTITY_MAP_ADDR = KVM_CAP_SET_IDENTITY_MAP_ADDR;
static const int SHIM_KVM_CAP_NR_VCPUS = KVM_CAP_NR_VCPUS;
static const int SHIM_KVM_CAP_MAX_VCPUS = KVM_CAP_MAX_VCPUS;
static const int SHIM_KVM_CAP_TSC_DEADLINE_TIMER = KVM_CAP_TSC_DEADLINE_TIMER;
static const int SHIM_KVM_CAP_IRQFD_RESAMPLE = KVM_CAP_IRQFD_RESAMPLE;

static const int SHIM_KVM_API_VERSION = KVM_API_VERSION;
static const unsigned int SHIM_KVM_PIT_SPEAKER_DUMMY = KVM_PIT_SPEAKER_DUMMY;
static const unsigned int SHIM_KVM_MAX_CPUID_ENTRIES = 256;

// --- kvm_run exit reasons ---
static const uint32_t SHIM_KVM_EXIT_UNKNOWN = KVM_EXIT_UNKNOWN;
static const uint32_t SHIM_KVM_EXIT_EXCEPTION = KVM_EXIT_EXCEPTION;
static const uint32_t SHIM_KVM_EXIT_IO = KVM_EXIT_IO;
static const uint32_t SHIM_KVM_EXIT_HLT = KVM_EXIT_HLT;
static const uint32_t SHIM_KVM_EXIT_MMIO = KVM_EXIT_MMIO;
static const uint32_t SHIM_KVM_EXIT_SHUTDOWN = KVM_EXIT_SHUTDOWN;
static const uint32_t SHIM_KVM_EXIT_FAIL_ENTRY = KVM_EXIT_FAIL_ENTRY;
static const uint32_t SHIM_KVM_EXIT_INTR = KVM_EXIT_INTR;
static const uint32_t SHIM_KVM_EXIT_INTERNAL_ERROR = KVM_EXIT_INTERNAL_ERROR;
static const uint32_t SHIM_KVM_EXIT_SYSTEM_EVENT = KVM_EXIT_SYSTEM_EVENT;
static const uint32_t SHIM_KVM_EXIT_IRQ_WINDOW_OPEN = KVM_EXIT_IRQ_WINDOW_OPEN;
static const uint32_t SHIM_KVM_SYSTEM_EVENT_SHUTDOWN = KVM_SYSTEM_EVENT_SHUTDOWN;
static const uint32_t SHIM_KVM_SYSTEM_EVENT_RESET = KVM_SYSTEM_EVENT_RESET;
static const uint32_t SHIM_KVM_SYSTEM_EVENT_CRASH = KVM_SYSTEM_EVENT_CRASH;
static const uint32_t SHIM_KVM_INTERNAL_ERROR_EMULATION = KVM_INTERNAL_ERROR_EMULATION;
static const uint8_t SHIM_KVM_EXIT_IO_IN = KVM_EXIT_IO_IN;
static const uint8_t SHIM_KVM_EXIT_IO_OUT = KVM_EXIT_IO_OUT;

// --- offsets into struct kvm_run (the exit union is anonymous) ---
static const size_t SHIM_RUN_SIZE = sizeof(struct kvm_run);
static const size_t SHIM_RUN_REQUEST_INTERRUPT_WINDOW = offsetof(struct kvm_run, request_interrupt_window);
static const size_t SHIM_RUN_IMMEDIATE_EXIT = offsetof(struct kvm_run, immediate_exit);
static const size_t SHIM_RUN_EXIT_REASON = offsetof(struct kvm_run, exit_reason);
static const size_t SHIM_RUN_IF_FLAG = offsetof(struct kvm_run, if_flag);
static const size_t SHIM_RUN_IO_DIRECTION = offsetof(struct kvm_run, io.direction);
static const size_t SHIM_RUN_IO_SIZE = offsetof(struct kvm_run, io.size);
static const size_t SHIM_RUN_IO_PORT = offsetof(struct kvm_run, io.port);
static const size_t SHIM_RUN_IO_COUNT = offsetof(struct kvm_run, io.count);
static const size_t SHIM_RUN_IO_DATA_OFFSET = offsetof(struct kvm_run, io.data_offset);
static const size_t SHIM_RUN_MMIO_PHYS_ADDR = offsetof(struct kvm_run, mmio.phys_addr);
static const size_t SHIM_RUN_MMIO_DATA = offsetof(struct kvm_run, mmio.data);
static const size_t SHIM_RUN_MMIO_LEN = offsetof(struct kvm_run, mmio.len);
static const size_t SHIM_RUN_MMIO_IS_WRITE = offsetof(struct kvm_run, mmio.is_write);
static const size_t SHIM_RUN_FAIL_ENTRY_REASON = offsetof(struct kvm_run, fail_entry.hardware_entry_failure_reason);
static const size_t SHIM_RUN_FAIL_ENTRY_CPU = offsetof(struct kvm_run, fail_entry.cpu);
static const size_t SHIM_RUN_INTERNAL_SUBERROR = offsetof(struct kvm_run, internal.suberror);
static const size_t SHIM_RUN_INTERNAL_NDATA = offsetof(struct kvm_run, internal.ndata);
static const size_t SHIM_RUN_INTERNAL_DATA = offsetof(struct kvm_run, internal.data);
static const size_t SHIM_RUN_SYSTEM_EVENT_TYPE = offsetof(struct kvm_run, system_event.type);
static const size_t SHIM_RUN_EX_EXCEPTION = offsetof(struct kvm_run, ex.exception);
static const size_t SHIM_RUN_EX_ERROR_CODE = offsetof(struct kvm_run, ex.error_code);

// --- kvm_lapic_state register offsets (Intel SDM vol. 3, table 11-1) ---
static const size_t SHIM_APIC_LVT0 = 0x350;
static const size_t SHIM_APIC_LVT1 = 0x360;

/// ioctl with an integer argument (Swift cannot call variadic ioctl).
int shim_ioctl_int(int fd, unsigned long request, unsigned long arg);
/// ioctl with a pointer argument.
int shim_ioctl_ptr(int fd, unsigned long request, void *arg);

/// errno, readable from Swift.
int shim_errno(void);

/// memfd_create(2) (needs _GNU_SOURCE, which Swift does not set).
int shim_memfd_create(const char *name, unsigned int flags);
static const unsigned int SHIM_MFD_CLOEXEC = 1U; // MFD_CLOEXEC, linux/memfd.h

/// fallocate(2) (needs _GNU_SOURCE). The modes SwiftVMM uses, from linux/falloc.h:
int shim_fallocate(int fd, int mode, int64_t offset, int64_t length);
static const int SHIM_FALLOC_FL_KEEP_SIZE = 0x01;
static const int SHIM_FALLOC_FL_PUNCH_HOLE = 0x02;
static const int SHIM_FALLOC_FL_ZERO_RANGE = 0x10;
/// O_DIRECT (needs _GNU_SOURCE; asm-generic/fcntl.h's value, x86 and arm64 alike).
static const int SHIM_O_DIRECT = 040000;

/// major(3) and minor(3) of a device number (macros in sys/sysmacros.h).
unsigned int shim_major(uint64_t dev);
unsigned int shim_minor(uint64_t dev);

/// Capabilities (linux/capability.h, version 3: 64 bits in two words) of
/// this thread, as bit masks by capability number.
struct shim_caps {
    uint64_t effective, permitted, inheritable, ambient, bounding;
};
/// Reads them (capget, prctl PR_CAPBSET_READ and PR_CAP_AMBIENT_IS_SET, up to
/// the kernel's last capability); 0, or -1 with errno.
int shim_caps_read(struct shim_caps *out);
/// Gives every capability up, for good, on this thread: the bounding set
/// (while CAP_SETPCAP is still held), the ambient set, then effective,
/// permitted and inheritable (capset). 0, or -1 with errno at the first step
/// that failed. Threads started later inherit the result.
int shim_caps_drop_all(void);
/// prctl(PR_SET_NO_NEW_PRIVS, 1): execve can never grant privileges again.
int shim_set_no_new_privs(void);

/// prctl(PR_SET_NAME): names the calling thread (at most 15 bytes are kept,
/// TASK_COMM_LEN); what pthread_setname_np does for the calling thread.
int shim_set_thread_name(const char *name);
/// RLIMIT_MEMLOCK's soft limit (UINT64_MAX: unlimited); 0, or -1 with errno.
int shim_memlock_limit(uint64_t *soft);
/// RLIMIT_MEMLOCK to unlimited, soft and hard (needs CAP_SYS_RESOURCE); 0, or -1 with errno.
int shim_memlock_unlimited(void);
/// The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap).
int shim_cap_last(void);

/// The most descriptors one message carries across a UNIX socket here
/// (SCM_MAX_FD in the kernel is 253; vfio-user servers ask for 8 to 32).
#define SHIM_MAX_PASSED_FDS 64
/// sendmsg(2) of `len` bytes with `nfds` descriptors as SCM_RIGHTS ancillary
/// data (none when nfds is 0), MSG_NOSIGNAL: bytes sent, or -1 with errno.
long shim_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/// recvmsg(2) of up to `len` bytes, taking up to `maxfds` (at most
/// SHIM_MAX_PASSED_FDS) passed descriptors, close-on-exec, into `fds`:
/// bytes received (0 at end of stream) or -1 with errno. `*nfds` gets the
/// count; `*truncated` is 1 when the kernel dropped descriptors that did not
/// fit (MSG_CTRUNC; it closes those itself).
long shim_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated);

/// A signal handler that does nothing: installed (without SA_RESTART) for the
/// vCPU kick signal so KVM_RUN returns EINTR.
int shim_install_noop_handler(int signo);

#include "cshim_vfio.h"
#include "cshim_uring.h"
#include "cshim_vhost.h"
#include "cshim_seccomp.h"

#endif
