import XCTest
@testable import ACPI

/// The machine of Sources/PCI/README.md, written out here rather than taken
/// from the PCI target (ACPI does not depend on it): ECAM at 0xE000_0000
/// for bus 0, I/O window 0xC000-0xFFFF, 32-bit window [0xC000_0000,
/// 0xE000_0000), a 64 GiB 64-bit window at 4 GiB, and slots 1-31 x INTA-INTD
/// on GSI 16 + (slot + pin) mod 4.
func swiftVMMBridge(slots: [UInt8] = Array(1...31)) -> ACPIMachine.PCIHostBridge {
    var routes: [ACPIMachine.PCIHostBridge.INTxRoute] = []
    for slot in slots {
        for pin in UInt8(0)...3 {
            routes.append(.init(slot: slot, pin: pin, gsi: 16 + (UInt32(slot) + UInt32(pin)) % 4))
        }
    }
    return ACPIMachine.PCIHostBridge(ecamBase: 0xE000_0000, ioWindows: [0xC000...0xFFFF],
                                     mmio32Window: 0xC000_0000...0xDFFF_FFFF,
                                     mmio64Window: 0x1_0000_0000...0x10_FFFF_FFFF, intxRoutes: routes)
}

/// The PCI host bridge: MCFG, \_SB.PCI0 and \_SB.ECAM byte for byte, the
/// layout with PCI, validation, and that a machine without PCI is unchanged.
final class PCIRootTests: XCTestCase {
    // MARK: MCFG (PCI Firmware 3.2 §4.1.2)

    func testMCFGExactBytes() throws {
        let bytes = try MCFG.build(bridge: swiftVMMBridge())
        let expected = fixChecksum(cat(sdtHeader("MCFG", length: 60, revision: 1),
                                       [0, 0, 0, 0, 0, 0, 0, 0],                          // reserved
                                       [0x00, 0x00, 0x00, 0xE0, 0x00, 0x00, 0x00, 0x00],  // base 0xE0000000
                                       [0x00, 0x00],                                      // segment 0
                                       [0x00, 0x00],                                      // buses 0-0
                                       [0x00, 0x00, 0x00, 0x00]), at: 9)                  // reserved
        XCTAssertEqual(bytes, expected)
        XCTAssertEqual(bytes.count, 60)
        assertSumsToZero(bytes[...], "MCFG")
    }

    func testMCFGWithSeveralAllocations() throws {
        let bytes = try MCFG.build(allocations: [
            MCFG.Allocation(base: 0xB000_0000, buses: 0...0xFF),
            MCFG.Allocation(base: 0x12_3456_0000_0000, segment: 0x0102, buses: 0x10...0x3F),
        ])
        let expected = fixChecksum(cat(sdtHeader("MCFG", length: 76, revision: 1), [UInt8](repeating: 0, count: 8),
                                       .le(UInt64(0xB000_0000)), [0x00, 0x00, 0x00, 0xFF], [0, 0, 0, 0],
                                       .le(UInt64(0x12_3456_0000_0000)), [0x02, 0x01, 0x10, 0x3F], [0, 0, 0, 0]), at: 9)
        XCTAssertEqual(bytes, expected)
        XCTAssertEqual(MCFG.length(allocations: 2), 76)
        XCTAssertEqual(try MCFG.build(allocations: []).count, 44)
    }

    // MARK: \_SB.PCI0

