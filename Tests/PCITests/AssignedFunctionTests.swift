import Bits
import Devices
import Dispatch
import TestFakes
import XCTest
@testable import PCI

final class AssignedFunctionTests: XCTestCase {
    func makeE1000e(rom: UInt64? = nil) throws -> (FakeAssignedBackend, AssignedPCIFunction) {
        let f = FakeAssignedBackend.e1000e()
        let d = try AssignedPCIFunction(backend: f, barSizes: FakeAssignedBackend.e1000eBars, romSize: rom,
                                        name: "0000:01:00.0")
        return (f, d)
    }

    // MARK: Header

    func testHeaderPassthroughAndEmulatedBytes() throws {
        let (f, d) = try makeE1000e()
        XCTAssertEqual(cfgRead(d, 0x00, 4), 0x10D3_8086)
        XCTAssertEqual(cfgRead(d, 0x08, 4), 0x0200_0000)
        XCTAssertEqual(cfgRead(d, 0x0C, 1), 0x10)
        XCTAssertEqual(cfgRead(d, 0x0E, 1), 0x00, "multi-function bit cleared")
        XCTAssertEqual(cfgRead(d, 0x2C, 4), 0xA01F_8086)
        XCTAssertEqual(cfgRead(d, 0x28, 4), 0, "Cardbus CIS hidden")
        XCTAssertEqual(cfgRead(d, 0x30, 4), 0, "no ROM: the host ROM BAR is hidden")
        XCTAssertEqual(cfgRead(d, 0x3C, 1), 0, "host IRQ line hidden")
        XCTAssertEqual(cfgRead(d, 0x3D, 1), 1)
        XCTAssertEqual(d.interruptPin, .intA)
        XCTAssertEqual(cfgRead(d, 0x06, 2), 0x0010)
        // The host BAR addresses never show: only the type bits.
        XCTAssertEqual(cfgRead(d, 0x10, 4), 0)
        XCTAssertEqual(cfgRead(d, 0x18, 4), 1)
        XCTAssertEqual(cfgRead(d, 0x20, 4), 0)
        XCTAssertEqual(cfgRead(d, 0x24, 4), 0)
        // A read straddling Latency (device), Header Type (emulated), BIST
        // (device) and BAR0 (emulated): split per run.
        f.config[0x0D] = 0x40
        f.config[0x0F] = 0x80
        f.configReads = []
        XCTAssertEqual(cfgRead(d, 0x0D, 4), 0x0080_0040)
        XCTAssertEqual(f.configReads.map { [$0.offset, $0.count] }, [[0x0D, 1], [0x0F, 1]])
        // An odd-offset 2-byte read across Command/Status.
        f.set16(0x04, 0x0406)
        XCTAssertEqual(cfgRead(d, 0x05, 2), 0x1004)
    }

    func testCommandAndStatusWritesReachTheDevice() throws {
        let (f, d) = try makeE1000e()
        cfgWrite(d, 0x04, 0x0007, 2)
        XCTAssertEqual(f.configWrites.last?.offset, 0x04)
        XCTAssertEqual(f.configWrites.last?.bytes, [0x07, 0x00])
        XCTAssertEqual(cfgRead(d, 0x04, 2), 0x0007)
        // Status: the error bits are RW1C on the device; bit 4 is emulated
        // and goes to the device as 0.
        f.set16(0x06, 0xF910)
        XCTAssertEqual(cfgRead(d, 0x06, 2), 0xF910)
        cfgWrite(d, 0x06, 0xF910, 2)
        XCTAssertEqual(f.configWrites.last?.offset, 0x06)
        XCTAssertEqual(f.configWrites.last?.bytes, [0x00, 0xF9])
        XCTAssertEqual(f.get16(0x06), 0x0010)
        // The device loses its capability bit: the guest still sees the chain.
        f.set16(0x06, 0x0000)
        XCTAssertEqual(cfgRead(d, 0x06, 2), 0x0010)
        // A dword write at 0x04 is one device write.
        f.configWrites = []
        cfgWrite(d, 0x04, 0x0000_0406, 4)
        XCTAssertEqual(f.configWrites.map { $0.offset }, [0x04])
        XCTAssertEqual(f.configWrites.first?.bytes, [0x06, 0x04, 0x00, 0x00])
        // Vendor ID, cache line, BIST, subsystem, pin, Min_Gnt pass through.
        f.configWrites = []
        cfgWrite(d, 0x00, 0xFFFF_FFFF, 4)
        cfgWrite(d, 0x0C, 0xAABB_CC20, 4) // Cache Line, Latency, (Header Type), BIST
        cfgWrite(d, 0x3C, 0x1122_3344, 4) // (Interrupt Line), Pin, Min_Gnt, Max_Lat
        XCTAssertEqual(f.configWrites.map { [$0.offset, $0.bytes.count] },
                       [[0x00, 4], [0x0C, 2], [0x0F, 1], [0x3D, 3]])
        XCTAssertEqual(f.configWrites[2].bytes, [0xAA])
        XCTAssertEqual(cfgRead(d, 0x0E, 1), 0x00, "Header Type is read-only")
        XCTAssertEqual(cfgRead(d, 0x3C, 1), 0x44, "Interrupt Line is emulated RW")
        XCTAssertEqual(f.config[0x3C], 0x0B, "the device's Interrupt Line is untouched")
    }

    // MARK: BARs

    func testBarSizingNeverReachesTheDevice() throws {
        let (f, d) = try makeE1000e()
        let hostBars = Array(f.config[0x10..<0x34])
        for (bar, mask) in [(0, 0xFFFE_0000), (1, 0xFFFE_0000), (2, 0xFFFF_FFE1), (3, 0xFFFF_C000), (4, 0), (5, 0)] as [(Int, UInt64)] {
            cfgWrite(d, PCIReg.bar(bar), 0xFFFF_FFFF, 4)
            XCTAssertEqual(cfgRead(d, PCIReg.bar(bar), 4), mask, "BAR \(bar)")
        }
        cfgWrite(d, 0x30, 0xFFFF_F800, 4)
        XCTAssertEqual(cfgRead(d, 0x30, 4), 0, "no ROM")
        cfgWrite(d, 0x10, 0xC000_0000, 4)
        cfgWrite(d, 0x18, 0xC001, 4)
        cfgWrite(d, 0x1C, 0xC004_0000, 4)
        XCTAssertEqual(d.barRegions, [
            PCIBarRegion(index: 0, address: 0xC000_0000, size: 0x20000, kind: .memory32, prefetchable: false),
            PCIBarRegion(index: 1, address: 0xFFFE_0000, size: 0x20000, kind: .memory32, prefetchable: false),
            PCIBarRegion(index: 2, address: 0xC000, size: 0x20, kind: .io, prefetchable: false),
            PCIBarRegion(index: 3, address: 0xC004_0000, size: 0x4000, kind: .memory32, prefetchable: false),
        ])
        XCTAssertEqual(Array(f.config[0x10..<0x34]), hostBars)
        XCTAssertTrue(f.writtenOffsets.isEmpty, "\(f.writtenOffsets.sorted())")
        XCTAssertEqual(d.bars.map { $0.index }, [0, 1, 2, 3])
        XCTAssertEqual(d.bars[2], AssignedBar(index: 2, size: 0x20, decodeSize: 0x20, kind: .io, prefetchable: false))
    }

