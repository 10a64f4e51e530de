import XCTest
@testable import PCI

final class ConfigSpaceTests: XCTestCase {
    func makeHeader() -> PCIConfigSpace {
        .type0(vendorID: 0x1AF4, deviceID: 0x1041, classCode: 0x02_00_00, revision: 0x01,
               subsystemVendorID: 0x1AF4, subsystemID: 0x0001, interruptPin: .intA)
    }

    func testType0HeaderBytes() {
        let c = makeHeader()
        XCTAssertEqual(c.size, 256)
        XCTAssertEqual(Array(c.bytes[0..<0x40]), [
            0xF4, 0x1A, 0x41, 0x10, 0x00, 0x00, 0x00, 0x00, // vendor, device, command, status
            0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, // revision, class 020000, cls, lat, header 0, bist
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // BAR0-3
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,             // BAR4-5, cardbus CIS
            0xF4, 0x1A, 0x01, 0x00,                         // subsystem vendor, subsystem
            0x00, 0x00, 0x00, 0x00,                         // ROM
            0x00, 0, 0, 0, 0, 0, 0, 0,                      // cap pointer, reserved
            0x00, 0x01, 0x00, 0x00,                         // line, pin INTA, min_gnt, max_lat
        ])
        XCTAssertEqual(c.classCode, 0x02_00_00)
        XCTAssertEqual(c.interruptPin, .intA)
    }

    func testReadOnlyFieldsIgnoreWrites() {
        var c = makeHeader()
        for offset in [0x00, 0x02, 0x08, 0x0E, 0x2C, 0x2E, 0x34, 0x3D] {
            let before = c.read32(offset & ~3)
            c.write(offset: offset, value: 0xFFFF_FFFF, width: 2)
            c.write(offset: offset, value: 0x0000_0000, width: 1)
            XCTAssertEqual(c.read32(offset & ~3) & (offset == 0x3D ? 0xFF00 : 0xFFFF_FFFF),
                           before & (offset == 0x3D ? 0xFF00 : 0xFFFF_FFFF), "offset \(offset)")
        }
        XCTAssertEqual(c.vendorID, 0x1AF4)
        XCTAssertEqual(c.deviceID, 0x1041)
        XCTAssertEqual(c.read8(0x3D), 1)
    }

    func testCommandWritableBits() {
        var c = makeHeader()
        c.write(offset: PCIReg.command, value: 0xFFFF, width: 2)
        XCTAssertEqual(c.command, 0x0547)
        c.write(offset: PCIReg.command, value: 0, width: 2)
        XCTAssertEqual(c.command, 0)
        // Byte write to the high byte only touches INTX_DISABLE and SERR.
        c.write(offset: PCIReg.command + 1, value: 0xFF, width: 1)
        XCTAssertEqual(c.command, 0x0500)
    }

    func testStatusWriteOneToClear() {
        var c = makeHeader()
        c.set16(PCIReg.status, 0xF918) // error bits + INTERRUPT + CAP_LIST
        c.write(offset: PCIReg.status, value: 0x0000, width: 2)
        XCTAssertEqual(c.status, 0xF918, "writing 0 clears nothing")
        c.write(offset: PCIReg.status, value: 0x2000, width: 2)
        XCTAssertEqual(c.status, 0xD918, "REC_MASTER_ABORT cleared alone")
        c.write(offset: PCIReg.status, value: 0xFFFF, width: 2)
        XCTAssertEqual(c.status, 0x0018, "read-only INTERRUPT and CAP_LIST stay")
    }

    func testInterruptLineAndCacheLineWritable() {
        var c = makeHeader()
        c.write(offset: PCIReg.interruptLine, value: 0x0000_2A11, width: 2)
        XCTAssertEqual(c.interruptLine, 0x11)
        XCTAssertEqual(c.read8(PCIReg.interruptPin), 0x01)
        c.write(offset: PCIReg.cacheLineSize, value: 0xFFFF_FF10, width: 4)
        XCTAssertEqual(c.read32(0x0C), 0x0000_0010)
    }

    func testOutOfRangeReadsOnesAndWritesDropped() {
        var c = makeHeader()
        var b = [UInt8](repeating: 0, count: 4)
        b.withUnsafeMutableBytes { c.read(offset: 254, data: $0) }
        XCTAssertEqual(b, [0x00, 0x00, 0xFF, 0xFF])
        b.withUnsafeMutableBytes { c.read(offset: -2, data: $0) }
        XCTAssertEqual(b, [0xFF, 0xFF, 0xF4, 0x1A])
        b.withUnsafeMutableBytes { c.read(offset: Int.max - 1, data: $0) }
        XCTAssertEqual(b, [0xFF, 0xFF, 0xFF, 0xFF])
        c.write(offset: Int.max, value: 0xFFFF_FFFF)
        c.write(offset: 4096, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read8(300), 0xFF)
    }

    // MARK: BARs