    /// WordBusNumber, IO for 0xCF8, WordIO, DWordMemory, QWordMemory, End
    /// Tag (ACPI 6.5 §6.4.3.5.1-3, §6.4.2.5, §6.4.2.9).
    func testCRSExactBytes() throws {
        let expected = cat(
            [0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00], [0, 0], [0, 0], [0, 0], [0, 0], [0x01, 0x00],   // bus 0-0, producer
            [0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08],                                     // IO 0xCF8, 8 ports
            [0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03], [0, 0], [0x00, 0xC0], [0xFF, 0xFF], [0, 0], [0x00, 0x40],
            [0x87, 0x17, 0x00, 0x00, 0x0C, 0x01], .le(UInt32(0)), .le(UInt32(0xC000_0000)),      // non-cacheable, RW
            .le(UInt32(0xDFFF_FFFF)), .le(UInt32(0)), .le(UInt32(0x2000_0000)),
            [0x8A, 0x2B, 0x00, 0x00, 0x0C, 0x01], .le(UInt64(0)), .le(UInt64(0x1_0000_0000)),    // not prefetchable
            .le(UInt64(0x10_FFFF_FFFF)), .le(UInt64(0)), .le(UInt64(0x10_0000_0000)),
            [0x79, 0x00])
        XCTAssertEqual(try PCIRoot.resources(swiftVMMBridge()).resourceBytes(), expected)
        XCTAssertEqual(expected.count, 16 + 8 + 16 + 26 + 46 + 2)

        // QEMU's split around the config ports, no config IO, no 64-bit window.
        var qemu = swiftVMMBridge()
        qemu.configPorts = nil
        qemu.ioWindows = [0x0000...0x0CF7, 0x0D00...0xFFFF]
        qemu.mmio64Window = nil
        XCTAssertEqual(try PCIRoot.resources(qemu).resourceBytes(), cat(
            [0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00], [0, 0], [0, 0], [0, 0], [0, 0], [0x01, 0x00],
            [0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03], [0, 0], [0x00, 0x00], [0xF7, 0x0C], [0, 0], [0xF8, 0x0C],
            [0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03], [0, 0], [0x00, 0x0D], [0xFF, 0xFF], [0, 0], [0x00, 0xF3],
            [0x87, 0x17, 0x00, 0x00, 0x0C, 0x01], .le(UInt32(0)), .le(UInt32(0xC000_0000)),
            .le(UInt32(0xDFFF_FFFF)), .le(UInt32(0)), .le(UInt32(0x2000_0000)),
            [0x79, 0x00]))
    }

    /// _PRT (§6.2.13): Package (4) { slot << 16 | 0xFFFF, pin, Zero, GSI }.
    func testPRTEntries() throws {
        let prt = try PCIRoot.routingTable(swiftVMMBridge()).encoded()
        // 124 entries: 31 x 4 + 62 with a BytePrefix pin (2, 3); 12 or 13 bytes each.
        let entries = 31 * 2 * 12 + 31 * 2 * 13
        XCTAssertEqual(entries, 1550)
        // PackageOp, 2-byte PkgLength (1 + 2 + 1550 = 1553 = 0x611), NumElements 124.
        XCTAssertEqual(Array(prt.prefix(4)), [0x12, 0x41, 0x61, 0x7C])
        XCTAssertEqual(prt.count, 1 + 2 + 1 + entries)
        XCTAssertEqual(Array(prt[4..<(4 + 12 + 12 + 13 + 13)]), cat(
            // PackageOp, PkgLength 11 (itself, NumElements, DWord 5, Zero/One 1, Zero 1, BytePrefix 2).
            [0x12, 0x0B, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00, 0x0A, 0x11],        // 1, INTA, GSI 17
            [0x12, 0x0B, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x01, 0x00, 0x0A, 0x12],        // 1, INTB, GSI 18
            [0x12, 0x0C, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x0A, 0x02, 0x00, 0x0A, 0x13],  // 1, INTC, GSI 19
            [0x12, 0x0C, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x0A, 0x03, 0x00, 0x0A, 0x10])) // 1, INTD, GSI 16
        XCTAssertEqual(Array(prt.suffix(13)),
                       [0x12, 0x0C, 0x04, 0x0C, 0xFF, 0xFF, 0x1F, 0x00, 0x0A, 0x03, 0x00, 0x0A, 0x12])  // 31, INTD, GSI 18

        // Slot 0 gives a Word address; a large GSI a DWord.
        var odd = swiftVMMBridge(slots: [])
        odd.intxRoutes = [.init(slot: 0, pin: 0, gsi: 0x1_0000)]
        XCTAssertEqual(try PCIRoot.routingTable(odd).encoded(),
                       [0x12, 0x0F, 0x01, 0x12, 0x0C, 0x04, 0x0B, 0xFF, 0xFF, 0x00, 0x00, 0x0C, 0x00, 0x00, 0x01, 0x00])
        XCTAssertEqual(try PCIRoot.routingTable(swiftVMMBridge(slots: [])).encoded(), [0x12, 0x02, 0x00])
    }