    func test64BitPrefetchableBar() throws {
        let f = FakeAssignedBackend.ivshmem()
        let d = try AssignedPCIFunction(backend: f, barSizes: FakeAssignedBackend.ivshmemBars, romSize: nil, name: "ivshmem")
        XCTAssertEqual(d.bars.last, AssignedBar(index: 2, size: 8 << 30, decodeSize: 8 << 30, kind: .memory64, prefetchable: true))
        XCTAssertEqual(cfgRead(d, 0x18, 4), 0x0C)
        XCTAssertEqual(cfgRead(d, 0x1C, 4), 0, "host high address hidden")
        cfgWrite(d, 0x18, 0xFFFF_FFFF, 4)
        cfgWrite(d, 0x1C, 0xFFFF_FFFF, 4)
        XCTAssertEqual(cfgRead(d, 0x18, 4), 0x0000_000C)
        XCTAssertEqual(cfgRead(d, 0x1C, 4), 0xFFFF_FFFE)
        cfgWrite(d, 0x18, 0, 4)
        cfgWrite(d, 0x1C, 0x2, 4)
        XCTAssertEqual(d.barRegions, [
            PCIBarRegion(index: 2, address: 0x2_0000_0000, size: 8 << 30, kind: .memory64, prefetchable: true),
        ])
        XCTAssertEqual(f.get32(0x18), 0x0C)
        XCTAssertEqual(f.get32(0x1C), 0x38)
        XCTAssertTrue(f.writtenOffsets.isEmpty)
        XCTAssertEqual(d.capabilities, [AssignedCapability(id: 0x11, offset: 0x40, length: 12)])
        XCTAssertEqual(d.msixTableRanges.map { $0.bar }, [1, 1])
        XCTAssertEqual(d.msixTableRanges.map { $0.range }, [0..<0x20, 0x800..<0x808])
    }

    func testRomAndRounding() throws {
        let f = FakeAssignedBackend.e1000e()
        // A region size that is not a power of two rounds up; so does a ROM.
        let d = try AssignedPCIFunction(backend: f, barSizes: [0: 0x18000, 2: 0x20, 3: 0x4000], romSize: 0x30000, name: "x")
        XCTAssertEqual(d.bars[0], AssignedBar(index: 0, size: 0x18000, decodeSize: 0x20000, kind: .memory32, prefetchable: false))
        XCTAssertEqual(d.rom, AssignedBar(index: 6, size: 0x30000, decodeSize: 0x40000, kind: .memory32, prefetchable: false))
        cfgWrite(d, 0x10, 0xFFFF_FFFF, 4)
        XCTAssertEqual(cfgRead(d, 0x10, 4), 0xFFFE_0000)
        XCTAssertEqual(cfgRead(d, 0x14, 4), 0, "BAR1 absent from barSizes")
        cfgWrite(d, 0x30, 0xFFFF_F800, 4)
        XCTAssertEqual(cfgRead(d, 0x30, 4), 0xFFFC_0000)
        cfgWrite(d, 0x30, 0xC008_0000, 4)
        XCTAssertFalse(d.barRegions.contains { $0.index == 6 }, "ROM disabled")
        cfgWrite(d, 0x30, 0xC008_0001, 4)
        XCTAssertEqual(d.barRegions.last,
                       PCIBarRegion(index: 6, address: 0xC008_0000, size: 0x40000, kind: .memory32, prefetchable: false))
        XCTAssertTrue(f.writtenOffsets.isEmpty)
        // The ROM reads from the device, writes are dropped; the rounded tail
        // beyond the region reads all ones without a device access.
        f.barContents[6] = [0: 0x55, 1: 0xAA]
        XCTAssertEqual(barRead(d, 6, 0, 2), 0xAA55)
        barWrite(d, 6, 0, 0, 2)
        XCTAssertTrue(f.barWrites.isEmpty)
        f.barReads = []
        XCTAssertEqual(barRead(d, 6, 0x30000, 4), 0xFFFF_FFFF)
        XCTAssertEqual(barRead(d, 0, 0x17FFE, 4), 0xFFFF_0000)
        XCTAssertEqual(f.barReads.map { [$0.index, Int($0.offset), $0.count] }, [[0, 0x17FFE, 2]])
        barWrite(d, 0, 0x18000, 0x1234, 4)
        XCTAssertTrue(f.barWrites.isEmpty)
        // No BAR 1, no BAR 4: nothing reaches the device.
        XCTAssertEqual(barRead(d, 1, 0, 4), 0xFFFF_FFFF)
        XCTAssertEqual(barRead(d, 7, 0, 1), 0xFF)
        XCTAssertEqual(barRead(d, -1, 0, 1), 0xFF)
        XCTAssertEqual(f.barReads.count, 1)
    }

