import FoundationEssentials
import HostSys
import KVM
import VFIO
import Synchronization

/// The seccomp sandbox (`--seccomp kill|log|off`, default kill): one
/// allowlist per kind of thread, installed once setup is complete.
///
/// Order: the main thread installs its list on every thread of the process
/// (SECCOMP_FILTER_FLAG_TSYNC: libdispatch's and the signal watcher's
/// threads too) just before the vCPU and I/O threads start. Each of those
/// inherits it and adds its own, narrower list as it starts; filters stack,
/// so a thread may make a call only when every filter on it allows it.
/// `main` is therefore the union of the others plus what only the main
/// thread does after setup (reading /proc for the RSS sampler, writing the
/// JSON report, restoring the terminal, tearing down passthrough).
///
/// ioctl is allowed by request number, only for the requests SwiftVMM itself
/// makes after setup (`KVMIoctls`, `VFIOIoctls`, `HostIoctls`: KVM, iommufd, VFIO, vhost,
/// TAP offloads, the terminal's TCGETS/TCSETS); a request of the same family
/// it never makes (TIOCSTI on the terminal, KVM_CREATE_VCPU) is refused. No
/// thread may open files, sockets or devices, execute programs, trace,
/// mount, load modules, or change credentials once the guest runs.
public enum Sandbox {
    public enum Kind: String, Sendable, CaseIterable {
        case main, vcpu, io
    }

    /// Every thread: memory, locks, time, signals (the vCPU kick, the SIGSYS
    /// reporter), thread start and exit (libdispatch may start a worker from
    /// any thread that queues work), reads and writes on descriptors it
    /// already has (eventfds, the console, disk images, TAP, VFIO regions),
    /// epoll, disk I/O (io_uring, sync fallbacks, flush, discard).
    static let base: [String] = [
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
        "close", "lseek", "fstat", "newfstatat", "statx", "fcntl", "dup", "readlink", "readlinkat",
        // New eventfds (a vCPU enabling MSI-X vectors or queues makes irqfds and ioeventfds).
        "eventfd2",
        "futex", "mmap", "munmap", "mremap", "mprotect", "madvise", "brk", "membarrier",
        "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "sigaltstack", "tgkill", "getpid", "gettid",
        "clone", "clone3", "set_robust_list", "rseq", "prctl", "exit", "exit_group", "restart_syscall",
        "sched_yield", "sched_getaffinity", "getrusage", "setpriority", "getpriority", "sched_getparam",
        "sched_getscheduler",
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom",
        "epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "ppoll",
        // vfio-user: messages (with passed eventfds) on sockets connected during setup, and their end.
        "sendmsg", "recvmsg", "shutdown",
        "fsync", "fdatasync", "fallocate", "io_uring_enter",
        // A thread adds its own filter on top of the one it inherited (only ever narrower).
        "seccomp",
        "ioctl",
    ]

    /// Every ioctl request SwiftVMM makes after setup, by layer.
    static let ioctlsAfterSetup = KVMIoctls.afterSetup + VFIOIoctls.afterSetup + HostIoctls.afterSetup
    /// ... and those made during setup only (refused).
    static let ioctlsSetupOnly = KVMIoctls.setupOnly + VFIOIoctls.setupOnly + HostIoctls.setupOnly
    /// The ioctl requests every kind of thread may make.
    static let ioctlRequests = ioctlsAfterSetup.map { UInt32(truncatingIfNeeded: $0.request) }

    public static func allowlist(_ kind: Kind) -> SeccompAllowlist {
        switch kind {
        case .vcpu, .io:
            // The same list, under the thread's own name for the reporter.
            // vcpu: KVM_RUN and the exits it hands out: MMIO and port I/O into
            // the devices (virtio activation registers ioeventfds and irqfds,
            // sets TAP offloads, programs vhost; MSI-X and BAR moves reach
            // KVM's routing and memory slots; assigned devices' config, BARs
            // and interrupts reach VFIO; a vIOMMU's bypass byte reaches
            // iommufd). io: a device's queues and its host side: disk and TAP
            // I/O, io_uring completions, the vIOMMU's iommufd maps and unmaps,
            // interrupts by irqfd (or KVM_IRQ_LINE for INTx).
            return SeccompAllowlist(kind: kind.rawValue, syscalls: base, ioctlRequests: ioctlRequests)
        case .main:
            return SeccompAllowlist(kind: "main", syscalls: base + [
                // The RSS sampler's /proc reads, the JSON report and the console log.
                "openat", "getdents64", "rename", "renameat", "renameat2", "unlink", "unlinkat", "ftruncate",
                "fchmod", "getcwd", "access", "faccessat", "faccessat2", "mkdir", "mkdirat",
                "dup2", "dup3", "pipe2", "uname", "sysinfo", "getuid", "geteuid", "getgid", "getegid",
                "prlimit64", "sched_setaffinity", "kill", "timerfd_create", "timerfd_settime", "timerfd_gettime",
                "signalfd4", "epoll_create1",
            ], ioctlRequests: ioctlRequests)
        }
    }

    private static let state = Mutex<(mode: SeccompMode, trigger: String?)>((.off, nil))

    /// The mode for this run; with `.kill`, also installs the SIGSYS reporter.
    static func configure(_ mode: SeccompMode) throws {
        var trigger: String?
        #if DEBUG
        // Test only (debug builds): a thread of this kind ("vcpu", "io",
        // "main") makes a forbidden call right after its filter is on.
        trigger = ProcessInfo.processInfo.environment["SWIFTVMM_TEST_FORBIDDEN_SYSCALL"]
        #endif
        state.withLock { $0 = (mode, trigger) }
        if mode == .kill { try Seccomp.installReporter() }
    }

    static var mode: SeccompMode { state.withLock { $0.mode } }

    /// Puts the calling thread in its kind's sandbox (the main thread: every
    /// thread of the process, see above). Throws when libseccomp refuses.
    static func enter(_ kind: Kind) throws {
        let (mode, trigger) = state.withLock { ($0.mode, $0.trigger) }
        guard mode != .off else { return }
        try Seccomp.install(allowlist(kind), mode: mode, allThreads: kind == .main)
        if trigger == kind.rawValue {
            // socket(2): no thread of the VMM may open one once the guest runs.
            _ = Seccomp.forbiddenCall(41)
        }
    }
}
