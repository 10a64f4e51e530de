import GuestMemory
import XCTest
@testable import PCI

final class AllocationTests: XCTestCase {
    func device(_ bars: [(Int, UInt64, PCIBarKind, Bool)], rom: UInt64? = nil, pin: PCIInterruptPin? = .intA) throws -> TestDevice {
        var c = PCIConfigSpace.type0(vendorID: 0x1234, deviceID: 0x0001, classCode: 0xFF_00_00, interruptPin: pin)
        for (i, size, kind, pf) in bars { try c.setBar(i, size: size, kind: kind, prefetchable: pf) }
        if let r = rom { try c.setExpansionROM(size: r) }
        return try TestDevice(config: c)
    }

    func testStandardWindows() {
        let small = PCIWindows.standard(memoryMap: GuestMemoryMap(ramBytes: 512 << 20))
        XCTAssertEqual(small.mmio32, PCIAddressWindow(base: 0xC000_0000, size: 0x2000_0000))
        XCTAssertEqual(small.ecam, PCIAddressWindow(base: 0xE000_0000, size: 0x10_0000))
        XCTAssertEqual(small.io, PCIAddressWindow(base: 0x8000, size: 0x8000))
        XCTAssertEqual(small.mmio64, PCIAddressWindow(base: 0x1_0000_0000, size: 64 << 30))
        // 8.5 GiB RAM: 3 GiB low, 5.5 GiB from 4 GiB to 9.5 GiB; window at 10 GiB.
        // Something of the machine's above RAM (the lab's copy of RAM at 4 GiB) pushes the window up.
        XCTAssertEqual(PCIWindows.standard(memoryMap: GuestMemoryMap(ramBytes: 512 << 20), mmio64Floor: 4 << 30 + 512 << 20).mmio64.base,
                       5 << 30)
        XCTAssertEqual(PCIWindows.standard(memoryMap: GuestMemoryMap(ramBytes: 512 << 20), mmio64Floor: 1 << 30).mmio64.base,
                       4 << 30, "a floor below 4 GiB changes nothing")
        let big = PCIWindows.standard(memoryMap: GuestMemoryMap(ramBytes: 8 << 30 + 512 << 20))
        XCTAssertEqual(big.mmio64.base, 10 << 30)
        XCTAssertEqual(big.mmio64.end, 74 << 30)
        // Windows stay clear of RAM, the IOAPIC and the LAPIC.
        XCTAssertLessThanOrEqual(small.ecam.end, GuestMemoryMap.ioapicBase)
        XCTAssertGreaterThanOrEqual(small.mmio32.base, GuestMemoryMap.lowRAMLimit)
    }

    func testAllocationOrderAndAlignment() throws {
        let bus = PCIRootBus(windows: testWindows)
        let a = try device([(0, 0x100, .memory32, false), (1, 0x2_0000, .memory32, false), (2, 0x40, .io, false),
                            (3, 0x4000, .memory64, true)], rom: 0x800)
        let b = try device([(0, 0x10, .memory32, false), (1, 0x8, .io, false), (2, 1 << 30, .memory64, true)])
        XCTAssertEqual(try bus.attach(a), PCIAddress(device: 1))
        XCTAssertEqual(try bus.attach(b), PCIAddress(device: 2))
        XCTAssertEqual(a.barRegions, [
            PCIBarRegion(index: 0, address: 0xC000_0000, size: 0x100, kind: .memory32, prefetchable: false),
            PCIBarRegion(index: 1, address: 0xC002_0000, size: 0x2_0000, kind: .memory32, prefetchable: false),
            PCIBarRegion(index: 2, address: 0xC000, size: 0x40, kind: .io, prefetchable: false),
            PCIBarRegion(index: 3, address: 0x1_0000_0000, size: 0x4000, kind: .memory64, prefetchable: true),
        ], "first fit, natural alignment, 4 KiB minimum for memory")
        XCTAssertEqual(cfgRead(a, 0x30, 4), 0xC000_1000, "ROM at the next free page, left disabled")
        XCTAssertEqual(b.barRegions, [
            PCIBarRegion(index: 0, address: 0xC000_2000, size: 0x10, kind: .memory32, prefetchable: false),
            PCIBarRegion(index: 1, address: 0xC040, size: 0x8, kind: .io, prefetchable: false),
            PCIBarRegion(index: 2, address: 0x1_4000_0000, size: 1 << 30, kind: .memory64, prefetchable: true),
        ])
        // Exact register contents, type bits included.
        XCTAssertEqual(cfgRead(a, 0x10, 4), 0xC000_0000)
        XCTAssertEqual(cfgRead(a, 0x18, 4), 0x0000_C001)
        XCTAssertEqual(cfgRead(a, 0x1C, 4), 0x0000_000C)
        XCTAssertEqual(cfgRead(a, 0x20, 4), 0x0000_0001)
        XCTAssertEqual(cfgRead(a, 0x04, 2), 0x0003, "I/O and memory decoding enabled")
        XCTAssertEqual(cfgRead(b, 0x04, 2), 0x0003)
        XCTAssertEqual(cfgRead(a, 0x3C, 1), 17)
        XCTAssertEqual(cfgRead(b, 0x3C, 1), 18)
    }

    func testMemoryOnlyDeviceGetsOnlyMemoryEnable() throws {
        let bus = PCIRootBus(windows: testWindows)
        let a = try device([(0, 0x1000, .memory32, false)], pin: nil)
        try bus.attach(a)
        XCTAssertEqual(cfgRead(a, 0x04, 2), 0x0002)
        XCTAssertEqual(cfgRead(a, 0x3C, 1), 0, "no pin: interrupt line untouched")
        XCTAssertNil(a.attachContext?.intxGSI)
    }