    func testInvalidBarsThrow() {
        func make(_ patch: (FakeAssignedBackend) -> Void, _ bars: [Int: UInt64], rom: UInt64? = nil) throws {
            let f = FakeAssignedBackend.e1000e()
            patch(f)
            _ = try AssignedPCIFunction(backend: f, barSizes: bars, romSize: rom, name: "bad")
        }
        XCTAssertThrowsError(try make({ _ in }, [6: 0x1000])) { e in
            guard case PCIError.invalidBar(index: 6, _) = e else { return XCTFail("\(e)") }
        }
        // An assigned device's I/O BAR may exceed the spec's 256 bytes (as
        // libvfio-user's sample server's 16 KiB one does), up to 16 KiB.
        XCTAssertNoThrow(try make({ _ in }, [2: 0x4000, 3: 0x4000]), "a 16 KiB I/O BAR")
        XCTAssertThrowsError(try make({ _ in }, [2: 0x8000, 3: 0x4000]), "I/O BAR over 16 KiB") { e in
            XCTAssertTrue("\(e)".contains("larger than the 0x4000 bytes of I/O space"), "\(e)")
        }
        XCTAssertThrowsError(try make({ _ in }, [0: 0x1_0000_0000]), "32-bit BAR over 2 GiB")
        XCTAssertThrowsError(try make({ $0.set32(0x24, 0x4) }, [5: 0x1000]), "64-bit BAR at 5")
        XCTAssertThrowsError(try make({ $0.set32(0x10, 0x4) }, [0: 0x1000, 1: 0x1000])) { e in
            guard case PCIError.invalidBar(index: 1, _) = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try make({ _ in }, [0: 0x20000, 3: 0x4000], rom: 32 << 20), "ROM over 16 MiB")
        XCTAssertThrowsError(try make({ _ in }, [0: 0x20000]), "MSI-X table in a missing BAR") { e in
            guard case PCIError.invalidMSIX = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try make({ _ in }, [2: 0x20, 3: 0x1000]), "MSI-X PBA beyond BAR 3")
        XCTAssertNoThrow(try make({ _ in }, [2: 0x20, 3: 0x4000]))
        // Sizes below the minimum round up: a 2-byte I/O region decodes 4.
        let f = FakeAssignedBackend.e1000e()
        XCTAssertEqual(try AssignedPCIFunction(backend: f, barSizes: [2: 2, 3: 0x4000], romSize: 0, name: "x").bars.first?.decodeSize, 4)
    }

    // MARK: Capabilities

    func capabilityChain(_ d: PCIDevice) -> [[Int]] {
        var out: [[Int]] = []
        var pos = Int(cfgRead(d, 0x34, 1))
        while pos != 0, out.count < 64 {
            out.append([pos, Int(cfgRead(d, pos, 1))])
            pos = Int(cfgRead(d, pos + 1, 1))
        }
        return out
    }

    func testE1000eCapabilityChain() throws {
        let (f, d) = try makeE1000e()
        XCTAssertEqual(capabilityChain(d), [[0xC8, 0x01], [0xD0, 0x05], [0xE0, 0x10], [0xA0, 0x11]])
        XCTAssertEqual(d.capabilities, [
            AssignedCapability(id: 0x01, offset: 0xC8, length: 8),
            AssignedCapability(id: 0x05, offset: 0xD0, length: 16),
            AssignedCapability(id: 0x10, offset: 0xE0, length: 20),
            AssignedCapability(id: 0x11, offset: 0xA0, length: 12),
        ])
        XCTAssertEqual(d.hiddenCapabilities, [])
        // PM body passes through; its next pointer is emulated.
        XCTAssertEqual(cfgRead(d, 0xC8, 4), 0xC823_D001)
        cfgWrite(d, 0xCC, 0x8003, 2)
        XCTAssertEqual(f.configWrites.last?.offset, 0xCC)
        XCTAssertEqual(f.configWrites.last?.bytes, [0x03, 0x80])
        f.configWrites = []
        cfgWrite(d, 0xC8, 0xFFFF, 2)
        XCTAssertEqual(cfgRead(d, 0xC8, 2), 0xD001)
        XCTAssertTrue(f.configWrites.isEmpty)
        // PCIe body and device-specific bytes pass through.
        XCTAssertEqual(cfgRead(d, 0xE4, 4), 0x0000_8CC1)
        XCTAssertEqual(cfgRead(d, 0xF8, 1), 0x5A)
        cfgWrite(d, 0xF8, 0x77, 1)
        XCTAssertEqual(f.config[0xF8], 0x77)
        // MSI: emulated 64-bit, one vector, host registers hidden.
        XCTAssertEqual(cfgRead(d, 0xD0, 4), 0x0080_E005)
        XCTAssertEqual(cfgRead(d, 0xD4, 4), 0)
        XCTAssertEqual(cfgRead(d, 0xDC, 2), 0)
        // MSI-X: a copy with Enable and Function Mask clear.
        XCTAssertEqual(cfgRead(d, 0xA0, 4), 0x0004_0011)
        XCTAssertEqual(cfgRead(d, 0xA4, 4), 0x0000_0003)
        XCTAssertEqual(cfgRead(d, 0xA8, 4), 0x0000_2003)
        cfgWrite(d, 0xA2, 0xFFFF, 2)
        XCTAssertEqual(cfgRead(d, 0xA2, 2), 0xC004, "only Enable and Function Mask are writable")
        cfgWrite(d, 0xA4, 0xFFFF_FFFF, 4)
        XCTAssertEqual(cfgRead(d, 0xA4, 4), 3)
        XCTAssertEqual(f.get16(0xA2), 0xC004)
        XCTAssertEqual(f.get32(0xA4), 3)
    }

    func testExtendedSpaceHiddenAndOutOfRange() throws {
        let (f, d) = try makeE1000e()
        XCTAssertEqual(cfgRead(d, 0x100, 4), 0)
        XCTAssertEqual(cfgRead(d, 0x140, 4), 0)
        XCTAssertEqual(cfgRead(d, 0xFFC, 4), 0)
        XCTAssertEqual(cfgRead(d, 0xFFE, 4), 0xFFFF_0000, "bytes past 4 KiB read 0xFF")
        XCTAssertEqual(cfgRead(d, 0x1000, 4), 0xFFFF_FFFF)
        XCTAssertEqual(cfgRead(d, -2, 4), 0x8086_FFFF)
        XCTAssertEqual(cfgRead(d, Int.max - 1, 4), 0xFFFF_FFFF)
        XCTAssertEqual(cfgRead(d, 0xFE, 4), 0x0000_0000, "0xFE-0xFF device, 0x100-0x101 hidden")
        f.configWrites = []
        cfgWrite(d, 0x100, 0xFFFF_FFFF, 4)
        cfgWrite(d, 0xFFF, 0xFFFF_FFFF, 4)
        cfgWrite(d, Int.max - 1, 0xFFFF_FFFF, 4)
        cfgWrite(d, -4, 0xFFFF_FFFF, 4)
        XCTAssertTrue(f.configWrites.isEmpty)
        XCTAssertEqual(f.get32(0x100), 0x1401_0001)
        // A write straddling 0xFF/0x100 reaches the device for 0xFE-0xFF only.
        cfgWrite(d, 0xFE, 0xAABB_CCDD, 4)
        XCTAssertEqual(f.configWrites.map { [$0.offset, $0.bytes.count] }, [[0xFE, 2]])
        XCTAssertEqual(cfgRead(d, 0, 0), 0)
    }