    func testMemory32BarSizing() throws {
        var c = makeHeader()
        try c.setBar(0, size: 0x1000, kind: .memory32)
        XCTAssertEqual(c.read32(0x10), 0x0000_0000)
        c.write(offset: 0x10, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read32(0x10), 0xFFFF_F000)
        c.write(offset: 0x10, value: 0xC000_1234)
        XCTAssertEqual(c.read32(0x10), 0xC000_1000)
        XCTAssertEqual(c.barRegions, [PCIBarRegion(index: 0, address: 0xC000_1000, size: 0x1000, kind: .memory32, prefetchable: false)])
    }

    func testPrefetchable32BarTypeBits() throws {
        var c = makeHeader()
        try c.setBar(1, size: 0x10_0000, kind: .memory32, prefetchable: true)
        c.write(offset: 0x14, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read32(0x14), 0xFFF0_0008)
        c.write(offset: 0x14, value: 0)
        XCTAssertEqual(c.read32(0x14), 0x0000_0008)
        XCTAssertEqual(c.barRegions, [], "address 0 is unassigned")
    }

    func testMemory64BarSizingUsesTwoRegisters() throws {
        var c = makeHeader()
        try c.setBar(2, size: 0x4000, kind: .memory64, prefetchable: true)
        XCTAssertEqual(c.read32(0x18), 0x0000_000C)
        c.write(offset: 0x18, value: 0xFFFF_FFFF)
        c.write(offset: 0x1C, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read32(0x18), 0xFFFF_C00C)
        XCTAssertEqual(c.read32(0x1C), 0xFFFF_FFFF)
        // Restore an address above 4 GiB.
        c.write(offset: 0x18, value: 0x0000_4000)
        c.write(offset: 0x1C, value: 0x0000_0001)
        XCTAssertEqual(c.barRegions, [PCIBarRegion(index: 2, address: 0x1_0000_4000, size: 0x4000, kind: .memory64, prefetchable: true)])
        XCTAssertNil(c.barDefinition(3), "the high register is not a BAR of its own")
    }

    func testEightGiB64BitBarSizing() throws {
        var c = makeHeader()
        try c.setBar(0, size: 8 << 30, kind: .memory64, prefetchable: true)
        c.write(offset: 0x10, value: 0xFFFF_FFFF)
        c.write(offset: 0x14, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read32(0x10), 0x0000_000C, "no writable address bits below 4 GiB")
        XCTAssertEqual(c.read32(0x14), 0xFFFF_FFFE, "8 GiB: bit 33 and up")
        let mask = UInt64(c.read32(0x14)) << 32 | UInt64(c.read32(0x10) & ~0xF)
        XCTAssertEqual(~mask &+ 1, 8 << 30)
    }

    func testIOBarSizing() throws {
        var c = makeHeader()
        try c.setBar(4, size: 0x20, kind: .io)
        XCTAssertEqual(c.read32(0x20), 0x0000_0001)
        c.write(offset: 0x20, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read32(0x20), 0xFFFF_FFE1)
        c.write(offset: 0x20, value: 0x0000_C040)
        XCTAssertEqual(c.read32(0x20), 0x0000_C041)
        XCTAssertEqual(c.barRegions, [PCIBarRegion(index: 4, address: 0xC040, size: 0x20, kind: .io, prefetchable: false)])
    }

    func testAbsentBarsReadZeroAndIgnoreWrites() {
        var c = makeHeader()
        for i in 0..<6 {
            c.write(offset: PCIReg.bar(i), value: 0xFFFF_FFFF)
            XCTAssertEqual(c.read32(PCIReg.bar(i)), 0)
        }
        c.write(offset: PCIReg.romAddress, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read32(PCIReg.romAddress), 0, "absent expansion ROM reads 0")
    }

    func testExpansionROMSizingAndEnable() throws {
        var c = makeHeader()
        try c.setExpansionROM(size: 0x1_0000)
        c.write(offset: 0x30, value: 0xFFFF_F800)
        XCTAssertEqual(c.read32(0x30), 0xFFFF_0000)
        c.write(offset: 0x30, value: 0xC010_0000)
        XCTAssertEqual(c.barRegions, [], "disabled ROM does not decode")
        c.write(offset: 0x30, value: 0xC010_0001)
        XCTAssertEqual(c.read32(0x30), 0xC010_0001)
        XCTAssertEqual(c.barRegions, [PCIBarRegion(index: 6, address: 0xC010_0000, size: 0x1_0000, kind: .memory32, prefetchable: false)])
    }

    func testBarDefinitionErrors() {
        var c = makeHeader()
        XCTAssertThrowsError(try c.setBar(6, size: 0x1000, kind: .memory32))
        XCTAssertThrowsError(try c.setBar(0, size: 0x1800, kind: .memory32))
        XCTAssertThrowsError(try c.setBar(0, size: 8, kind: .memory32))
        XCTAssertThrowsError(try c.setBar(0, size: 0x200, kind: .io))
        XCTAssertThrowsError(try c.setBar(0, size: 0x10, kind: .io, prefetchable: true))
        XCTAssertThrowsError(try c.setBar(5, size: 0x1000, kind: .memory64))
        XCTAssertThrowsError(try c.setBar(0, size: 1 << 32, kind: .memory32))
        XCTAssertNoThrow(try c.setBar(0, size: 0x1000, kind: .memory64))
        XCTAssertThrowsError(try c.setBar(1, size: 0x1000, kind: .memory32), "high half of BAR 0")
        XCTAssertThrowsError(try c.setExpansionROM(size: 0x400))
        XCTAssertThrowsError(try c.setExpansionROM(size: 0x200_0000))
    }

