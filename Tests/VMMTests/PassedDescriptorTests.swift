import Foundation
import Glibc
import HostSys
import XCTest
@testable import VMM

/// Descriptors a launcher opened, taken by the VMM ("fd:N"), and the
/// privileges it gives up after setup.
final class PassedDescriptorTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("passed-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A file of `size` zero bytes, open with `flags` (the launcher's open,
    /// without O_CLOEXEC): the raw number, owned by nobody until taken.
    private func launcherOpens(_ name: String, size: Int = 1 << 20, flags: Int32) throws -> Int32 {
        let path = dir.appendingPathComponent(name).path
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(count: size)))
        let n = Glibc.open(path, flags)
        XCTAssertGreaterThan(n, 2)
        return n
    }

    /// Closes a number the test opened and did not pass on.
    private func launcherCloses(_ n: Int32) { _ = Glibc.close(n) }

    func testParse() {
        XCTAssertNil(PassedDescriptor.parse("/dev/kvm"))
        XCTAssertEqual(try PassedDescriptor.parse("fd:3")?.get(), 3)
        XCTAssertEqual(try PassedDescriptor.parse("fd:123456789")?.get(), 123_456_789)
        for bad in ["fd:", "fd:x", "fd: 3", "fd:+3", "fd:3.0", "fd:1234567890", "fd:0x3"] {
            guard case let .failure(p)? = PassedDescriptor.parse(bad) else { return XCTFail("\(bad) accepted") }
            XCTAssertTrue(p.description.contains("is not a passed descriptor"), p.description)
        }
        guard case let .failure(p)? = PassedDescriptor.parse("fd:2") else { return XCTFail("fd:2 accepted") }
        XCTAssertTrue(p.description.contains("standard streams"), p.description)
    }

    func testTakeChecksOpenAndAccess() throws {
        let ro = try launcherOpens("ro", flags: O_RDONLY)
        defer { launcherCloses(ro) }
        XCTAssertThrowsError(try PassedDescriptor.take("fd:\(ro)", purpose: "KVM (/dev/kvm)", write: true)) {
            XCTAssertTrue("\($0)".contains("descriptor \(ro) is open read-only, and KVM (/dev/kvm) needs it read-write"), "\($0)")
        }
        // A number nothing has open (checked, not assumed).
        var closed: Int32 = 900
        while PassedDescriptor.kind(of: closed) != nil { closed += 1 }
        XCTAssertThrowsError(try PassedDescriptor.take("fd:\(closed)", purpose: "iommufd (/dev/iommu)", write: true)) {
            XCTAssertTrue("\($0)".contains("descriptor \(closed) is not open: the launcher must open the file for iommufd"), "\($0)")
        }
        XCTAssertNil(PassedDescriptor.kind(of: closed))
        XCTAssertEqual(PassedDescriptor.kind(of: ro), .regularFile)
    }

    func testOneDescriptorServesOnePurposeAtATime() throws {
        let n = try launcherOpens("rw", flags: O_RDWR)
        let first = try PassedDescriptor.take("fd:\(n)", purpose: "a read-write disk image", write: true)
        XCTAssertEqual(first.raw, n, "the launcher's number itself, not a copy")
        XCTAssertThrowsError(try PassedDescriptor.take("fd:\(n)", purpose: "a TAP queue", write: true)) {
            XCTAssertTrue("\($0)".contains("descriptor \(n) is already a read-write disk image"), "\($0)")
        }
        // Closed by its owner, the number is free for the next file opened there.
        first.close()
        let other = try launcherOpens("rw2", flags: O_RDWR)
        if other != n {
            XCTAssertEqual(dup2(other, n), n)
            launcherCloses(other)
        }
        let second = try PassedDescriptor.take("fd:\(n)", purpose: "a TAP queue", write: true)
        XCTAssertEqual(second.raw, n)
        second.close()
    }

    func testAPassedDiskImage() throws {
        let rw = try launcherOpens("disk.img", size: 3 << 20, flags: O_RDWR)
        do {
            let file = try BlockFile(path: "fd:\(rw)", readOnly: false)
            XCTAssertEqual(file.capacity, 3 << 20)
            XCTAssertFalse(file.isReadOnly)
            let bytes: [UInt8] = [1, 2, 3, 4]
            try bytes.withUnsafeBytes { try file.write(at: 4096, from: $0) }
            var back = [UInt8](repeating: 0, count: 4)
            try back.withUnsafeMutableBytes { try file.read(at: 4096, into: $0) }
            XCTAssertEqual(back, bytes)
        }

        let ro = try launcherOpens("ro.img", flags: O_RDONLY)
        XCTAssertThrowsError(try BlockFile(path: "fd:\(ro)", readOnly: false)) {
            XCTAssertTrue("\($0)".contains("disk image fd:\(ro): descriptor \(ro) is open read-only, and a read-write disk image needs it read-write"), "\($0)")
        }
        let reader = try BlockFile(path: "fd:\(ro)", readOnly: true)
        XCTAssertEqual(reader.capacity, 1 << 20)
    }

    func testAPassedTAPMustBeAnAttachedTunDescriptor() throws {
        let notTun = try launcherOpens("not-a-tap", flags: O_RDWR)
        XCTAssertThrowsError(try TapDevice(passed: "fd:\(notTun)")) {
            XCTAssertTrue("\($0)".contains("tap fd:\(notTun) is not an open /dev/net/tun attached to a TAP interface"), "\($0)")
        }
    }

    func testCapabilityNames() {
        XCTAssertEqual(Privileges.names(0), [])
        XCTAssertEqual(Privileges.names(1 << 0 | 1 << 14 | 1 << 21), ["cap_chown", "cap_ipc_lock", "cap_sys_admin"])
        XCTAssertEqual(Privileges.names(1 << 40 | 1 << 41), ["cap_checkpoint_restore", "cap_41"])
    }

    func testPrivilegeLine() {
        let root = Privileges.Report(uid: 0, euid: 0, effectiveBefore: (1 << 41) - 1, memlockLimit: nil, memlockRaised: true, otherThreads: 0)
        XCTAssertEqual(VMMRunner.privilegeLine(root),
                       "privileges: uid 0 (euid 0) dropped all 41 capabilities it held, for good (bounding set too), and set no_new_privs; "
                       + "RLIMIT_MEMLOCK raised to unlimited first (CAP_IPC_LOCK had let it pin memory past the limit)")
        let user = Privileges.Report(uid: 1000, euid: 1000, effectiveBefore: 0, memlockLimit: 8 << 20, memlockRaised: false, otherThreads: 2)
        XCTAssertEqual(VMMRunner.privilegeLine(user),
                       "privileges: uid 1000 (euid 1000) held no capability, for good (bounding set too), and set no_new_privs; "
                       + "RLIMIT_MEMLOCK 8 MiB; 2 thread(s) started earlier keep theirs, under the seccomp filter")
        let two = Privileges.Report(uid: 1000, euid: 1000, effectiveBefore: 1 << 12 | 1 << 14, memlockLimit: nil, memlockRaised: false, otherThreads: 0)
        XCTAssertTrue(VMMRunner.privilegeLine(two).contains("dropped cap_net_admin, cap_ipc_lock, for good"))
    }
}
