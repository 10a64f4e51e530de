// The seccomp sandbox through libseccomp (Debian's libseccomp-dev): HostSys
// builds one filter per kind of thread from names and ioctl types, and a
// SIGSYS reporter names a forbidden call before the process dies of it.
// Linked by the CShim target (-lseccomp).
#ifndef SWIFTVMM_CSHIM_SECCOMP_H
#define SWIFTVMM_CSHIM_SECCOMP_H

#include <stddef.h>
#include <stdint.h>

/// What a call outside the allowlist gets.
enum shim_seccomp_action {
    /// SIGSYS to the thread (SECCOMP_RET_TRAP): the reporter writes what was
    /// called and the process dies of SIGSYS.
    SHIM_SECCOMP_TRAP = 1,
    /// The call goes ahead and the kernel logs it (SECCOMP_RET_LOG: audit
    /// type 1326 in the kernel log).
    SHIM_SECCOMP_LOG = 2,
};

/// The system call number of `name` on this architecture, or a negative
/// value when libseccomp does not know it.
int shim_seccomp_resolve(const char *name);

/// Builds and loads a filter on the calling thread (with `tsync`, on every
/// thread of the process: SECCOMP_FILTER_FLAG_TSYNC): `syscalls` (numbers)
/// are allowed with any arguments, except ioctl, which is allowed only with
/// one of the `ioctl_requests` (compared on their low 32 bits, which is all
/// the kernel reads of the request: its `cmd` is an unsigned int).
/// Sets no_new_privs first. 0, or a negative errno; `failed_at` receives the
/// index of the system call libseccomp refused, or -1.
int shim_seccomp_load(int action, const int *syscalls, size_t count, const uint32_t *ioctl_requests,
                      size_t request_count, int tsync, int *failed_at);

/// Terminal requests (asm-generic/ioctls.h) that tcgetattr/tcsetattr/isatty make.
static const unsigned int SHIM_TCGETS = 0x5401;
static const unsigned int SHIM_TCSETS = 0x5402;
static const unsigned int SHIM_TCSETSW = 0x5403;
static const unsigned int SHIM_TCSETSF = 0x5404;

/// Installs the SIGSYS reporter: a forbidden call (SECCOMP_RET_TRAP) makes it
/// write "swiftvmm: seccomp: <thread> thread made a forbidden system call:
/// <name> (<nr>)[, ioctl request 0x...]; stopping (SIGSYS)" to stderr, then
/// the process dies of SIGSYS. 0 or -errno.
int shim_seccomp_install_reporter(void);

/// Names the calling thread's kind for the reporter (at most 15 bytes kept).
void shim_seccomp_set_thread_kind(const char *kind);

/// A system call by number, for the test-only trigger: `syscall(nr, 0, ...)`.
long shim_seccomp_forbidden_call(long nr);

#endif
