import Bits
import GuestMemory
import XCTest
@testable import PCI

/// BARs placed where the user asked (`[[passthrough]] bars = { ... }`).
final class PlacementTests: XCTestCase {
    func device(_ bars: [(Int, UInt64, PCIBarKind, Bool)]) throws -> TestDevice {
        var c = PCIConfigSpace.type0(vendorID: 0x1234, deviceID: 0x0002, classCode: 0x03_00_00, interruptPin: .intA)
        for (i, size, kind, pf) in bars { try c.setBar(i, size: size, kind: kind, prefetchable: pf) }
        return try TestDevice(config: c)
    }

    var windows: PCIWindows { PCIWindows.standard(memoryMap: GuestMemoryMap(ramBytes: 512 << 20)) }

    func testPlacedBarGoesWhereAskedAndOthersAroundIt() throws {
        let bus = PCIRootBus(windows: windows)
        let gpu = try device([(0, 16 << 20, .memory32, false), (2, 8 << 30, .memory64, true)])
        _ = try bus.attach(gpu, placement: [2: 0x8_0000_0000, 0: 0xC100_0000])
        XCTAssertEqual(gpu.barRegions.map(\.address), [0xC100_0000, 0x8_0000_0000])
        // A second device's 64-bit BAR is allocated around the reservation.
        let other = try device([(0, 8 << 30, .memory64, true)])
        _ = try bus.attach(other)
        let a = try XCTUnwrap(other.barRegions.first?.address)
        XCTAssertTrue(a + (8 << 30) <= 0x8_0000_0000 || a >= 0xA_0000_0000, "overlaps the placed BAR: \(hex(a))")
    }

    func testPlacementErrorsSayWhy() throws {
        let cases: [([Int: UInt64], String)] = [
            ([2: 0x8_0000_1000], "aligned to its size"),
            ([2: 0x1000_0000_0000], "outside the 64-bit MMIO window"),
            ([4: 0x8_0000_0000], "no BAR 4"),
            ([0: 0x8000_0000], "outside the 32-bit MMIO window"),
        ]
        for (placement, text) in cases {
            let bus = PCIRootBus(windows: windows)
            let d = try device([(0, 16 << 20, .memory32, false), (2, 8 << 30, .memory64, true)])
            XCTAssertThrowsError(try bus.attach(d, placement: placement), "\(placement)") { e in
                XCTAssertTrue("\(e)".contains(text), "\(e)")
            }
            XCTAssertNil(bus.device(at: 1), "a failed attach leaves the slot free")
        }
    }

    func testOverlappingPlacementsAreRefused() throws {
        let bus = PCIRootBus(windows: windows)
        _ = try bus.attach(try device([(0, 1 << 20, .memory32, false)]), placement: [0: 0xC010_0000])
        XCTAssertThrowsError(try bus.attach(try device([(0, 2 << 20, .memory32, false)]), placement: [0: 0xC000_0000])) { e in
            XCTAssertTrue("\(e)".contains("overlaps another BAR at 0xc0100000"), "\(e)")
        }
    }

    func testBarLargerThanTheWindowSaysDoesNotFit() throws {
        let bus = PCIRootBus(windows: windows)
        XCTAssertThrowsError(try bus.attach(try device([(2, 128 << 30, .memory64, true)]))) { e in
            XCTAssertTrue("\(e)".contains("does not fit in the"), "\(e)")
            XCTAssertTrue("\(e)".contains("128 GiB"), "\(e)")
        }
    }
}
