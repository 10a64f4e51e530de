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
            XCTAssertTrue(Set(list.ioctlRequests).isSubset(of: Set(main.ioctlRequests)), "\(kind)")
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

    func testIoctlsAreAllowedByRequest() {
        let after = Set(Sandbox.ioctlRequests)
        for kind in Sandbox.Kind.allCases {
            XCTAssertEqual(Set(Sandbox.allowlist(kind).ioctlRequests), after, "\(kind)")
        }
        // Requests of allowed families that SwiftVMM never makes after setup stay out:
        // TIOCSTI (0x5412, types into the terminal), KVM_CREATE_VCPU, KVM_CREATE_VM,
        // VFIO_DEVICE_BIND_IOMMUFD, TUNSETIFF (attaching to another TAP).
        for request: UInt32 in [0x5412, 0xAE41, 0xAE01, 0x3B76, 0x4004_54CA] {
            XCTAssertFalse(after.contains(request), String(request, radix: 16))
        }
        XCTAssertTrue(after.contains(0xAE80), "KVM_RUN")
        XCTAssertTrue(after.contains(0x5401), "TCGETS")
        XCTAssertEqual(SeccompMode(rawValue: "kill"), .kill)
        XCTAssertNil(SeccompMode(rawValue: "strict"))
    }

    /// Every request the C shim declares (`static const unsigned long SHIM_...`
    /// in Sources/CShim/include) is classified exactly once, as made after
    /// setup or during setup only, with the shim's own value.
    func testEveryDeclaredRequestIsClassified() throws {
        let include = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources/CShim/include")
        var declared: Set<String> = []
        for file in try FileManager.default.contentsOfDirectory(atPath: include.path) where file.hasSuffix(".h") {
            let text = try String(contentsOf: include.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("static const unsigned long SHIM_") {
                let name = line.dropFirst("static const unsigned long SHIM_".count).prefix { $0 != " " && $0 != "=" }
                declared.insert(String(name))
            }
        }
        XCTAssertGreaterThan(declared.count, 50)
        let after = Sandbox.ioctlsAfterSetup.map(\.name), setup = Sandbox.ioctlsSetupOnly.map(\.name)
        XCTAssertEqual(Set(after).intersection(setup), [], "classified twice")
        XCTAssertEqual(Set(after).count, after.count)
        let classified = Set(after).union(setup)
        XCTAssertEqual(declared.subtracting(classified).sorted(), [], "declared in the shim, not classified")
        let extra = classified.subtracting(declared).subtracting(["TCGETS", "TCSETS", "TCSETSW", "TCSETSF", "TUNSETIFF", "TUNGETIFF"])
        XCTAssertEqual(extra.sorted(), [], "classified, not declared")
    }
}
