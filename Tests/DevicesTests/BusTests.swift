import Devices
import Foundation
import Synchronization
import XCTest

final class BusTests: XCTestCase {
    func testInsertRejectsOverlaps() throws {
        let bus = Bus()
        try bus.insert(NullDevice(), base: 0x100, length: 0x10)
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0x100, length: 0x10)) {
            XCTAssertEqual($0 as? BusError, .overlap(base: 0x100, length: 0x10))
        }
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0xF8, length: 0x9), "covers the first byte")
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0x10F, length: 0x1), "the last byte")
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0x104, length: 0x2), "inside")
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0x0, length: 0x1000), "around")
        XCTAssertNoThrow(try bus.insert(NullDevice(), base: 0xF0, length: 0x10), "adjacent below")
        XCTAssertNoThrow(try bus.insert(NullDevice(), base: 0x110, length: 0x10), "adjacent above")
        XCTAssertEqual(bus.entries.map(\.base), [0xF0, 0x100, 0x110], "kept sorted")
    }

    func testInsertRejectsEmptyAndWrappingRanges() {
        let bus = Bus()
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0x10, length: 0)) {
            XCTAssertEqual($0 as? BusError, .emptyRange(base: 0x10))
        }
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0xFFFF_FFFF_FFFF_FFF0, length: 0x20))
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: .max, length: .max))
        // The range must end at or below 2^64 - 1 (the end is exclusive).
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: .max, length: 1))
        XCTAssertNoThrow(try bus.insert(NullDevice(), base: 0xFFFF_FFFF_FFFF_FFF0, length: 0xF))
        XCTAssertTrue(BusError.overlap(base: 0x10, length: 0x2).description.contains("0x10+0x2"))
    }

    func testResolveEdges() throws {
        let bus = Bus()
        let a = NullDevice(), b = NullDevice()
        try bus.insert(a, base: 0x3F8, length: 8)
        try bus.insert(b, base: 0x400, length: 4)

        XCTAssertNil(bus.resolve(0x3F7, size: 1), "just below")
        XCTAssertTrue(bus.resolve(0x3F8, size: 1)?.0 === a)
        XCTAssertEqual(bus.resolve(0x3FF, size: 1)?.1, 7, "last byte")
        XCTAssertEqual(bus.resolve(0x3FC, size: 4)?.1, 4, "a size reaching exactly the end")
        XCTAssertNil(bus.resolve(0x3FE, size: 4), "a size crossing the end")
        XCTAssertNil(bus.resolve(0x3FF, size: 2), "crossing into the adjacent device")
        XCTAssertTrue(bus.resolve(0x400, size: 4)?.0 === b, "address at the end of a is b's start")
        XCTAssertNil(bus.resolve(0x404, size: 1), "address at the end of the last range")
        XCTAssertNil(bus.resolve(0, size: 1))
        XCTAssertNil(bus.resolve(0xFFFF_FFFF_FFFF_FFFF, size: 1))
        XCTAssertNil(bus.resolve(0xFFFF_FFFF_FFFF_FFFF, size: 8))
        XCTAssertNil(bus.resolve(0x3F8, size: -1), "a negative size does not trap")
        XCTAssertNil(bus.resolve(0x3F8, size: .max))
        XCTAssertNil(bus.resolve(0x3F8, size: .min))
        XCTAssertEqual(bus.resolve(0x3F8, size: 0)?.1, 0)
    }

    func testResolveAtTheTopOfTheAddressSpace() throws {
        let bus = Bus()
        let top = NullDevice()
        try bus.insert(top, base: 0xFFFF_FFFF_FFFF_FF00, length: 0xFF)
        XCTAssertTrue(bus.resolve(0xFFFF_FFFF_FFFF_FFFE, size: 1)?.0 === top)
        XCTAssertNil(bus.resolve(0xFFFF_FFFF_FFFF_FFFE, size: 2))
        XCTAssertNil(bus.resolve(0xFFFF_FFFF_FFFF_FFFF, size: 1))
        XCTAssertNil(bus.resolve(0xFFFF_FFFF_FFFF_FFFF, size: 0))
    }

    func testResolveOnAnEmptyBus() {
        XCTAssertNil(Bus().resolve(0, size: 1))
        XCTAssertNil(Bus().resolve(.max, size: 1))
    }

    func testReadAndWriteReportWhetherADeviceAnswered() throws {
        let bus = Bus()
        let scratch = IgnoredPorts(readValue: 0x42)
        try bus.insert(scratch, base: 0x80, length: 1)
        var buf = [UInt8](repeating: 0, count: 2)
        XCTAssertTrue(buf.withUnsafeMutableBytes { bus.read(0x80, data: UnsafeMutableRawBufferPointer(rebasing: $0[0..<1])) })
        XCTAssertEqual(buf[0], 0x42)
        XCTAssertFalse(buf.withUnsafeMutableBytes { bus.read(0x80, data: $0) }, "2 bytes cross the end")
        XCTAssertFalse(buf.withUnsafeBytes { bus.write(0x81, data: $0) })
    }

    func testManyDevicesResolve() throws {
        let bus = Bus()
        var devices: [NullDevice] = []
        for i in 0..<100 {
            let d = NullDevice()
            devices.append(d)
            try bus.insert(d, base: UInt64(1000 - i * 10), length: 5) // inserted in descending order
        }
        for i in 0..<100 {
            let base = UInt64(1000 - i * 10)
            XCTAssertTrue(bus.resolve(base + 4, size: 1)?.0 === devices[i])
            XCTAssertNil(bus.resolve(base + 5, size: 1), "the gap after it")
        }
    }

    func testFreezeKeepsLookupsAndRefusesInserts() throws {
        let bus = Bus()
        let a = NullDevice(), b = NullDevice()
        try bus.insert(b, base: 0x400, length: 4)
        try bus.insert(a, base: 0x3F8, length: 8)
        XCTAssertFalse(bus.isFrozen)
        bus.freeze()
        XCTAssertTrue(bus.isFrozen)
        XCTAssertEqual(bus.entries.map(\.base), [0x3F8, 0x400], "the same sorted entries")
        XCTAssertTrue(bus.resolve(0x3FF, size: 1)?.0 === a)
        XCTAssertEqual(bus.resolve(0x3FF, size: 1)?.1, 7)
        XCTAssertTrue(bus.resolve(0x400, size: 4)?.0 === b)
        XCTAssertNil(bus.resolve(0x3FF, size: 2), "crossing into the adjacent device")
        XCTAssertNil(bus.resolve(0x404, size: 1))

        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0x1000, length: 1)) {
            XCTAssertEqual($0 as? BusError, .frozen(base: 0x1000, length: 1))
            XCTAssertTrue("\($0)".contains("frozen"))
        }
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0x3F8, length: 8), "an overlap is refused as frozen too") {
            XCTAssertEqual($0 as? BusError, .frozen(base: 0x3F8, length: 8))
        }
        XCTAssertNil(bus.resolve(0x1000, size: 1), "the refused insert changed nothing")
        XCTAssertEqual(bus.entries.count, 2)

        bus.freeze()
        XCTAssertTrue(bus.isFrozen, "a second freeze is a no-op")
        XCTAssertEqual(bus.entries.count, 2)
    }

    func testFreezingAnEmptyBus() {
        let bus = Bus()
        bus.freeze()
        XCTAssertNil(bus.resolve(0, size: 1))
        XCTAssertEqual(bus.entries.count, 0)
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0, length: 1))
    }

    func testEmptyAndWrappingRangesAreReportedAsSuchAfterFreezing() {
        let bus = Bus()
        bus.freeze()
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: 0x10, length: 0)) {
            XCTAssertEqual($0 as? BusError, .emptyRange(base: 0x10))
        }
        XCTAssertThrowsError(try bus.insert(NullDevice(), base: .max, length: 1)) {
            XCTAssertEqual($0 as? BusError, .overlap(base: .max, length: 1))
        }
    }

    /// Lookups race inserts and the freeze: every lookup sees either nothing
    /// or the whole device, inserts before the freeze land, inserts after it
    /// are refused, and nothing is lost.
    func testLookupsDuringInsertsAndFreeze() throws {
        let bus = Bus()
        let devices = (0..<64).map { _ in NullDevice() }
        let outcomes = Outcomes()
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            if worker == 0 {
                for (i, d) in devices.enumerated() {
                    if i == 48 { bus.freeze() }
                    do {
                        try bus.insert(d, base: UInt64(i) * 0x10, length: 0x10)
                        outcomes.record(inserted: i)
                    } catch {
                        XCTAssertEqual(error as? BusError, .frozen(base: UInt64(i) * 0x10, length: 0x10))
                    }
                }
            } else {
                for n in 0..<20_000 {
                    let i = (n &* 7 &+ worker) % devices.count
                    if let (d, off) = bus.resolve(UInt64(i) * 0x10 + 0xF, size: 1) {
                        XCTAssertTrue(d === devices[i])
                        XCTAssertEqual(off, 0xF)
                    }
                }
            }
        }
        XCTAssertEqual(outcomes.inserted, Array(0..<48))
        XCTAssertEqual(bus.entries.count, 48)
        for i in 0..<64 {
            XCTAssertEqual(bus.resolve(UInt64(i) * 0x10, size: 0x10)?.0 === devices[i], i < 48)
        }
    }
}

/// Which inserts succeeded, from the concurrent test's writer thread.
private final class Outcomes: Sendable {
    private let indices = Mutex<[Int]>([])
    func record(inserted i: Int) { indices.withLock { $0.append(i) } }
    var inserted: [Int] { indices.withLock { $0 } }
}