    /// PM 0x40 -> VPD 0x50 -> 32-bit MSI 0x60 -> AF 0x70 -> vendor 0x80 ->
    /// unknown 0x0E 0x90 -> SATA 0xA0 -> 0.
    func hidingBackend() -> FakeAssignedBackend {
        let f = FakeAssignedBackend()
        f.set16(0x00, 0x1234)
        f.set16(0x06, 0x0010)
        f.set8(0x34, 0x40)
        for o in 0x40..<0x100 { f.config[o] = UInt8(o) } // recognizable bytes
        f.set8(0x40, 0x01); f.set8(0x41, 0x50)
        f.set8(0x50, 0x03); f.set8(0x51, 0x60)
        f.set8(0x60, 0x05); f.set8(0x61, 0x70); f.set16(0x62, 0x0000) // 32-bit only
        f.set8(0x70, 0x13); f.set8(0x71, 0x80)
        f.set8(0x80, 0x09); f.set8(0x81, 0x90); f.set8(0x82, 0x0C)
        f.set8(0x90, 0x0E); f.set8(0x91, 0xA3)                          // next pointer with reserved low bits
        f.set8(0xA0, 0x12); f.set8(0xA1, 0x00)
        return f
    }

    func testHiddenCapabilitiesReadZeroAndChainIsRelinked() throws {
        let f = hidingBackend()
        let d = try AssignedPCIFunction(backend: f, barSizes: [:], romSize: nil, name: "hide")
        XCTAssertEqual(capabilityChain(d), [[0x40, 0x01], [0x80, 0x09]])
        XCTAssertEqual(d.hiddenCapabilities, [
            AssignedCapability(id: 0x03, offset: 0x50, length: 8),
            AssignedCapability(id: 0x05, offset: 0x60, length: 10),
            AssignedCapability(id: 0x13, offset: 0x70, length: 6),
            AssignedCapability(id: 0x0E, offset: 0x90, length: 4),
            AssignedCapability(id: 0x12, offset: 0xA0, length: 8),
        ])
        XCTAssertNil(d.msi)
        XCTAssertNil(d.msix)
        for h in d.hiddenCapabilities {
            for o in h.offset..<(h.offset + h.length) { XCTAssertEqual(cfgRead(d, o, 1), 0, "offset \(hex(UInt64(o)))") }
            // The byte after it is device-specific again.
            XCTAssertEqual(cfgRead(d, h.offset + h.length, 1), UInt64(h.offset + h.length))
        }
        XCTAssertEqual(cfgRead(d, 0x82, 4), 0x8584_830C, "vendor body passes through")
        XCTAssertEqual(cfgRead(d, 0x42, 2), 0x4342, "PM body passes through")
        f.configWrites = []
        cfgWrite(d, 0x50, 0xFFFF_FFFF, 4)
        cfgWrite(d, 0x60, 0xFFFF_FFFF, 4)
        XCTAssertTrue(f.configWrites.isEmpty)
        XCTAssertEqual(cfgRead(d, 0x50, 4), 0)
        // A write over a hidden capability's end reaches the device past it.
        cfgWrite(d, 0x74, 0xAABB_CCDD, 4)
        XCTAssertEqual(f.configWrites.map { [$0.offset, $0.bytes.count] }, [[0x76, 2]])
    }

    func testLoopingChainAndPointerIntoHeader() throws {
        let f = hidingBackend()
        f.set8(0x41, 0x80)
        f.set8(0x81, 0x40) // PM -> vendor -> PM ...
        let d = try AssignedPCIFunction(backend: f, barSizes: [:], romSize: nil, name: "loop")
        XCTAssertEqual(capabilityChain(d), [[0x40, 0x01], [0x80, 0x09]])
        XCTAssertEqual(cfgRead(d, 0x81, 1), 0, "the loop is cut")

        let g = hidingBackend()
        g.set8(0x41, 0x20) // into the BARs
        let e = try AssignedPCIFunction(backend: g, barSizes: [:], romSize: nil, name: "header")
        XCTAssertEqual(capabilityChain(e), [[0x40, 0x01]])
        XCTAssertEqual(cfgRead(e, 0x50, 4), 0x5352_6003, "VPD was never reached: device bytes")

        let h = hidingBackend()
        h.set8(0x34, 0x10) // the first pointer is in the header
        let n = try AssignedPCIFunction(backend: h, barSizes: [:], romSize: nil, name: "none")
        XCTAssertEqual(cfgRead(n, 0x34, 1), 0)
        XCTAssertEqual(cfgRead(n, 0x06, 2), 0, "no capabilities: Status.CAP_LIST clear")
        XCTAssertEqual(n.capabilities, [])

        let k = hidingBackend()
        k.set16(0x06, 0) // the device says it has no list
        XCTAssertEqual(capabilityChain(try AssignedPCIFunction(backend: k, barSizes: [:], romSize: nil, name: "k")), [])

        // Only hidden capabilities: the list is empty.
        let m = hidingBackend()
        m.set8(0x34, 0x50)
        let o = try AssignedPCIFunction(backend: m, barSizes: [:], romSize: nil, name: "hidden")
        XCTAssertEqual(capabilityChain(o), [[0x80, 0x09]])
        m.set8(0x81, 0x00)
        m.set8(0x71, 0x00)
        let p = try AssignedPCIFunction(backend: m, barSizes: [:], romSize: nil, name: "hidden2")
        XCTAssertEqual(cfgRead(p, 0x34, 1), 0)
        XCTAssertEqual(cfgRead(p, 0x06, 2), 0)
        XCTAssertEqual(p.hiddenCapabilities.map { $0.offset }, [0x50, 0x60, 0x70])
    }