    /// What iasl 20200925 (`iasl -oa`) compiles from the ASL in
    /// `PCIRoot.osc()`'s documentation: an oracle independent of our encoder.
    static let oscFromIASL: [UInt8] = [
        0x14, 0x44, 0x07, 0x5F, 0x4F, 0x53, 0x43, 0x0C, 0x8A, 0x6B, 0x00, 0x43, 0x44, 0x57, 0x31, 0xA0,
        0x46, 0x05, 0x93, 0x68, 0x11, 0x13, 0x0A, 0x10, 0x5B, 0x4D, 0xDB, 0x33, 0xF7, 0x1F, 0x1C, 0x40,
        0x96, 0x57, 0x74, 0x41, 0xC0, 0x3D, 0xD7, 0x66, 0x8A, 0x6B, 0x0A, 0x08, 0x43, 0x44, 0x57, 0x33,
        0x7B, 0x43, 0x44, 0x57, 0x33, 0x0C, 0xF6, 0xFF, 0xFF, 0xFF, 0x60, 0xA0, 0x10, 0x92, 0x93, 0x69,
        0x01, 0x7D, 0x43, 0x44, 0x57, 0x31, 0x0A, 0x08, 0x43, 0x44, 0x57, 0x31, 0xA0, 0x13, 0x92, 0x93,
        0x43, 0x44, 0x57, 0x33, 0x60, 0x7D, 0x43, 0x44, 0x57, 0x31, 0x0A, 0x10, 0x43, 0x44, 0x57, 0x31,
        0x70, 0x60, 0x43, 0x44, 0x57, 0x33, 0xA1, 0x0C, 0x7D, 0x43, 0x44, 0x57, 0x31, 0x0A, 0x04, 0x43,
        0x44, 0x57, 0x31, 0xA4, 0x6B,
    ]

    func testOSCExactBytes() throws {
        XCTAssertEqual(try PCIRoot.osc().encoded(), Self.oscFromIASL)
        XCTAssertEqual(PCIRoot.OSCControl.refused, 0x09)
    }

    /// The whole device for a bridge small enough to write out.
    func testRootBridgeExactBytes() throws {
        var bridge = swiftVMMBridge(slots: [])
        bridge.configPorts = nil
        bridge.mmio64Window = nil
        bridge.intxRoutes = [.init(slot: 1, pin: 0, gsi: 17)]
        let names = cat([0x08], .ascii("_HID"), [0x0C, 0x41, 0xD0, 0x0A, 0x08],   // EisaId ("PNP0A08")
                        [0x08], .ascii("_CID"), [0x0C, 0x41, 0xD0, 0x0A, 0x03],   // EisaId ("PNP0A03")
                        [0x08], .ascii("_ADR"), [0x00],
                        [0x08], .ascii("_SEG"), [0x00],
                        [0x08], .ascii("_BBN"), [0x00],
                        [0x08], .ascii("_UID"), [0x00])
        let resources = cat([0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00], [0, 0], [0, 0], [0, 0], [0, 0], [0x01, 0x00],
                            [0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03], [0, 0], [0x00, 0xC0], [0xFF, 0xFF], [0, 0], [0x00, 0x40],
                            [0x87, 0x17, 0x00, 0x00, 0x0C, 0x01], .le(UInt32(0)), .le(UInt32(0xC000_0000)),
                            .le(UInt32(0xDFFF_FFFF)), .le(UInt32(0)), .le(UInt32(0x2000_0000)), [0x79, 0x00])
        XCTAssertEqual(resources.count, 60)
        // Buffer: PkgLength 63 (1 + BytePrefix 60 (2) + 60), the largest one-byte form.
        let crs = cat([0x08], .ascii("_CRS"), [0x11, 0x3F, 0x0A, 0x3C], resources)
        // Package (1) { Package (4) {...} }: PkgLength 14 = 1 + NumElements + 12.
        let prt = cat([0x08], .ascii("_PRT"), [0x12, 0x0E, 0x01],
                      [0x12, 0x0B, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00, 0x0A, 0x11])
        let body = cat(.ascii("PCI0"), names, crs, prt, Self.oscFromIASL)
        XCTAssertEqual(body.count, 4 + 44 + 69 + 20 + 117)
        // DeviceOp, PkgLength 254 + 2 = 256 = 0x40 0x10.
        XCTAssertEqual(try PCIRoot.rootBridge(bridge).encoded(), cat([0x5B, 0x82, 0x40, 0x10], body))
    }

