import CShim
import XCTest
@testable import KVM

/// A made-up kvm_run page.
struct FakeRun {
    var bytes = [UInt8](repeating: 0, count: 3 * 4096) // KVM_GET_VCPU_MMAP_SIZE on x86: PIO data page at 0x1000
    mutating func put<T: FixedWidthInteger>(_ v: T, at off: Int) {
        withUnsafeBytes(of: v.littleEndian) { b in for (i, x) in b.enumerated() { bytes[off + i] = x } }
    }
    func decode() -> VCPUExit { bytes.withUnsafeBytes { VCPUExit.decode($0) } }
}

final class VCPUExitTests: XCTestCase {
    func testDecodesPortOut() {
        var r = FakeRun()
        r.put(SHIM_KVM_EXIT_IO, at: SHIM_RUN_EXIT_REASON)
        r.put(SHIM_KVM_EXIT_IO_OUT, at: SHIM_RUN_IO_DIRECTION)
        r.put(UInt8(1), at: SHIM_RUN_IO_SIZE)
        r.put(UInt16(0x3F8), at: SHIM_RUN_IO_PORT)
        r.put(UInt32(1), at: SHIM_RUN_IO_COUNT)
        r.put(UInt64(0x1000), at: SHIM_RUN_IO_DATA_OFFSET)
        XCTAssertEqual(r.decode(), .io(.init(isOut: true, port: 0x3F8, size: 1, count: 1, dataOffset: 0x1000)))
    }

    func testRejectsPortDataOutsideRunPage() {
        var r = FakeRun()
        r.put(SHIM_KVM_EXIT_IO, at: SHIM_RUN_EXIT_REASON)
        r.put(UInt8(4), at: SHIM_RUN_IO_SIZE)
        r.put(UInt32(0xFFFF_FFFF), at: SHIM_RUN_IO_COUNT)
        r.put(UInt64(0x1000), at: SHIM_RUN_IO_DATA_OFFSET)
        XCTAssertEqual(r.decode(), .unknown(reason: SHIM_KVM_EXIT_IO))
        r.put(UInt32(1), at: SHIM_RUN_IO_COUNT)
        r.put(UInt64.max, at: SHIM_RUN_IO_DATA_OFFSET)
        XCTAssertEqual(r.decode(), .unknown(reason: SHIM_KVM_EXIT_IO))
        r.put(UInt64(0), at: SHIM_RUN_IO_DATA_OFFSET)
        r.put(UInt8(3), at: SHIM_RUN_IO_SIZE) // not a valid port width
        XCTAssertEqual(r.decode(), .unknown(reason: SHIM_KVM_EXIT_IO))
    }

    func testDecodesMMIOWriteAndClampsLength() {
        var r = FakeRun()
        r.put(SHIM_KVM_EXIT_MMIO, at: SHIM_RUN_EXIT_REASON)
        r.put(UInt64(0xFEB0_0000), at: SHIM_RUN_MMIO_PHYS_ADDR)
        r.put(UInt32(0xAABB_CCDD), at: SHIM_RUN_MMIO_DATA)
        r.put(UInt32(4), at: SHIM_RUN_MMIO_LEN)
        r.put(UInt8(1), at: SHIM_RUN_MMIO_IS_WRITE)
        XCTAssertEqual(r.decode(), .mmio(address: 0xFEB0_0000, length: 4, isWrite: true, data: [0xDD, 0xCC, 0xBB, 0xAA]))
        r.put(UInt32(1000), at: SHIM_RUN_MMIO_LEN)
        if case let .mmio(_, len, _, data) = r.decode() {
            XCTAssertEqual(len, 8)
            XCTAssertEqual(data.count, 8)
        } else { XCTFail("not mmio") }
    }

    func testDecodesShutdownInternalErrorAndSystemEvent() {
        var r = FakeRun()
        r.put(SHIM_KVM_EXIT_SHUTDOWN, at: SHIM_RUN_EXIT_REASON)
        XCTAssertEqual(r.decode(), .shutdown)
        r.put(SHIM_KVM_EXIT_INTERNAL_ERROR, at: SHIM_RUN_EXIT_REASON)
        r.put(SHIM_KVM_INTERNAL_ERROR_EMULATION, at: SHIM_RUN_INTERNAL_SUBERROR)
        r.put(UInt32(1000), at: SHIM_RUN_INTERNAL_NDATA) // clamped to 16
        if case let .internalError(sub, data) = r.decode() {
            XCTAssertEqual(sub, SHIM_KVM_INTERNAL_ERROR_EMULATION)
            XCTAssertEqual(data.count, 16)
        } else { XCTFail("not internal error") }
        r.put(SHIM_KVM_EXIT_SYSTEM_EVENT, at: SHIM_RUN_EXIT_REASON)
        r.put(SHIM_KVM_SYSTEM_EVENT_RESET, at: SHIM_RUN_SYSTEM_EVENT_TYPE)
        XCTAssertEqual(r.decode(), .systemEvent(type: SHIM_KVM_SYSTEM_EVENT_RESET))
        r.put(UInt32(9999), at: SHIM_RUN_EXIT_REASON)
        XCTAssertEqual(r.decode(), .unknown(reason: 9999))
    }

