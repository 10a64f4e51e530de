import CShim
import XCTest
@testable import KVM

/// A made-up kvm_run page. It owns its memory, so the `ExitData` windows of
/// a decoded exit stay valid as long as the page does.
final class FakeRun {
    static let size = 3 * 4096 // KVM_GET_VCPU_MMAP_SIZE on x86: PIO data page at 0x1000
    let page = UnsafeMutableRawBufferPointer.allocate(byteCount: FakeRun.size, alignment: 8)
    init() { page.initializeMemory(as: UInt8.self, repeating: 0) }
    deinit { page.deallocate() }
    func put<T: FixedWidthInteger>(_ v: T, at off: Int) {
        withUnsafeBytes(of: v.littleEndian) { b in for (i, x) in b.enumerated() { page[off + i] = x } }
    }
    subscript(range: Range<Int>) -> [UInt8] { Array(page[range]) }
    func decode() -> VCPUExit { VCPUExit.decode(page) }
}

final class VCPUExitTests: XCTestCase {
    func testDecodesPortOutWithItsData() {
        let r = FakeRun()
        r.put(SHIM_KVM_EXIT_IO, at: SHIM_RUN_EXIT_REASON)
        r.put(SHIM_KVM_EXIT_IO_OUT, at: SHIM_RUN_IO_DIRECTION)
        r.put(UInt8(1), at: SHIM_RUN_IO_SIZE)
        r.put(UInt16(0x3F8), at: SHIM_RUN_IO_PORT)
        r.put(UInt32(1), at: SHIM_RUN_IO_COUNT)
        r.put(UInt64(0x1000), at: SHIM_RUN_IO_DATA_OFFSET)
        r.put(UInt8(0x41), at: 0x1000)
        guard case let .ioOut(port, size, data) = r.decode() else { return XCTFail("not a port write") }
        XCTAssertEqual(port, 0x3F8)
        XCTAssertEqual(size, 1)
        XCTAssertEqual(data.bytes, [0x41])
    }