    func testLongChainStopsAfter48() throws {
        let f = FakeAssignedBackend()
        f.set16(0x06, 0x0010)
        f.set8(0x34, 0x40)
        // 48 vendor capabilities of 4 bytes at 0x40...0xFC would be 48
        // entries; chain 0x40 -> 0x44 -> ... -> 0xFC and back to 0x40.
        for pos in stride(from: 0x40, through: 0xFC, by: 4) {
            f.set8(pos, 0x09)
            f.set8(pos + 1, UInt8(pos == 0xFC ? 0x40 : pos + 4))
            f.set8(pos + 2, 4)
        }
        let d = try AssignedPCIFunction(backend: f, barSizes: [:], romSize: nil, name: "long")
        XCTAssertEqual(d.capabilities.count, 48)
        XCTAssertEqual(d.capabilities.last?.offset, 0x40 + 47 * 4)
        XCTAssertEqual(cfgRead(d, 0x40 + 47 * 4 + 1, 1), 0)
    }

    // MARK: MSI-X

    func testMSIXTableAndPBAThroughBars() throws {
        let (f, d) = try makeE1000e()
        let router = RecordingRouter()
        let addr = PCIAddress(device: 3)
        d.attached(PCIAttachContext(address: addr, msiRouter: router, intx: nil, intxGSI: 19))
        XCTAssertEqual(d.msixTableRanges.map { $0.bar }, [3, 3])
        XCTAssertEqual(d.msixTableRanges.map { $0.range }, [0..<0x50, 0x2000..<0x2008])
        // Entry 1: address, data, unmask.
        barWrite(d, 3, 0x10, 0xFEE0_0000, 4)
        barWrite(d, 3, 0x14, 0, 4)
        barWrite(d, 3, 0x18, 0x4021, 4)
        barWrite(d, 3, 0x1C, 0, 4)
        XCTAssertEqual(barRead(d, 3, 0x10, 8), 0xFEE0_0000)
        XCTAssertEqual(barRead(d, 3, 0x0C, 4), 1, "entry 0 still masked")
        XCTAssertEqual(d.msix?.entry(1), MSIXEntry(message: MSIMessage(address: 0xFEE0_0000, data: 0x4021), masked: false))
        XCTAssertEqual(router.take(), [], "MSI-X disabled")
        // Outside the table and PBA: the device.
        f.barContents[3] = [0x50: 0x11, 0x1000: 0x22, 0x2008: 0x33]
        XCTAssertEqual(barRead(d, 3, 0x1000, 1), 0x22)
        XCTAssertEqual(barRead(d, 3, 0x2008, 1), 0x33)
        // Straddling the table end: 4 table bytes (entry 4 vector control) + 4 device bytes.
        f.barReads = []
        XCTAssertEqual(barRead(d, 3, 0x4C, 8), 0x0000_0011_0000_0001)
        XCTAssertEqual(f.barReads.map { [$0.index, Int($0.offset), $0.count] }, [[3, 0x50, 4]])
        // PBA: emulated, read-only.
        XCTAssertEqual(barRead(d, 3, 0x2000, 8), 0)
        d.msix?.trigger(vector: 1)
        XCTAssertEqual(barRead(d, 3, 0x2000, 8), 0b10)
        barWrite(d, 3, 0x2000, 0, 8)
        XCTAssertEqual(barRead(d, 3, 0x2000, 8), 0b10)
        XCTAssertTrue(f.barWrites.isEmpty, "table and PBA writes never reach the device")
        barWrite(d, 3, 0x3000, 0xAB, 1)
        XCTAssertEqual(f.barWrites.map { [$0.index, Int($0.offset)] }, [[3, 0x3000]])
        XCTAssertEqual(f.barReads.filter { $0.offset < 0x50 || ($0.offset >= 0x2000 && $0.offset < 0x2008) }.count, 0)
        // Enabling delivers the pending vector through the router.
        cfgWrite(d, 0xA2, 0x8004, 2)
        XCTAssertEqual(router.take(), [.configure(addr, 1, MSIMessage(address: 0xFEE0_0000, data: 0x4021)), .signal(addr, 1)])
        XCTAssertEqual(barRead(d, 3, 0x2000, 8), 0)
    }

    func testInterruptModeSequenceINTxMSIXINTx() throws {
        let (f, d) = try makeE1000e()
        let log = SequenceLog()
        f.sequence = log
        let addr = PCIAddress(device: 2)
        d.attached(PCIAttachContext(address: addr, msiRouter: SequenceRouter(log: log), intx: nil, intxGSI: 18))
        XCTAssertEqual(log.take(), ["mode intx(gsi: 18)"])
        XCTAssertEqual(d.interruptMode, .intx(gsi: 18))
        barWrite(d, 3, 0x00, 0xFEE0_1000, 4)
        barWrite(d, 3, 0x08, 0x41, 4)
        barWrite(d, 3, 0x0C, 0, 4)
        XCTAssertEqual(log.take(), [])
        // Enable with Function Mask, then unmask: the table first, then the mode.
        cfgWrite(d, 0xA2, 0xC000, 2)
        XCTAssertEqual(log.take(), ["mode msix(vectors: 5)"])
        XCTAssertEqual(d.msix?.isFunctionMasked, true)
        cfgWrite(d, 0xA2, 0x8000, 2)
        XCTAssertEqual(log.take(), ["configure 0000:00:02.0 0 MSI(0xfee01000, 0x41)"])
        cfgWrite(d, 0xA2, 0x8000, 2)
        XCTAssertEqual(log.take(), [], "only changes are reported")
        cfgWrite(d, 0xA0, 0x0000_0011, 4)
        XCTAssertEqual(log.take(), ["configure 0000:00:02.0 0 nil", "mode intx(gsi: 18)"])
        // Enable in one dword write of the whole capability header.
        cfgWrite(d, 0xA0, 0x8000_0011, 4)
        XCTAssertEqual(log.take(), ["configure 0000:00:02.0 0 MSI(0xfee01000, 0x41)", "mode msix(vectors: 5)"])
        XCTAssertEqual(f.modes, [.intx(gsi: 18), .msix(vectors: 5), .intx(gsi: 18), .msix(vectors: 5)])
        XCTAssertFalse(f.writtenOffsets.contains { (0xA0..<0xAC).contains($0) })
    }