    func testShortPageIsUnknown() {
        let b = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(b.withUnsafeBytes { VCPUExit.decode($0) }, .unknown(reason: UInt32.max))
    }

    func testCPUIDPolicy() {
        let supported = [CPUIDEntry(function: 1, ebx: 0xFFFF_1234, ecx: 0, edx: 0),
                         CPUIDEntry(function: 0xB, index: 1, edx: 77),
                         CPUIDEntry(function: 6, ecx: 0xF)]
        let g = CPUIDPolicy.guestCPUID(supported: supported, apicID: 3, vcpuCount: 4)
        XCTAssertEqual(g[0].ebx, 0x0304_1234)
        XCTAssertEqual(g[0].ecx >> 31, 1)
        XCTAssertEqual(g[0].edx & (1 << 28), 1 << 28)
        XCTAssertEqual(g[1].edx, 3)
        XCTAssertEqual(g[2].ecx, 0x7)
        let one = CPUIDPolicy.guestCPUID(supported: supported, apicID: 0, vcpuCount: 1)
        XCTAssertEqual(one[0].edx & (1 << 28), 0)
        XCTAssertEqual(one[0].ecx & (1 << 24), 0)
        let deadline = CPUIDPolicy.guestCPUID(supported: supported, apicID: 0, vcpuCount: 1, tscDeadline: true)
        XCTAssertEqual(deadline[0].ecx & (1 << 24), 1 << 24)
    }

    func testHostBackendFromFakeSysModule() throws {
        let dir = NSTemporaryDirectory() + "sysmod-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir + "/kvm_pvm", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertEqual(KVMSystem.hostBackend(sysModule: dir), .pvm)
        try FileManager.default.createDirectory(atPath: dir + "/kvm_amd", withIntermediateDirectories: true)
        XCTAssertEqual(KVMSystem.hostBackend(sysModule: dir), .amdSVM)
    }
}

final class GSIRouteTests: XCTestCase {
    func testDefaultRoutingMatchesKVMsOwn() {
        let r = GSIRoute.defaultX86
        XCTAssertEqual(r.count, 16 * 2 + 8)
        XCTAssertEqual(r[0], .irqchip(gsi: 0, chip: 2, pin: 0))
        XCTAssertEqual(r[1], .irqchip(gsi: 0, chip: 0, pin: 0))
        XCTAssertEqual(r[19], .irqchip(gsi: 9, chip: 1, pin: 1))
        XCTAssertEqual(r.last, .irqchip(gsi: 23, chip: 2, pin: 23))
    }

    func testMSIRouteEncoding() {
        let e = GSIRoute.msi(gsi: 24, address: 0x1_FEE0_1000, data: 0x4041).kvm
        XCTAssertEqual(e.gsi, 24)
        XCTAssertEqual(e.type, SHIM_KVM_IRQ_ROUTING_MSI)
        XCTAssertEqual(e.u.msi.address_lo, 0xFEE0_1000)
        XCTAssertEqual(e.u.msi.address_hi, 1)
        XCTAssertEqual(e.u.msi.data, 0x4041)
        XCTAssertEqual(MemoryLayout<kvm_irq_routing_entry>.size, 48)
    }
}

final class KVMSystemErrorTests: XCTestCase {
    func testMissingDeviceIsExplained() {
        XCTAssertThrowsError(try KVMSystem(path: "/nonexistent/kvm")) { e in
            XCTAssertEqual(e as? KVMError, .deviceMissing(path: "/nonexistent/kvm"))
            XCTAssertTrue("\(e)".contains("KVM is not available on this host"), "\(e)")
        }
    }

    func testNotAKVMDeviceIsRefused() {
        // /dev/null opens, but KVM_GET_API_VERSION fails on it: an ioctl error naming the call.
        XCTAssertThrowsError(try KVMSystem(path: "/dev/null")) { e in
            XCTAssertTrue("\(e)".contains("KVM_GET_API_VERSION"), "\(e)")
        }
    }

    func testPermissionMessageSaysWhatToDo() {
        XCTAssertTrue(KVMError.permissionDenied(path: "/dev/kvm").description.contains("'kvm' group"))
        XCTAssertTrue(KVMError.missingCapability("KVM_CAP_IRQFD").description.contains("KVM_CAP_IRQFD"))
    }
}