    // MARK: Capabilities

    /// Walks the list the way Linux's __pci_find_next_cap_ttl does, returning
    /// (id, offset) pairs.
    func walk(_ c: PCIConfigSpace) -> [(UInt8, Int)] {
        var out: [(UInt8, Int)] = []
        guard c.status & 0x10 != 0 else { return out }
        var pos = Int(c.read8(0x34))
        var ttl = 48
        while ttl > 0, pos >= 0x40 {
            pos &= ~3
            let ent = c.read16(pos)
            let id = UInt8(ent & 0xFF)
            if id == 0xFF { break }
            out.append((id, pos))
            pos = Int(ent >> 8)
            ttl -= 1
        }
        return out
    }

    func testCapabilityChain() throws {
        var c = makeHeader()
        XCTAssertEqual(c.status & 0x10, 0)
        XCTAssertTrue(walk(c).isEmpty)
        let a = try c.addCapability(id: 0x09, bytes: [0, 0, 5, 0xAA, 0xBB]) // 5 bytes: next is 4-aligned
        let b = try c.addCapability(id: 0x01, bytes: [0, 0, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00],
                                    writableMask: [0, 0, 0, 0, 0x03, 0, 0, 0])
        let d = try c.addCapability(id: 0x11, bytes: [UInt8](repeating: 0xEE, count: 12))
        XCTAssertEqual([a, b, d], [0x40, 0x48, 0x50])
        XCTAssertEqual(c.status & 0x10, 0x10)
        XCTAssertEqual(c.read8(0x34), 0x40)
        XCTAssertEqual(Array(c.bytes[0x40..<0x5C]), [
            0x09, 0x48, 0x05, 0xAA, 0xBB, 0x00, 0x00, 0x00,
            0x01, 0x50, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x11, 0x00, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
        ])
        XCTAssertEqual(walk(c).map { $0.0 }, [0x09, 0x01, 0x11])
        XCTAssertEqual(walk(c).map { $0.1 }, [0x40, 0x48, 0x50])
        XCTAssertEqual(c.findCapability(0x11), 0x50)
        XCTAssertNil(c.findCapability(0x05))
        // Header bytes and unmasked bytes are read-only; the mask applies.
        c.write(offset: 0x48, value: 0xFFFF_FFFF)
        c.write(offset: 0x4C, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read32(0x48), 0x0003_5001)
        XCTAssertEqual(c.read32(0x4C), 0x0000_0003)
    }

    func testCapabilitySpaceFull() throws {
        var c = makeHeader()
        _ = try c.addCapability(id: 0x09, bytes: [UInt8](repeating: 0, count: 0xB0))
        XCTAssertThrowsError(try c.addCapability(id: 0x09, bytes: [UInt8](repeating: 0, count: 0x14))) { e in
            XCTAssertEqual(e as? PCIError, .capabilitySpaceFull(id: 9, length: 0x14))
        }
        XCTAssertEqual(try c.addCapability(id: 0x09, bytes: [UInt8](repeating: 0, count: 0x10)), 0xF0)
        XCTAssertThrowsError(try c.addCapability(id: 0x09, bytes: [0]))
        XCTAssertThrowsError(try c.addCapability(id: 0x09, bytes: [0, 0, 0], writableMask: [0]))
    }

    func testExtendedCapabilities() throws {
        var conventional = makeHeader()
        XCTAssertThrowsError(try conventional.addExtendedCapability(id: 1, version: 1, bytes: [0, 0, 0, 0]))
        var c = PCIConfigSpace.type0(vendorID: 0x1234, deviceID: 0x5678, classCode: 0, extended: true)
        XCTAssertEqual(c.size, 4096)
        XCTAssertEqual(c.read32(0x100), 0, "no extended capabilities: header reads 0")
        let a = try c.addExtendedCapability(id: 0x0001, version: 2, bytes: [UInt8](repeating: 0, count: 0x0A))
        let b = try c.addExtendedCapability(id: 0x000B, version: 1, bytes: [UInt8](repeating: 0, count: 8),
                                            writableMask: [0, 0, 0, 0, 0xFF, 0, 0, 0])
        XCTAssertEqual([a, b], [0x100, 0x10C])
        XCTAssertEqual(c.read32(0x100), 0x10C2_0001)
        XCTAssertEqual(c.read32(0x10C), 0x0001_000B)
        c.write(offset: 0x10C, value: 0xFFFF_FFFF)
        c.write(offset: 0x110, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read32(0x10C), 0x0001_000B)
        XCTAssertEqual(c.read32(0x110), 0x0000_00FF)
    }
}
