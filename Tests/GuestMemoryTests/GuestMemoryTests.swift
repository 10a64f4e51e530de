import Glibc
import HostSys
import XCTest
@testable import GuestMemory

final class GuestMemoryTests: XCTestCase {
    func testArrayMemoryWithHoles() throws {
        let m = try ArrayGuestMemory(regions: [(0, 0x1000), (0x3000, 0x1000)])
        try m.writeInteger(UInt32(0xDEADBEEF), at: GuestAddress(0xFFC))
        XCTAssertEqual(try m.readInteger(UInt32.self, at: GuestAddress(0xFFC)), 0xDEADBEEF)
        XCTAssertEqual(try m.readBytes(at: GuestAddress(0xFFC), count: 4), [0xEF, 0xBE, 0xAD, 0xDE])
        // Crossing the end of a region into the hole fails.
        XCTAssertThrowsError(try m.readInteger(UInt32.self, at: GuestAddress(0xFFE)))
        XCTAssertThrowsError(try m.writeBytes([1], at: GuestAddress(0x2000)))
        XCTAssertThrowsError(try m.readBytes(at: GuestAddress(UInt64.max), count: 2))
        XCTAssertTrue(m.contains(GuestAddress(0x3000), length: 0x1000))
        XCTAssertFalse(m.contains(GuestAddress(0x3000), length: 0x1001))
        XCTAssertFalse(m.contains(GuestAddress(UInt64.max), length: UInt64.max))
    }

    func testOverlappingLayoutRejected() {
        XCTAssertThrowsError(try ArrayGuestMemory(regions: [(0, 0x2000), (0x1000, 0x1000)]))
        XCTAssertThrowsError(try ArrayGuestMemory(regions: [(UInt64.max - 10, 0x1000)]))
        XCTAssertThrowsError(try ArrayGuestMemory(regions: [(0, 0)]))
    }

    func testAddressArithmeticIsChecked() {
        XCTAssertNil(GuestAddress(UInt64.max).adding(1))
        XCTAssertEqual(GuestAddress(1).adding(1), GuestAddress(2))
        XCTAssertThrowsError(try GuestAddress(UInt64.max).checkedAdding(1))
    }

    func testMemoryMapSplitsAtThreeGiB() {
        let small = GuestMemoryMap(ramBytes: 512 << 20)
        XCTAssertEqual(small.regions, [.init(base: 0, size: 512 << 20)])
        let big = GuestMemoryMap(ramBytes: 4 << 30)
        XCTAssertEqual(big.regions, [.init(base: 0, size: 3 << 30), .init(base: 4 << 30, size: 1 << 30)])
        XCTAssertEqual(big.ramEnd, 5 << 30)
        XCTAssertEqual(big.lowRAMEnd, 3 << 30)
    }

    func testGuestRAMIsMemfdBackedAndChecked() throws {
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        try ram.writeBytes([1, 2, 3], at: GuestAddress(0x1FFFFD))
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(0x1FFFFD), count: 3), [1, 2, 3])
        XCTAssertThrowsError(try ram.writeBytes([1, 2, 3, 4], at: GuestAddress(0x1FFFFD)))
        try ram.zero(at: GuestAddress(0), length: 2 << 20)
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(0x1FFFFD), count: 3), [0, 0, 0])
        XCTAssertEqual(ram.slots.count, 1)
    }

    /// `populate` faults in every page (the memfd's blocks go from none to
    /// all of it) on several threads, chunk by chunk, writing nothing.
    func testPopulateFaultsInAllOfGuestRAMWithoutWritingIt() throws {
        let bytes = 2 * GuestRAM.populateChunk + (4 << 20) // three chunks, the last one short
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: UInt64(bytes)))
        func resident() -> Int {
            var st = stat()
            XCTAssertEqual(fstat(ram.slots[0].mapping.fd.raw, &st), 0)
            return Int(st.st_blocks) * 512
        }
        try ram.writeBytes([7], at: GuestAddress(0x1234))
        XCTAssertEqual(resident(), 4096, "only the page written")
        XCTAssertEqual(try ram.populate(threads: 3), UInt64(bytes))
        XCTAssertEqual(resident(), bytes)
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(0x1233), count: 3), [0, 7, 0], "contents unchanged")
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(UInt64(bytes) - 2), count: 2), [0, 0])
    }

    func testPopulateRefusesARangeOutsideTheMapping() throws {
        let m = try SharedMemoryMapping(name: "test", size: 1 << 20)
        XCTAssertThrowsError(try m.populate(offset: 0, length: (1 << 20) + 4096))
        XCTAssertThrowsError(try m.populate(offset: 1 << 20, length: 4096))
        XCTAssertThrowsError(try m.populate(offset: -4096, length: 4096))
        XCTAssertNoThrow(try m.populate(offset: 4096, length: 8192))
    }
}
