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
/// families (the request's type byte, `_IOC_TYPE`) it may use.
public struct SeccompAllowlist: Sendable, Equatable {
    public var kind: String
    public var syscalls: [String]
    public var ioctlTypes: [UInt8]

    public init(kind: String, syscalls: [String], ioctlTypes: [UInt8]) {
        self.kind = kind
        self.syscalls = syscalls
        self.ioctlTypes = ioctlTypes
    }

    /// Names libseccomp does not know on this architecture (a typo, or a call
    /// x86_64 does not have).
    public var unknownSyscalls: [String] { syscalls.filter { shim_seccomp_resolve($0) < 0 } }
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
            list.ioctlTypes.withUnsafeBufferPointer { t in
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