    /// \_SB.ECAM: PNP0C02 with _STA and Memory32Fixed (ReadWrite, ECAM, 1 MiB per bus).
    func testECAMReservationExactBytes() throws {
        let expected = cat([0x5B, 0x82, 0x30], .ascii("ECAM"),
                           [0x08], .ascii("_HID"), [0x0C, 0x41, 0xD0, 0x0C, 0x02],            // EisaId ("PNP0C02")
                           [0x14, 0x09], .ascii("_STA"), [0x00, 0xA4, 0x0A, 0x0F],
                           [0x08], .ascii("_CRS"), [0x11, 0x11, 0x0A, 0x0E],
                           [0x86, 0x09, 0x00, 0x01], .le(UInt32(0xE000_0000)), .le(UInt32(0x10_0000)), [0x79, 0x00])
        XCTAssertEqual(try PCIRoot.ecamReservation(swiftVMMBridge()).encoded(), expected)

        // Buses 0x10-0x1F of an ECAM at 0xB000_0000: the reserved range starts at bus 0x10.
        var bridge = swiftVMMBridge()
        bridge.ecamBase = 0xB000_0000
        bridge.buses = 0x10...0x1F
        XCTAssertEqual(bridge.ecamStart, 0xB100_0000)
        XCTAssertEqual(bridge.ecamSize, 0x100_0000)
        let bytes = try PCIRoot.ecamReservation(bridge).encoded()
        XCTAssertEqual(Array(bytes.suffix(14)),
                       cat([0x86, 0x09, 0x00, 0x01], .le(UInt32(0xB100_0000)), .le(UInt32(0x100_0000)), [0x79, 0x00]))
        // _BBN and WordBusNumber follow the bus range.
        let device = try PCIRoot.rootBridge(bridge).encoded()
        XCTAssertNotNil(find(cat([0x08], .ascii("_BBN"), [0x0A, 0x10]), in: device))
        XCTAssertNotNil(find(cat([0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00], [0, 0], [0x10, 0x00], [0x1F, 0x00], [0, 0], [0x10, 0x00]),
                             in: device))
    }

    func testDSDTAppendsPCIDevicesToSB() throws {
        let plain = ACPIMachine(vcpus: 1)
        var withPCI = plain
        withPCI.pci = swiftVMMBridge()
        let before = try DSDT.aml(for: plain)
        let after = try DSDT.aml(for: withPCI)
        let pci = try PCIRoot.rootBridge(swiftVMMBridge()).encoded() + PCIRoot.ecamReservation(swiftVMMBridge()).encoded()
        XCTAssertEqual(pci.count, 1852 + 50)
        // Name (\_S5, ...) is 14 bytes, then ScopeOp, a two-byte PkgLength
        // (both before and after) and \_SB_; the devices follow at 22.
        XCTAssertEqual(Array(after.prefix(15)), Array(before.prefix(15)))
        XCTAssertEqual(after[14], 0x10)
        func scopeLength(_ aml: [UInt8]) -> Int { Int(aml[15] & 0x0F) | Int(aml[16]) << 4 }
        XCTAssertEqual(before[15] >> 6, 1)
        XCTAssertEqual(after[15] >> 6, 1)
        XCTAssertEqual(scopeLength(after), scopeLength(before) + pci.count)
        XCTAssertEqual(after.count, before.count + pci.count)
        XCTAssertEqual(Array(after[17..<(after.count - pci.count)]), Array(before[17...]), "the legacy devices are unchanged")
        XCTAssertEqual(Array(after.suffix(pci.count)), pci)
    }

