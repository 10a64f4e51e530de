import KVM
import PCI
import TestFakes
import XCTest
@testable import VMM

/// The glue over a device that is not a VFIO cdev (a vfio-user server's, as
/// `AssignedDeviceFile`): the same model, and an I/O BAR its server offers to
/// mmap still always traps (a memory slot there would sit at the port number,
/// in guest RAM).
final class AssignedDeviceFileTests: XCTestCase {
    /// BAR0: 4 KiB of memory, BAR1: 16 KiB of I/O; both "mappable" as a server
    /// may say; config space with those BAR types.
    final class FakeFile: AssignedDeviceFile, @unchecked Sendable {
        var config = [UInt8](repeating: 0, count: 256)
        var mapped: [(index: UInt32, offset: UInt64, length: UInt64)] = []
        let pages = UnsafeMutableRawPointer.allocate(byteCount: 0x4000, alignment: 4096)
        init() {
            config.replaceSubrange(0..<4, with: [0xAD, 0xDE, 0xEF, 0xBE])
            config[0x14] = 0x01 // BAR1: I/O
        }
        deinit { pages.deallocate() }
        func regionSize(_ index: UInt32) -> UInt64? { [0: 0x1000, 1: 0x4000, 7: 256][index] }
        func readConfig(offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
            for i in 0..<buffer.count { buffer[i] = offset + i < config.count ? config[offset + i] : 0xFF }
            return true
        }
        func writeConfig(offset: Int, from buffer: UnsafeRawBufferPointer) -> Bool { true }
        func readRegion(_ index: UInt32, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool { true }
        func writeRegion(_ index: UInt32, offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool { true }
        func mappableAreas(_ index: UInt32) -> [Range<UInt64>] { index == 0 ? [0..<0x1000] : index == 1 ? [0..<0x4000] : [] }
        func mapRegion(_ index: UInt32, offset: UInt64, length: UInt64) throws -> UnsafeMutableRawPointer {
            mapped.append((index, offset, length))
            return pages
        }
        func enableINTx(trigger: Int32, resample: Int32) throws {}
        func enableMSI(eventfds: [Int32]) throws {}
        func enableMSIX(eventfds: [Int32]) throws {}
        func disable(_ mode: AssignedInterruptMode) throws {}
        func resetForExit() throws -> String { "reset" }
        func close() {}
    }

    func testIOBarIsNeverAMemorySlot() throws {
        let vm = RecordingVM(), log = RecordingLog(), file = FakeFile()
        let d = PassthroughDevice(device: file, name: "/tmp/vfu.sock", kind: "vfio-user", barAddresses: [:],
                                  entryDescription: "vfio_user[0].socket /tmp/vfu.sock", behindVIOMMU: false, vm: vm,
                                  router: KVMMSIRouter(vm: vm, logger: log.logger), slots: MemorySlotPool(first: 2), logger: log.logger)
        let m = try d.makeModel()
        XCTAssertEqual(m.bars.map(\.kind), [.memory32, .io])
        XCTAssertEqual(m.bars.map(\.decodeSize), [0x1000, 0x4000], "a 16 KiB I/O BAR is taken as it is")
        XCTAssertEqual(file.mapped.map(\.index), [0], "only the memory BAR is mapped")
        XCTAssertNil(d.vfio)
        d.barMoved(1, to: 0x8000)
        XCTAssertEqual(vm.take(), [], "the I/O BAR gets no memory slot")
        d.barMoved(0, to: 0xE000_0000)
        XCTAssertEqual(vm.take(), [.memorySlot(2, guestAddress: 0xE000_0000, size: 0x1000,
                                               hostAddress: UInt64(UInt(bitPattern: file.pages)), readOnly: false)])
        XCTAssertEqual(d.mappingSummary, "BAR 0: 0x0+4 KiB mapped into the guest")
        XCTAssertEqual(d.shutdown(), "reset and released")
    }
}
