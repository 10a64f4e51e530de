import HostSys
import XCTest
@testable import VMM

/// The seccomp allowlists as data: every name is a system call libseccomp
/// knows on x86_64, the main list (installed on every thread first) holds
/// what the vCPU and I/O lists allow, and none of them lets a thread of a
/// running VMM open files or sockets, start programs, trace, or change
/// credentials. That a forbidden call stops the VMM is a lab test (ci.sh).
final class SandboxTests: XCTestCase {
    func testEveryNameIsAnX86SystemCall() {
        for kind in Sandbox.Kind.allCases {
            let list = Sandbox.allowlist(kind)
            XCTAssertEqual(list.unknownSyscalls, [], "\(kind)")
            XCTAssertEqual(Set(list.syscalls).count, list.syscalls.count, "\(kind) names a call twice")
        }
    }

    func testMainHoldsWhatTheOthersAllow() {
        let main = Sandbox.allowlist(.main)
        for kind in [Sandbox.Kind.vcpu, .io] {
            let list = Sandbox.allowlist(kind)
            XCTAssertTrue(Set(list.syscalls).isSubset(of: Set(main.syscalls)), "\(kind)")
            XCTAssertTrue(Set(list.ioctlTypes).isSubset(of: Set(main.ioctlTypes)), "\(kind)")
        }
    }

    func testNoThreadOpensStartsTracesOrChangesIdentity() {
        let forbidden = ["execve", "execveat", "fork", "vfork", "socket", "connect", "bind", "accept", "accept4",
                         "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot",
                         "init_module", "finit_module", "delete_module", "kexec_load", "bpf", "perf_event_open",
                         "setuid", "setgid", "setresuid", "setresgid", "capset", "unshare", "setns", "open",
                         "memfd_create", "userfaultfd", "keyctl", "add_key", "reboot", "swapon"]
        for kind in Sandbox.Kind.allCases {
            let allowed = Set(Sandbox.allowlist(kind).syscalls)
            XCTAssertEqual(allowed.intersection(forbidden), [], "\(kind)")
        }
        // Only the main thread opens files (its /proc reads and the report).
        XCTAssertFalse(Sandbox.allowlist(.vcpu).syscalls.contains("openat"))
        XCTAssertFalse(Sandbox.allowlist(.io).syscalls.contains("openat"))
        XCTAssertTrue(Sandbox.allowlist(.main).syscalls.contains("openat"))
    }

    func testIoctlsAreAllowedByFamilyOnly() {
        for kind in Sandbox.Kind.allCases {
            XCTAssertEqual(Set(Sandbox.allowlist(kind).ioctlTypes), [0xAE, 0x3B, 0xAF, 0x54], "\(kind)")
        }
        XCTAssertEqual(SeccompMode(rawValue: "kill"), .kill)
        XCTAssertNil(SeccompMode(rawValue: "strict"))
    }
}