    // MARK: Layout

    func testLayoutWithPCI() throws {
        for vcpus in [1, 254] {
            let layout = try ACPITables.build(config: ACPIMachine(vcpus: vcpus, pci: swiftVMMBridge()))
            XCTAssertEqual(layout.tables.map(\.signature), ["RSD PTR ", "XSDT", "FACP", "APIC", "DSDT", "MCFG"])
            // 31 slots x 4 pins of _PRT and 254 vCPUs still end far below 1 MiB.
            XCTAssertLessThanOrEqual(layout.end, 0x10_0000)
            guard let xsdt = layout.table("XSDT"), let mcfg = layout.table("MCFG"),
                  let rsdp = layout.table("RSD PTR ") else { return XCTFail("missing table") }
            XCTAssertEqual(xsdt.bytes.count, 36 + 3 * 8)
            XCTAssertEqual(xsdt.bytes.u64(at: 36), layout.table("FACP")?.address)
            XCTAssertEqual(xsdt.bytes.u64(at: 44), layout.table("APIC")?.address)
            XCTAssertEqual(xsdt.bytes.u64(at: 52), mcfg.address)
            XCTAssertEqual(layout.table("FACP")?.bytes.u64(at: 140), layout.table("DSDT")?.address)
            XCTAssertEqual(rsdp.bytes.u64(at: 24), xsdt.address)
            XCTAssertEqual(mcfg.bytes, try MCFG.build(bridge: swiftVMMBridge()))
            assertSumsToZero(rsdp.bytes[0..<20], "RSDP")
            assertSumsToZero(rsdp.bytes[...], "RSDP extended")
            var previousEnd: UInt64 = 0
            for t in layout.tables {
                XCTAssertGreaterThanOrEqual(t.address, previousEnd, "\(t.signature) overlaps")
                previousEnd = t.end
                guard t.signature != "RSD PTR " else { continue }
                XCTAssertEqual(Int(t.bytes.u32(at: 4)), t.bytes.count, "\(t.signature) length")
                assertSumsToZero(t.bytes[...], t.signature)
                XCTAssertEqual(t.address % 8, 0, "\(t.signature) aligned")
            }
        }
        // 1 vCPU: RSDP 36, XSDT 60, FADT 276, MADT 70, DSDT 267 + PCI0 1852 + ECAM 50, MCFG 60,
        // each after the RSDP 8-byte aligned.
        let layout = try ACPITables.build(config: ACPIMachine(vcpus: 1, pci: swiftVMMBridge()))
        XCTAssertEqual(layout.tables.map(\.bytes.count), [36, 60, 276, 70, 2169, 60])
        XCTAssertEqual(layout.tables.map(\.address), [0xE0000, 0xE0028, 0xE0068, 0xE0180, 0xE01C8, 0xE0A48])
        XCTAssertEqual(layout.end, 0xE0A84)
    }

    /// The largest machine: 254 vCPUs, all 32 slots x 4 pins routed, two
    /// I/O windows. About 4.7 KiB from the RSDP, far below 1 MiB.
    func testWorstCaseFitsWithRoom() throws {
        var bridge = swiftVMMBridge(slots: Array(0...31))
        bridge.ioWindows = [0x0000...0x0CF7, 0x0D00...0xFFFF]
        let layout = try ACPITables.build(config: ACPIMachine(vcpus: 254, pci: bridge))
        XCTAssertEqual(bridge.intxRoutes.count, 128)
        XCTAssertLessThan(layout.end, 0xE_2000)
    }

    // MARK: Validation