    func testInterruptModeMSI() throws {
        let (f, d) = try makeE1000e()
        let router = RecordingRouter()
        let addr = PCIAddress(device: 1)
        d.attached(PCIAttachContext(address: addr, msiRouter: router, intx: nil, intxGSI: 17))
        XCTAssertEqual(f.modes, [.intx(gsi: 17)])
        XCTAssertEqual(d.msi?.offset, 0xD0)
        XCTAssertEqual(d.msi?.configuration.perVectorMasking, false)
        // What Linux's msi_capability_init does: address, data, then enable.
        cfgWrite(d, 0xD4, 0xFEE0_200C, 4)
        cfgWrite(d, 0xD8, 0, 4)
        cfgWrite(d, 0xDC, 0x4051, 2)
        XCTAssertEqual(f.modes, [.intx(gsi: 17)])
        cfgWrite(d, 0xD2, 0x0081, 2)
        XCTAssertEqual(router.take(), [.configure(addr, 0, MSIMessage(address: 0xFEE0_200C, data: 0x4051))])
        XCTAssertEqual(f.modes, [.intx(gsi: 17), .msi(vectors: 1)])
        XCTAssertEqual(cfgRead(d, 0xD0, 4), 0x0081_E005)
        XCTAssertEqual(cfgRead(d, 0xD4, 4), 0xFEE0_200C)
        // Multiple Message Enable is writable but one vector is all there is.
        cfgWrite(d, 0xD2, 0x0001, 2)
        XCTAssertEqual(f.modes.count, 2)
        cfgWrite(d, 0xD2, 0x0080, 2)
        XCTAssertEqual(router.take(), [.configure(addr, 0, nil)])
        XCTAssertEqual(f.modes, [.intx(gsi: 17), .msi(vectors: 1), .intx(gsi: 17)])
        // The device's MSI registers were never written.
        XCTAssertFalse(f.writtenOffsets.contains { (0xD0..<0xE0).contains($0) })
        XCTAssertEqual(f.get32(0xD4), 0xFEE0_100C)
        // MSI-X wins while both are enabled; disabling it falls back to MSI.
        cfgWrite(d, 0xD2, 0x0081, 2)
        cfgWrite(d, 0xA2, 0x8000, 2)
        cfgWrite(d, 0xA2, 0x0000, 2)
        XCTAssertEqual(Array(f.modes.suffix(3)), [.msi(vectors: 1), .msix(vectors: 5), .msi(vectors: 1)])
    }

    func testMSIWithPerVectorMaskingAndNoPin() throws {
        let f = FakeAssignedBackend.e1000e()
        f.set16(0xD2, 0x0180) // 64-bit, per-vector masking: 24 bytes, 0xD0-0xE7
        f.set8(0xD1, 0xA0)    // skip the PCIe capability, which would overlap
        f.set8(0x3D, 0)       // no INTx pin
        f.set32(0xE4, 0xFFFF_FFFF) // the device's bytes under the emulated pending register
        let d = try AssignedPCIFunction(backend: f, barSizes: FakeAssignedBackend.e1000eBars, romSize: nil, name: "m")
        XCTAssertEqual(d.capabilities.map { $0.offset }, [0xC8, 0xD0, 0xA0])
        XCTAssertEqual(d.capabilities[1], AssignedCapability(id: 0x05, offset: 0xD0, length: 24))
        XCTAssertEqual(cfgRead(d, 0xD0, 4), 0x0180_A005)
        XCTAssertNil(d.interruptPin)
        let router = RecordingRouter()
        d.attached(PCIAttachContext(address: PCIAddress(device: 4), msiRouter: router, intx: nil, intxGSI: nil))
        XCTAssertEqual(f.modes, [], "no pin: the mode stays none")
        cfgWrite(d, 0xE0, 0x1, 4) // Mask Bits
        cfgWrite(d, 0xD2, 0x0181, 2)
        XCTAssertEqual(f.modes, [.msi(vectors: 1)])
        XCTAssertEqual(d.msi?.isMasked, true)
        XCTAssertEqual(cfgRead(d, 0xE4, 4), 0, "Pending Bits: emulated")
        d.msi?.trigger()
        XCTAssertEqual(cfgRead(d, 0xE4, 4), 1)
        cfgWrite(d, 0xD2, 0x0180, 2)
        XCTAssertEqual(f.modes, [.msi(vectors: 1), .none])
        XCTAssertFalse(f.writtenOffsets.contains { (0xD0..<0xE8).contains($0) })
    }

    // MARK: Direct mapping