    func testEightGiBBarDoesNotFit() throws {
        // A 12 GiB window at 4 GiB: an 8 GiB BAR must be 8 GiB aligned, so
        // only [8 GiB, 16 GiB) is possible, which ends past the window.
        let windows = PCIWindows(mmio32: testWindows.mmio32,
                                 mmio64: PCIAddressWindow(base: 4 << 30, size: 12 << 30),
                                 io: testWindows.io, ecam: testWindows.ecam)
        let bus = PCIRootBus(windows: windows)
        let first = try device([(0, 8 << 30, .memory64, true)])
        XCTAssertEqual(try bus.attach(first, slot: 2), PCIAddress(device: 2))
        XCTAssertEqual(first.barRegions.first?.address, 8 << 30)
        let second = try device([(0, 0x1000, .memory32, false), (2, 8 << 30, .memory64, true)])
        XCTAssertThrowsError(try bus.attach(second, slot: 3)) { e in
            XCTAssertEqual(e as? PCIError, .barDoesNotFit(device: PCIAddress(device: 3), bar: 2, size: 8 << 30,
                                                          kind: .memory64, window: .mmio64, windowBase: 4 << 30,
                                                          windowSize: 12 << 30, used: 8 << 30))
            XCTAssertEqual("\(e)", "BAR 2 of 0000:00:03.0 (8 GiB, 64-bit memory) does not fit in the 64-bit MMIO window "
                + "0x100000000-0x3ffffffff (12 GiB, 8 GiB in use, BARs are aligned to their size)")
        }
        // Nothing changed: the slot is free, BAR 0's space was not kept.
        XCTAssertNil(bus.device(at: 3))
        let third = try device([(0, 0x1000, .memory32, false)])
        XCTAssertEqual(try bus.attach(third), PCIAddress(device: 1))
        XCTAssertEqual(third.barRegions.first?.address, 0xC000_0000)
    }

    func testROMAndIOErrorsNameTheirWindows() throws {
        let windows = PCIWindows(mmio32: PCIAddressWindow(base: 0xC000_0000, size: 0x1000),
                                 mmio64: testWindows.mmio64,
                                 io: PCIAddressWindow(base: 0xC000, size: 0x10), ecam: testWindows.ecam)
        let bus = PCIRootBus(windows: windows)
        XCTAssertThrowsError(try bus.attach(try device([(0, 0x20, .io, false)]))) { e in
            XCTAssertTrue("\(e)".hasPrefix("BAR 0 of 0000:00:01.0 (32 B, I/O) does not fit in the I/O port window 0xc000-0xc00f"), "\(e)")
        }
        XCTAssertThrowsError(try bus.attach(try device([(0, 0x1000, .memory32, false)], rom: 0x800))) { e in
            XCTAssertTrue("\(e)".hasPrefix("expansion ROM of 0000:00:01.0 (2 KiB, 32-bit memory) does not fit"), "\(e)")
        }
    }

    func testSlotSelection() throws {
        let bus = PCIRootBus(windows: testWindows)
        XCTAssertEqual(try bus.attach(try device([]), slot: 5), PCIAddress(device: 5))
        XCTAssertThrowsError(try bus.attach(try device([]), slot: 5)) { XCTAssertEqual($0 as? PCIError, .slotInUse(5)) }
        XCTAssertThrowsError(try bus.attach(try device([]), slot: 0)) { XCTAssertEqual($0 as? PCIError, .invalidSlot(0)) }
        XCTAssertThrowsError(try bus.attach(try device([]), slot: 32)) { XCTAssertEqual($0 as? PCIError, .invalidSlot(32)) }
        var got: [UInt8] = []
        for _ in 0..<30 { got.append(try bus.attach(try device([])).device) }
        XCTAssertEqual(got, [1, 2, 3, 4] + Array(6...31))
        XCTAssertThrowsError(try bus.attach(try device([]))) { XCTAssertEqual($0 as? PCIError, .busFull) }
    }

    func testAllocatorFirstFitAndRelease() throws {
        var a = PCIBarAllocator(windows: testWindows)
        let d = PCIAddress(device: 1)
        XCTAssertEqual(try a.allocate(size: 0x1000, kind: .memory32, device: d, bar: 0), 0xC000_0000)
        XCTAssertEqual(try a.allocate(size: 0x10_0000, kind: .memory32, device: d, bar: 1), 0xC010_0000)
        XCTAssertEqual(try a.allocate(size: 0x2000, kind: .memory32, device: d, bar: 2), 0xC000_2000, "fills the gap")
        a.release(address: 0xC010_0000, kind: .memory32)
        XCTAssertEqual(try a.allocate(size: 0x8_0000, kind: .memory32, device: d, bar: 3), 0xC008_0000)
        XCTAssertEqual(a.usedBytes(.mmio32), 0x1000 + 0x2000 + 0x8_0000)
        XCTAssertEqual(try a.allocate(size: 0x4, kind: .io, device: d, bar: 4), 0xC000)
        XCTAssertEqual(try a.allocate(size: 0x100, kind: .io, device: d, bar: 5), 0xC100)
        XCTAssertThrowsError(try a.allocate(size: 0x3000, kind: .memory32, device: d, bar: 0), "not a power of two")
        XCTAssertThrowsError(try a.allocate(size: 1 << 40, kind: .memory64, device: d, bar: 0))
    }
}