    func testInvalidBridges() {
        func rejects(_ change: (inout ACPIMachine.PCIHostBridge) -> Void, _ message: String,
                     file: StaticString = #filePath, line: UInt = #line) {
            var bridge = swiftVMMBridge()
            change(&bridge)
            XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 1, pci: bridge)), file: file, line: line) {
                XCTAssertEqual(($0 as? ACPIError)?.description, "ACPI machine description: " + message, file: file, line: line)
            }
            XCTAssertThrowsError(try DSDT.build(machine: ACPIMachine(vcpus: 1, pci: bridge)), file: file, line: line)
        }
        rejects({ $0.ecamBase = 0xE008_0000 }, "PCI ECAM base 0xe0080000 is not 1 MiB aligned")
        rejects({ $0.ecamBase = 0xFFF0_0000; $0.buses = 0...1 },
                "PCI ECAM for buses 0-1 at 0xfff00000 does not end below 4 GiB")
        rejects({ $0.ecamBase = 0xFFFF_FFFF_FFF0_0000 },
                "PCI ECAM for buses 0-0 at 0xfffffffffff00000 does not end below 4 GiB")
        rejects({ $0.ecamBase = 0xC010_0000 },
                "PCI ECAM 0xc0100000-0xc01fffff overlaps the 32-bit MMIO window 0xc0000000-0xdfffffff")
        rejects({ $0.mmio64Window = 0xDFFF_F000...0xDFFF_FFFF },
                "PCI 32-bit MMIO window 0xc0000000-0xdfffffff overlaps the 64-bit MMIO window 0xdffff000-0xdfffffff")
        rejects({ $0.mmio64Window = 0xE00F_F000...0x1_FFFF_FFFF },
                "PCI ECAM 0xe0000000-0xe00fffff overlaps the 64-bit MMIO window 0xe00ff000-0x1ffffffff")
        rejects({ $0.ioWindows = [0x0000...0x0CF8] },
                "PCI I/O window 0x0-0xcf8 overlaps the config ports 0xcf8-0xcff")
        rejects({ $0.ioWindows = [0xC000...0xCFFF, 0xCFFF...0xFFFF] },
                "PCI I/O window 0xc000-0xcfff overlaps the I/O window 0xcfff-0xffff")
        rejects({ $0.configPorts = 0xFFF9 }, "PCI config ports at 0xfff9 run past port 0xffff")
        rejects({ $0.intxRoutes.append(.init(slot: 32, pin: 0, gsi: 16)) },
                "PCI INTx route slot 32 pin 0: slots are 0-31, pins 0-3 (INTA-INTD)")
        rejects({ $0.intxRoutes.append(.init(slot: 1, pin: 4, gsi: 16)) },
                "PCI INTx route slot 1 pin 4: slots are 0-31, pins 0-3 (INTA-INTD)")
        rejects({ $0.intxRoutes.append(.init(slot: 5, pin: 2, gsi: 20)) },
                "PCI INTx route slot 5 pin 2 is listed twice")

        // Boundaries that are fine: ECAM ending exactly at 4 GiB, windows
        // touching each other and the config ports, no I/O window at all.
        var ok = swiftVMMBridge()
        ok.ecamBase = 0xF000_0000
        ok.buses = 0...0xFF
        ok.ioWindows = []
        XCTAssertNoThrow(try ACPITables.build(config: ACPIMachine(vcpus: 1, pci: ok)))
        ok = swiftVMMBridge()
        ok.ioWindows = [0x0000...0x0CF7, 0x0D00...0xBFFF, 0xC000...0xFFFF]
        ok.mmio64Window = 0xE010_0000...0xEFFF_FFFF
        XCTAssertNoThrow(try ACPITables.build(config: ACPIMachine(vcpus: 1, pci: ok)))
    }

    // MARK: No PCI: the same bytes as before PCI existed

    /// The table area [RSDP, end) for three machines, as the code before
    /// `ACPIMachine.pci` (commit 2d1cd90) built them: two in full, the
    /// 254-vCPU one as length and FNV-1a 64 hash.
    func testMachinesWithoutPCIAreUnchanged() throws {
        let defaultOne = """
            5253442050545220255357564d4d2002000000002400000028000e0000000000a6000000000000005853445434000000\
            01165357564d4d205357494654564d4d01000000535746540100000060000e000000000078010e000000000000000000\
            464143501401000006635357564d4d205357494654564d4d010000005357465401000000000000000000000000000000\
            000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
            0000000000000000000000003206000031001000000000000000000000000000000000050000000000000000c0010e00\
            000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
            000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
            000000000108000100060000000000000108000101060000000000005357494654564d4d000000004150494346000000\
            065c5357564d4d205357494654564d4d0100000053574654010000000000e0fe010000000008000001000000010c0100\
            0000c0fe000000000406ff0000010000445344540b01000002e15357564d4d205357494654564d4d0100000053574654\
            01000000085c5f53355f1207040a0500000010480d5c5f53425f5b8235434f4d31085f4849440c41d00501085f554944\
            0014095f53544100a40a0f085f43525311100a0d4701f803f803010822100079005b822c5254435f085f4849440c41d0\
            0b0014095f53544100a40a0f085f435253110d0a0a470170007000010279005b82374b42445f085f4849440c41d00303\
            14095f53544100a40a0f085f43525311180a154701600060000101470164006400010122020079005b82315045565408\
            5f4849440d51454d55303030310014095f53544100a40a0f085f435253110d0a0a47010505050501017900
            """
        XCTAssertEqual(try tableArea(ACPIMachine(vcpus: 1)), hexBytes(defaultOne))
        XCTAssertEqual(hexBytes(defaultOne).count, 715)

        let bare = """
            5253442050545220255357564d4d2002000000002400000028000e0000000000a6000000000000005853445434000000\
            01165357564d4d205357494654564d4d01000000535746540100000060000e000000000078010e000000000000000000\
            464143501401000006ed5357564d4d205357494654564d4d010000005357465401000000000000000000000000000000\
            000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
            0000000000000000000000000024000031001000000000000000000000000000000000050000000000000000d0010e00\
            000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
            000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
            0000000001080001c00300000000000001080001c1030000000000005357494654564d4d000000004150494356000000\
            06325357564d4d205357494654564d4d0100000053574654010000000000e0fe01000000000800000100000000080101\
            010000000008020201000000010c03000000c0fe000000000406ff0000010000445344547000000002ac5357564d4d20\
            5357494654564d4d010000005357465401000000085c5f53355f1207040a05000000103d5c5f53425f5b8235434f4d31\
            085f4849440c41d00501085f5549440014095f53544100a40a0f085f43525311100a0d4701f803f80301082210007900
            """
        let bareMachine = ACPIMachine(vcpus: 3, sleepControlPort: 0x3C0, sleepStatusPort: 0x3C1,
                                      pvpanicPort: nil, rtc: nil, i8042: nil)
        XCTAssertEqual(try tableArea(bareMachine), hexBytes(bare))
        XCTAssertEqual(hexBytes(bare).count, 576)

        var large = ACPIMachine(vcpus: 254)
        large.rtc?.irq = 8
        let area = try tableArea(large)
        XCTAssertEqual(area.count, 2742)
        XCTAssertEqual(fnv1a64(area), 0x2d736a0cf2dabff)
        XCTAssertNil(try ACPITables.build(config: large).table("MCFG"))
    }

    /// Every table of `machine` copied to its offset from the RSDP, gaps zero.
    func tableArea(_ machine: ACPIMachine) throws -> [UInt8] {
        let layout = try ACPITables.build(config: machine)
        var area = [UInt8](repeating: 0, count: Int(layout.end - layout.rsdpAddress))
        for t in layout.tables {
            let start = Int(t.address - layout.rsdpAddress)
            area.replaceSubrange(start..<(start + t.bytes.count), with: t.bytes)
        }
        return area
    }
}

/// "0a1B..." as bytes; two hex digits per byte, nothing else.
func hexBytes(_ text: String) -> [UInt8] {
    let digits = Array(text.utf8)
    return stride(from: 0, to: digits.count - 1, by: 2).compactMap {
        UInt8(String(decoding: digits[$0...($0 + 1)], as: UTF8.self), radix: 16)
    }
}

/// FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
func fnv1a64(_ bytes: [UInt8]) -> UInt64 {
    bytes.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
}

/// Index of the first occurrence of `needle` in `haystack`.
func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
    guard needle.count <= haystack.count else { return nil }
    return (0...(haystack.count - needle.count)).first { Array(haystack[$0..<($0 + needle.count)]) == needle }
}