    func testDirectMapRanges() {
        typealias A = AssignedPCIFunction
        XCTAssertEqual(A.directMapRanges(barSize: 0x4000, mappable: [], trapped: [0..<0x50]), [])
        XCTAssertEqual(A.directMapRanges(barSize: 0x20000, mappable: [0..<0x20000], trapped: []), [0..<0x20000])
        // Table in the middle.
        XCTAssertEqual(A.directMapRanges(barSize: 0x10000, mappable: [0..<0x10000], trapped: [0x8000..<0x8050]),
                       [0..<0x8000, 0x9000..<0x10000])
        // Table and PBA on the same page.
        XCTAssertEqual(A.directMapRanges(barSize: 0x4000, mappable: [0..<0x4000], trapped: [0x2000..<0x2050, 0x2800..<0x2808]),
                       [0..<0x2000, 0x3000..<0x4000])
        // Table at 0 and PBA at 0x2000 (e1000e BAR 3).
        XCTAssertEqual(A.directMapRanges(barSize: 0x4000, mappable: [0..<0x4000], trapped: [0..<0x50, 0x2000..<0x2008]),
                       [0x1000..<0x2000, 0x3000..<0x4000])
        // A trapped range straddling a page boundary traps both pages.
        XCTAssertEqual(A.directMapRanges(barSize: 0x4000, mappable: [0..<0x4000], trapped: [0xFF8..<0x1008]),
                       [0x2000..<0x4000])
        // Sub-page BAR: nothing can be mapped.
        XCTAssertEqual(A.directMapRanges(barSize: 0x100, mappable: [0..<0x100], trapped: []), [])
        XCTAssertEqual(A.directMapRanges(barSize: 0x1800, mappable: [0..<0x1800], trapped: []), [0..<0x1000])
        // Unaligned areas shrink to whole pages; areas past the BAR are clipped.
        XCTAssertEqual(A.directMapRanges(barSize: 0x8000, mappable: [0x800..<0x5800], trapped: []), [0x1000..<0x5000])
        XCTAssertEqual(A.directMapRanges(barSize: 0x8000, mappable: [0x6000..<0x10000], trapped: []), [0x6000..<0x8000])
        XCTAssertEqual(A.directMapRanges(barSize: 0x8000, mappable: [0x100..<0x200], trapped: []), [])
        // Unsorted, overlapping and adjacent areas merge.
        XCTAssertEqual(A.directMapRanges(barSize: 0x8000, mappable: [0x6000..<0x7000, 0x2000..<0x4000, 0..<0x2000, 0x1000..<0x3000],
                                         trapped: []),
                       [0..<0x4000, 0x6000..<0x7000])
        // Everything trapped; an empty trapped range is ignored.
        XCTAssertEqual(A.directMapRanges(barSize: 0x4000, mappable: [0..<0x4000], trapped: [0..<0x4000]), [])
        XCTAssertEqual(A.directMapRanges(barSize: 0x4000, mappable: [0..<0x4000], trapped: [0x2000..<0x2000]), [0..<0x4000])
        // The result is merged even when holes split and rejoin areas.
        XCTAssertEqual(A.directMapRanges(barSize: 0x6000, mappable: [0..<0x3000, 0x3000..<0x6000], trapped: [0x5000..<0x5001]),
                       [0..<0x5000])
        // 64 KiB pages; a bad page size.
        XCTAssertEqual(A.directMapRanges(barSize: 0x20000, mappable: [0..<0x20000], trapped: [0..<0x50], pageSize: 0x10000),
                       [0x10000..<0x20000])
        XCTAssertEqual(A.directMapRanges(barSize: 0x20000, mappable: [0..<0x20000], trapped: [], pageSize: 3000), [])
        XCTAssertEqual(A.directMapRanges(barSize: 0x20000, mappable: [0..<0x20000], trapped: [], pageSize: 0), [])
        // No overflow at the top of the space.
        XCTAssertEqual(A.directMapRanges(barSize: UInt64.max, mappable: [0..<UInt64.max], trapped: [(UInt64.max - 8)..<UInt64.max]),
                       [0..<0xFFFF_FFFF_FFFF_F000])
        XCTAssertEqual(A.directMapRanges(barSize: UInt64.max, mappable: [(UInt64.max - 0x800)..<UInt64.max], trapped: []), [])
    }

    func testDirectMapRangesForAFunction() throws {
        let (_, d) = try makeE1000e()
        XCTAssertEqual(d.directMapRanges(bar: 3, mappable: [0..<0x4000]), [0x1000..<0x2000, 0x3000..<0x4000])
        XCTAssertEqual(d.directMapRanges(bar: 0, mappable: [0..<0x20000]), [0..<0x20000])
        XCTAssertEqual(d.directMapRanges(bar: 2, mappable: [0..<0x20]), [], "I/O BARs are not mapped")
        XCTAssertEqual(d.directMapRanges(bar: 4, mappable: [0..<0x1000]), [])
    }

    // MARK: On a root bus

    func testAttachToRootBus() throws {
        let (f, d) = try makeE1000e(rom: 0x40000)
        let router = RecordingRouter()
        let lines = CallbackLog<RecordingLine>()
        let bus = PCIRootBus(windows: testWindows, msiRouter: router, intxLine: { g in
            let l = RecordingLine(gsi: g)
            lines.append(l)
            return l
        })
        let moves = CallbackLog<String>()
        bus.onBarMoved = { _, index, _, new in moves.append("\(index) \(new.map { hex($0) } ?? "nil")") }
        let addr = try bus.attach(d)
        XCTAssertEqual(addr, PCIAddress(device: 1))
        XCTAssertEqual(moves.all, ["0 0xc0000000", "1 0xc0020000", "2 0xc000", "3 0xc0040000"])
        XCTAssertEqual(bus.decodedBars(slot: 1).map { $0.address }, [0xC000_0000, 0xC002_0000, 0xC000, 0xC004_0000])
        // The bus enabled decoding on the device itself; the BARs and Interrupt Line stayed virtual.
        XCTAssertEqual(f.get16(0x04), PCICommand.io | PCICommand.memory)
        XCTAssertEqual(f.get32(0x10), 0xF7C0_0000)
        XCTAssertEqual(f.get32(0x30), 0xF7A0_0001)
        XCTAssertEqual(cfgRead(d, 0x3C, 1), 17)
        XCTAssertEqual(cfgRead(d, 0x30, 4), 0xC008_0000, "ROM placed, enable bit clear")
        XCTAssertEqual(f.writtenOffsets.sorted(), [0x04, 0x05])
        XCTAssertEqual(f.modes, [.intx(gsi: 17)])
        XCTAssertTrue(lines.all.allSatisfy { $0.levels.isEmpty }, "the model never drives the bus's INTx line")
        // BAR accesses through the window routers.
        f.barContents[0] = [0x10: 0x78, 0x11: 0x56, 0x12: 0x34, 0x13: 0x12]
        XCTAssertEqual(read(bus.mmio32Router, 0x10, 4), 0x1234_5678)
        write(bus.mmio32Router, 0x2_0004, 0xCAFE, 2)
        XCTAssertEqual(f.barWrites.last?.index, 1)
        XCTAssertEqual(f.barWrites.last?.offset, 4)
        write(bus.ioRouter, 0x4, 0x1, 4)
        XCTAssertEqual(f.barWrites.last?.index, 2)
        // MSI-X table through the bus: entry 2 at BAR 3 + 0x20.
        write(bus.mmio32Router, 0x4_0020, 0xFEE0_0000, 4)
        write(bus.mmio32Router, 0x4_0028, 0x4062, 4)
        write(bus.mmio32Router, 0x4_002C, 0, 4)
        XCTAssertEqual(f.barWrites.count, 2)
        XCTAssertEqual(read(bus.mmio32Router, 0x4_0028, 4), 0x4062)
        // Enable MSI-X through ECAM.
        write(bus.configMMIO, ecam(dev: 1, reg: 0xA2), 0x8000, 2)
        XCTAssertEqual(router.take(), [.configure(addr, 2, MSIMessage(address: 0xFEE0_0000, data: 0x4062))])
        XCTAssertEqual(f.modes, [.intx(gsi: 17), .msix(vectors: 5)])
        // Config reads through the ports.
        write(bus.configIO, 0, cf8(dev: 1, reg: 0), 4)
        XCTAssertEqual(read(bus.configIO, 4, 4), 0x10D3_8086)
        // The guest turns memory decoding off on the device and the bus follows.
        write(bus.configMMIO, ecam(dev: 1, reg: 0x04), 0x0001, 2)
        XCTAssertEqual(bus.decodedBars(slot: 1).map { $0.index }, [2])
        XCTAssertEqual(f.get16(0x04), 0x0001)
        // Moving BAR 3: the table follows.
        write(bus.configMMIO, ecam(dev: 1, reg: 0x1C), 0xC010_0000, 4)
        write(bus.configMMIO, ecam(dev: 1, reg: 0x04), 0x0003, 2)
        XCTAssertEqual(read(bus.mmio32Router, 0x10_0028, 4), 0x4062)
        XCTAssertEqual(f.get32(0x1C), 0xF7C2_0000)
    }