    func testPortInDataIsTheRunPageAtDataOffset() {
        let r = FakeRun()
        r.put(SHIM_KVM_EXIT_IO, at: SHIM_RUN_EXIT_REASON)
        r.put(SHIM_KVM_EXIT_IO_IN, at: SHIM_RUN_IO_DIRECTION)
        r.put(UInt8(2), at: SHIM_RUN_IO_SIZE)
        r.put(UInt16(0x60), at: SHIM_RUN_IO_PORT)
        r.put(UInt32(3), at: SHIM_RUN_IO_COUNT) // rep insw, 3 elements
        r.put(UInt64(0x1000), at: SHIM_RUN_IO_DATA_OFFSET)
        guard case let .ioIn(port, size, data) = r.decode() else { return XCTFail("not a port read") }
        XCTAssertEqual(port, 0x60)
        XCTAssertEqual(size, 2)
        XCTAssertEqual(data.count, 6)
        XCTAssertTrue(data.store([1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(r[0x1000..<0x1007], [1, 2, 3, 4, 5, 6, 0], "stored where KVM reads it back")
    }

    func testRejectsPortDataOutsideRunPage() {
        let r = FakeRun()
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
        let r = FakeRun()
        r.put(SHIM_KVM_EXIT_MMIO, at: SHIM_RUN_EXIT_REASON)
        r.put(UInt64(0xFEB0_0000), at: SHIM_RUN_MMIO_PHYS_ADDR)
        r.put(UInt32(0xAABB_CCDD), at: SHIM_RUN_MMIO_DATA)
        r.put(UInt32(4), at: SHIM_RUN_MMIO_LEN)
        r.put(UInt8(1), at: SHIM_RUN_MMIO_IS_WRITE)
        guard case let .mmioWrite(address, data) = r.decode() else { return XCTFail("not an MMIO write") }
        XCTAssertEqual(address, 0xFEB0_0000)
        XCTAssertEqual(data.bytes, [0xDD, 0xCC, 0xBB, 0xAA])
        r.put(UInt32(1000), at: SHIM_RUN_MMIO_LEN)
        guard case let .mmioWrite(_, clamped) = r.decode() else { return XCTFail("not an MMIO write") }
        XCTAssertEqual(clamped.count, 8, "kvm_run.mmio.data has 8 bytes")
    }

    func testMMIOReadDataIsTheRunPagesDataField() {
        let r = FakeRun()
        r.put(SHIM_KVM_EXIT_MMIO, at: SHIM_RUN_EXIT_REASON)
        r.put(UInt64(0xD000_0020), at: SHIM_RUN_MMIO_PHYS_ADDR)
        r.put(UInt32(2), at: SHIM_RUN_MMIO_LEN)
        guard case let .mmioRead(address, data) = r.decode() else { return XCTFail("not an MMIO read") }
        XCTAssertEqual(address, 0xD000_0020)
        XCTAssertEqual(data.count, 2)
        XCTAssertTrue(data.store([0x99, 0x98]))
        XCTAssertFalse(data.store([1, 2, 3]), "longer than the access")
        XCTAssertEqual(r[SHIM_RUN_MMIO_DATA..<(SHIM_RUN_MMIO_DATA + 3)], [0x99, 0x98, 0])
    }

    func testExitDataAccessIsBoundsChecked() {
        let r = FakeRun()
        r.put(SHIM_KVM_EXIT_MMIO, at: SHIM_RUN_EXIT_REASON)
        r.put(UInt32(4), at: SHIM_RUN_MMIO_LEN)
        r.put(UInt32(0x0403_0201), at: SHIM_RUN_MMIO_DATA)
        guard case let .mmioRead(_, data) = r.decode() else { return XCTFail("not an MMIO read") }
        var two: UInt16 = 0
        withUnsafeMutableBytes(of: &two) { b in
            XCTAssertTrue(data.load(from: 2, into: b))
            XCTAssertFalse(data.load(from: 3, into: b), "runs past the end")
            XCTAssertFalse(data.load(from: -1, into: b))
            XCTAssertFalse(data.load(from: Int.max, into: b), "offset + length overflows")
        }
        XCTAssertEqual(two, 0x0403)
        XCTAssertTrue(data.store([9], at: 3))
        XCTAssertFalse(data.store([9], at: 4))
        XCTAssertEqual(data.bytes, [1, 2, 3, 9])
    }

    func testDecodesShutdownInternalErrorAndSystemEvent() {
        let r = FakeRun()
        r.put(SHIM_KVM_EXIT_SHUTDOWN, at: SHIM_RUN_EXIT_REASON)
        XCTAssertEqual(r.decode(), .shutdown)
        r.put(SHIM_KVM_EXIT_INTERNAL_ERROR, at: SHIM_RUN_EXIT_REASON)
        r.put(SHIM_KVM_INTERNAL_ERROR_EMULATION, at: SHIM_RUN_INTERNAL_SUBERROR)
        r.put(UInt32(1000), at: SHIM_RUN_INTERNAL_NDATA) // clamped to 16
        if case let .internalError(sub, data) = r.decode() {
            XCTAssertEqual(sub, SHIM_KVM_INTERNAL_ERROR_EMULATION)
            XCTAssertEqual(data.count, 16)
        } else { XCTFail("not internal error") }
        XCTAssertEqual(VCPUExit.internalErrorEmulation, SHIM_KVM_INTERNAL_ERROR_EMULATION)
        r.put(SHIM_KVM_EXIT_SYSTEM_EVENT, at: SHIM_RUN_EXIT_REASON)
        r.put(SHIM_KVM_SYSTEM_EVENT_RESET, at: SHIM_RUN_SYSTEM_EVENT_TYPE)
        XCTAssertEqual(r.decode(), .systemEvent(.reset))
        r.put(SHIM_KVM_SYSTEM_EVENT_SHUTDOWN, at: SHIM_RUN_SYSTEM_EVENT_TYPE)
        XCTAssertEqual(r.decode(), .systemEvent(.shutdown))
        r.put(SHIM_KVM_SYSTEM_EVENT_CRASH, at: SHIM_RUN_SYSTEM_EVENT_TYPE)
        XCTAssertEqual(r.decode(), .systemEvent(.crash))
        r.put(UInt32(77), at: SHIM_RUN_SYSTEM_EVENT_TYPE)
        XCTAssertEqual(r.decode(), .systemEvent(.other(77)))
        XCTAssertEqual(SystemEvent(type: 77).type, 77)
        XCTAssertEqual(SystemEvent.reset.type, SHIM_KVM_SYSTEM_EVENT_RESET)
        r.put(UInt32(9999), at: SHIM_RUN_EXIT_REASON)
        XCTAssertEqual(r.decode(), .unknown(reason: 9999))
    }

    func testShortPageIsUnknown() {
        var b = [UInt8](repeating: 0, count: 16)
        XCTAssertEqual(b.withUnsafeMutableBytes { VCPUExit.decode($0) }, .unknown(reason: UInt32.max))
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
