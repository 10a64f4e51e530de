import CShim
import Glibc

/// What the sandbox does with a system call outside a thread's allowlist
/// (`--seccomp`).
public enum SeccompMode: String, Sendable, CaseIterable {
    /// The thread gets SIGSYS: the reporter names the call, the VMM dies of it.
    case kill
    /// The call goes ahead; the kernel logs it (audit type 1326).
    case log
    /// No filter.
    case off
}

/// One kind of thread's allowlist: system calls by name, and the ioctl
/// requests it may make, by number.
public struct SeccompAllowlist: Sendable, Equatable {
    public var kind: String
    public var syscalls: [String]
    public var ioctlRequests: [UInt32]

    public init(kind: String, syscalls: [String], ioctlRequests: [UInt32]) {
        self.kind = kind
        self.syscalls = syscalls
        self.ioctlRequests = ioctlRequests
    }

    /// Names libseccomp does not know on this architecture (a typo, or a call
    /// x86_64 does not have).
    public var unknownSyscalls: [String] { syscalls.filter { shim_seccomp_resolve($0) < 0 } }
}

/// The ioctl requests of the uAPIs HostSys owns (vhost-net, TUN/TAP, the
/// terminal), by when SwiftVMM makes them: once the sandbox is on (vhost
/// programmed when the guest activates its NIC, TAP offloads it negotiates,
/// the terminal's raw mode restored), or during setup only. KVM and VFIO
/// list theirs (`KVMIoctls`, `VFIOIoctls`); the sandbox allows the union of
/// the after-setup lists, and a unit test checks that every request the C
/// shim declares is in exactly one list, so a new one is classified when it
/// is added.
public enum HostIoctls {
    public static let afterSetup: [(name: String, request: UInt)] = [
        ("VHOST_GET_FEATURES", SHIM_VHOST_GET_FEATURES), ("VHOST_SET_FEATURES", SHIM_VHOST_SET_FEATURES),
        ("VHOST_SET_MEM_TABLE", SHIM_VHOST_SET_MEM_TABLE), ("VHOST_SET_VRING_NUM", SHIM_VHOST_SET_VRING_NUM),
        ("VHOST_SET_VRING_ADDR", SHIM_VHOST_SET_VRING_ADDR), ("VHOST_SET_VRING_BASE", SHIM_VHOST_SET_VRING_BASE),
        ("VHOST_GET_VRING_BASE", SHIM_VHOST_GET_VRING_BASE), ("VHOST_SET_VRING_KICK", SHIM_VHOST_SET_VRING_KICK),
        ("VHOST_SET_VRING_CALL", SHIM_VHOST_SET_VRING_CALL), ("VHOST_NET_SET_BACKEND", SHIM_VHOST_NET_SET_BACKEND),
        ("TUNSETOFFLOAD", SHIM_TUNSETOFFLOAD), ("TUNSETVNETHDRSZ", SHIM_TUNSETVNETHDRSZ),
        ("TCGETS", UInt(SHIM_TCGETS)), ("TCSETS", UInt(SHIM_TCSETS)), ("TCSETSW", UInt(SHIM_TCSETSW)),
        ("TCSETSF", UInt(SHIM_TCSETSF)),
    ]

    /// Made during setup only: refused once the sandbox is on.
    public static let setupOnly: [(name: String, request: UInt)] = [
        ("VHOST_SET_OWNER", SHIM_VHOST_SET_OWNER), ("TUNSETIFF", TunUAPI.TUNSETIFF), ("TUNGETIFF", TunUAPI.TUNGETIFF),
    ]
}

public enum Seccomp {
    /// Installs the SIGSYS reporter (for `.kill`): a forbidden call is named on
    /// stderr before the process dies of SIGSYS.
    public static func installReporter() throws {
        let rc = shim_seccomp_install_reporter()
        guard rc == 0 else { throw SysError(errno: -rc, operation: "sigaction(SIGSYS)") }
    }

    /// Loads `list` on the calling thread (and on every thread of the
    /// process with `allThreads`: SECCOMP_FILTER_FLAG_TSYNC). Filters stack:
    /// a thread started later inherits its creator's and may add its own,
    /// narrower one. Sets no_new_privs. Nothing happens for `.off`.
    public static func install(_ list: SeccompAllowlist, mode: SeccompMode, allThreads: Bool = false) throws {
        guard mode != .off else { return }
        var numbers: [Int32] = []
        for name in list.syscalls {
            let nr = shim_seccomp_resolve(name)
            guard nr >= 0 else { throw SysError(errno: EINVAL, operation: "seccomp: the \(list.kind) allowlist names \(name), which x86_64 does not have") }
            numbers.append(nr)
        }
        shim_seccomp_set_thread_kind(list.kind)
        var failedAt: Int32 = -1
        let rc = numbers.withUnsafeBufferPointer { n in
            list.ioctlRequests.withUnsafeBufferPointer { t in
                shim_seccomp_load(Int32(mode == .kill ? SHIM_SECCOMP_TRAP.rawValue : SHIM_SECCOMP_LOG.rawValue),
                                  n.baseAddress, n.count, t.baseAddress, t.count, allThreads ? 1 : 0, &failedAt)
            }
        }
        guard rc == 0 else {
            let at = failedAt >= 0 && Int(failedAt) < list.syscalls.count ? " (at \(list.syscalls[Int(failedAt)]))" : ""
            throw SysError(errno: -rc, operation: "seccomp: loading the \(list.kind) filter\(at)")
        }
    }

    /// Makes system call `nr` with zero arguments: the test-only trigger of a
    /// forbidden call (SWIFTVMM_TEST_FORBIDDEN_SYSCALL in debug builds).
    public static func forbiddenCall(_ nr: Int) -> Int {
        Int(shim_seccomp_forbidden_call(nr))
    }
}