    func testAttach64BitBarToRootBus() throws {
        let f = FakeAssignedBackend.ivshmem()
        let d = try AssignedPCIFunction(backend: f, barSizes: FakeAssignedBackend.ivshmemBars, romSize: nil, name: "ivshmem")
        let bus = PCIRootBus(windows: testWindows)
        try bus.attach(d)
        XCTAssertEqual(bus.decodedBars(slot: 1), [
            PCIBarRegion(index: 0, address: 0xC000_0000, size: 0x100, kind: .memory32, prefetchable: false),
            PCIBarRegion(index: 1, address: 0xC000_1000, size: 0x1000, kind: .memory32, prefetchable: false),
            PCIBarRegion(index: 2, address: 0x2_0000_0000, size: 8 << 30, kind: .memory64, prefetchable: true),
        ])
        XCTAssertEqual(f.modes, [], "no interrupt pin: no INTx mode")
        XCTAssertEqual(f.get16(0x04), PCICommand.memory)
        write(bus.mmio64Router, 0x2_FFFF_FFF8, 0x0102_0304_0506_0708, 8)
        XCTAssertEqual(f.barWrites.last?.index, 2)
        XCTAssertEqual(f.barWrites.last?.offset, 0x1_FFFF_FFF8)
        XCTAssertEqual(f.barWrites.last?.bytes, [8, 7, 6, 5, 4, 3, 2, 1])
    }

    // MARK: Robustness

    /// vCPU-like threads toggle MSI and MSI-X, program the table and read
    /// config space at once: no deadlock, no trap, and the backend hears
    /// each mode once per change, ending with the mode the registers select.
    func testConcurrentModeChanges() throws {
        let (f, d) = try makeE1000e()
        d.attached(PCIAttachContext(address: PCIAddress(device: 1), msiRouter: CountingRouter(), intx: nil, intxGSI: 17))
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for i in 0..<2000 {
                switch worker {
                case 0: cfgWrite(d, 0xA2, [0x8000, 0xC000, 0x0000][i % 3], 2)
                case 1: cfgWrite(d, 0xD2, UInt64(i % 2), 2)
                case 2:
                    barWrite(d, 3, UInt64(16 * (i % 5)), 0xFEE0_0000, 4)
                    barWrite(d, 3, UInt64(16 * (i % 5) + 12), UInt64(i % 2), 4)
                    _ = barRead(d, 3, 0x40, 16)
                default: _ = cfgRead(d, (i * 4) % 0x110, 4)
                }
            }
        }
        XCTAssertFalse(zip(f.modes, f.modes.dropFirst()).contains { $0 == $1 }, "a mode was reported twice in a row")
        XCTAssertEqual(f.modes.first, .intx(gsi: 17))
        XCTAssertEqual(f.modes.last, d.interruptMode)
        // Worker 0 ended with Enable and Function Mask set (i = 1999,
        // 1999 % 3 = 1: 0xC000); worker 1 with MSI enabled (1999 % 2 = 1).
        XCTAssertEqual(d.interruptMode, .msix(vectors: 5))
        cfgWrite(d, 0xA2, 0, 2)
        XCTAssertEqual(d.interruptMode, .msi(vectors: 1))
        cfgWrite(d, 0xD2, 0, 2)
        XCTAssertEqual(d.interruptMode, .intx(gsi: 17))
    }

    func testRandomAccessesNeverTrapOrReachEmulatedRegisters() throws {
        let (f, d) = try makeE1000e(rom: 0x800)
        d.attached(PCIAttachContext(address: PCIAddress(device: 1), msiRouter: RecordingRouter(), intx: nil, intxGSI: 17))
        var rng = SplitMix64(seed: 42)
        let widths = [0, 1, 2, 3, 4, 8, 16]
        for _ in 0..<20000 {
            let offset = Int.random(in: -16...0x1010, using: &rng)
            let width = widths.randomElement(using: &rng) ?? 4
            let value = rng.next()
            if rng.next() & 1 == 0 {
                var b = [UInt8](repeating: 0, count: width)
                b.withUnsafeMutableBytes { d.readConfig(offset: offset, data: $0) }
            } else {
                let b = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0 % 8))) }
                b.withUnsafeBytes { d.writeConfig(offset: offset, data: $0) }
            }
            let bar = Int.random(in: -1...7, using: &rng)
            let barOffset = UInt64.random(in: 0...0x21000, using: &rng)
            barWrite(d, bar, barOffset, value, min(width, 8))
            _ = barRead(d, bar, barOffset, min(width, 8))
        }
        let emulated = Set(Array(0x0E...0x0E) + Array(0x10..<0x2C) + Array(0x30...0x3C) + [0xC8, 0xC9, 0xE0, 0xE1]
                           + Array(0xA0..<0xAC) + Array(0xD0..<0xE0))
        XCTAssertTrue(f.writtenOffsets.isDisjoint(with: emulated), "\(f.writtenOffsets.intersection(emulated).sorted())")
        XCTAssertTrue(f.writtenOffsets.allSatisfy { $0 >= 0 && $0 < 0x100 })
        XCTAssertTrue(f.barWrites.allSatisfy { (0...3).contains($0.index) })
        XCTAssertFalse(f.barWrites.contains { $0.index == 3 && ($0.offset < 0x50 || (0x2000..<0x2008).contains($0.offset)) })
        // After all that, the chain and the host BAR registers are intact.
        XCTAssertEqual(capabilityChain(d).map { $0[0] }, [0xC8, 0xD0, 0xE0, 0xA0])
        XCTAssertEqual(f.get32(0x10), 0xF7C0_0000)
    }
}
