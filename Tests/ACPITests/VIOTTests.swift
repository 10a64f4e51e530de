import XCTest
@testable import ACPI

/// The example virtio-iommu: the function 00:02.0 (RID 0x10) translating
/// 00:01.0, 00:03.0 and 00:03.1 (RIDs 0x08, 0x18, 0x19).
func exampleIOMMU() throws -> ACPIMachine.VirtioIOMMU {
    try ACPIMachine.VirtioIOMMU(bdf: 0x10, endpointRIDs: [0x19, 0x08, 0x18])
}

/// The VIOT: bytes, endpoint IDs as Linux computes them, the RID-list
/// convenience, every validation error, and its place in the layout.
final class VIOTTests: XCTestCase {
    typealias IOMMU = ACPIMachine.VirtioIOMMU
    typealias Range = ACPIMachine.VirtioIOMMU.EndpointRange

    // MARK: Bytes

    /// `struct acpi_viot_pci_range` written out field by field.
    func pciRange(endpointStart: UInt32, segment: UInt16, bdfStart: UInt16, bdfEnd: UInt16, output: UInt16) -> [UInt8] {
        cat([0x01, 0x00], .le(UInt16(24)), .le(endpointStart), .le(segment), .le(segment),
            .le(bdfStart), .le(bdfEnd), .le(output), [UInt8](repeating: 0, count: 6))
    }

    func testVIOTExactBytes() throws {
        let iommu = try exampleIOMMU()
        XCTAssertEqual(iommu.endpointRanges, [Range(bdfStart: 0x08, bdfEnd: 0x08, endpointStart: 0x08),
                                              Range(bdfStart: 0x18, bdfEnd: 0x19, endpointStart: 0x18)])
        let expected = fixChecksum(cat(
            sdtHeader("VIOT", length: 48 + 16 + 2 * 24, revision: 0),
            .le(UInt16(3)), .le(UInt16(48)), [UInt8](repeating: 0, count: 8),   // node count, node offset
            [0x03, 0x00], .le(UInt16(16)), .le(UInt16(0)), .le(UInt16(0x10)),    // virtio-iommu 0000:00:02.0
            [UInt8](repeating: 0, count: 8),
            pciRange(endpointStart: 0x08, segment: 0, bdfStart: 0x08, bdfEnd: 0x08, output: 48),
            pciRange(endpointStart: 0x18, segment: 0, bdfStart: 0x18, bdfEnd: 0x19, output: 48)
        ), at: 9)
        let viot = try VIOT.build(iommu: iommu)
        XCTAssertEqual(viot, expected)
        XCTAssertEqual(viot.count, 112)
        XCTAssertEqual(VIOT.length(ranges: 2), 112)
        XCTAssertEqual(Array(viot[0..<4]), .ascii("VIOT"))
        XCTAssertEqual(viot.u32(at: 4), 112)
        XCTAssertEqual(viot[8], 0, "revision")
        XCTAssertEqual(viot.u16(at: 36), 3, "node count: the virtio-iommu and two ranges")
        XCTAssertEqual(viot.u16(at: 38), 48, "node offset")
        XCTAssertEqual(Array(viot[40..<48]), [UInt8](repeating: 0, count: 8))
        // The virtio-iommu node at 48.
        XCTAssertEqual(viot[48], 3)
        XCTAssertEqual(viot.u16(at: 50), 16)
        XCTAssertEqual(viot.u16(at: 54), 0x10)
        // The ranges at 64 and 88, both pointing at the node at 48.
        for (offset, start, end) in [(64, UInt16(0x08), UInt16(0x08)), (88, 0x18, 0x19)] {
            XCTAssertEqual(viot[offset], 1)
            XCTAssertEqual(viot.u16(at: offset + 2), 24)
            XCTAssertEqual(viot.u32(at: offset + 4), UInt32(start))
            XCTAssertEqual(viot.u16(at: offset + 12), start)
            XCTAssertEqual(viot.u16(at: offset + 14), end)
            XCTAssertEqual(viot.u16(at: offset + 16), 48)
        }
        assertSumsToZero(viot[...], "VIOT")
    }

    /// Every field at its offset, with values that cannot be mistaken for
    /// one another: segment 3, endpoint IDs not equal to RIDs.
    func testVIOTFieldOffsets() throws {
        let iommu = IOMMU(segment: 3, bdf: 0x0108, endpointRanges: [
            Range(segment: 3, bdfStart: 0x0200, bdfEnd: 0x02FF, endpointStart: 0x1234_5678),
            Range(segment: 0x00A5, bdfStart: 0x0200, bdfEnd: 0x0200, endpointStart: 0x10),
        ])
        let viot = try VIOT.build(iommu: iommu)
        XCTAssertEqual(viot, fixChecksum(cat(
            sdtHeader("VIOT", length: 112, revision: 0),
            [0x03, 0x00, 0x30, 0x00], [UInt8](repeating: 0, count: 8),
            [0x03, 0x00, 0x10, 0x00, 0x03, 0x00, 0x08, 0x01], [UInt8](repeating: 0, count: 8),
            [0x01, 0x00, 0x18, 0x00, 0x78, 0x56, 0x34, 0x12, 0x03, 0x00, 0x03, 0x00,
             0x00, 0x02, 0xFF, 0x02, 0x30, 0x00], [UInt8](repeating: 0, count: 6),
            [0x01, 0x00, 0x18, 0x00, 0x10, 0x00, 0x00, 0x00, 0xA5, 0x00, 0xA5, 0x00,
             0x00, 0x02, 0x00, 0x02, 0x30, 0x00], [UInt8](repeating: 0, count: 6)
        ), at: 9))
    }

    // MARK: Endpoint IDs

    /// Linux's `viot_pci_dev_iommu_init`: endpoint_start + (RID - bdf_start)
    /// within the segment, nothing outside the ranges.
    func testEndpointIDsAsLinuxComputesThem() throws {
        let range = Range(segment: 1, bdfStart: 0x0100, bdfEnd: 0x01FF, endpointStart: 0x1000)
        XCTAssertEqual(range.endpointID(segment: 1, rid: 0x0100), 0x1000)
        XCTAssertEqual(range.endpointID(segment: 1, rid: 0x0105), 0x1005)
        XCTAssertEqual(range.endpointID(segment: 1, rid: 0x01FF), 0x10FF)
        XCTAssertNil(range.endpointID(segment: 1, rid: 0x00FF))
        XCTAssertNil(range.endpointID(segment: 1, rid: 0x0200))
        XCTAssertNil(range.endpointID(segment: 0, rid: 0x0105))
        XCTAssertEqual(Range(bdfStart: 0x20, bdfEnd: 0x27).endpointStart, 0x20, "default: endpoint ID == RID")

        let iommu = try exampleIOMMU()
        for rid: UInt16 in [0x08, 0x18, 0x19] {
            XCTAssertEqual(iommu.endpointID(rid: rid), UInt32(rid))
        }
        for rid: UInt16 in [0x00, 0x09, 0x10, 0x17, 0x1A, 0xFFFF] {
            XCTAssertNil(iommu.endpointID(rid: rid), "RID \(rid) is not translated")
        }
        XCTAssertNil(iommu.endpointID(segment: 1, rid: 0x08))
    }

    func testRequesterIDs() throws {
        XCTAssertEqual(try IOMMU.rid(bus: 0, device: 0, function: 0), 0x0000)
        XCTAssertEqual(try IOMMU.rid(bus: 0, device: 3, function: 1), 0x0019)
        XCTAssertEqual(try IOMMU.rid(bus: 0x12, device: 31, function: 7), 0x12FF)
        XCTAssertEqual(try IOMMU.rid(bus: 0xFF, device: 0x1F, function: 7), 0xFFFF)
        for (device, function, text) in [(UInt8(32), UInt8(0), "00:20.0"), (0, 8, "00:00.8")] {
            XCTAssertThrowsError(try IOMMU.rid(bus: 0, device: device, function: function)) {
                XCTAssertEqual($0 as? ACPIError, .invalidMachine("PCI function \(text): devices are 0-31 (0x00-0x1f), functions 0-7"))
            }
        }
    }

    // MARK: RID list -> ranges

    func testRIDListBecomesRanges() throws {
        func ranges(_ rids: [UInt16], segment: UInt16 = 0) throws -> [[UInt32]] {
            try IOMMU(segment: segment, bdf: 0x10, endpointRIDs: rids).endpointRanges.map {
                XCTAssertEqual($0.segment, segment)
                return [UInt32($0.bdfStart), UInt32($0.bdfEnd), $0.endpointStart]
            }
        }
        XCTAssertEqual(try ranges([0x08]), [[0x08, 0x08, 0x08]])
        // Unsorted in, sorted and merged out; a gap starts a new range.
        XCTAssertEqual(try ranges([0x19, 0x08, 0x0A, 0x18, 0x09]), [[0x08, 0x0A, 0x08], [0x18, 0x19, 0x18]])
        // Runs across device and bus boundaries are still consecutive RIDs.
        XCTAssertEqual(try ranges([0x00FE, 0x00FF, 0x0100, 0x0101]), [[0x00FE, 0x0101, 0x00FE]])
        // The ends of the RID space, without overflow.
        XCTAssertEqual(try ranges([0xFFFF, 0x0000, 0xFFFE, 0x0001]), [[0x0000, 0x0001, 0x0000], [0xFFFE, 0xFFFF, 0xFFFE]])
        XCTAssertEqual(try ranges([0x20, 0x22, 0x24], segment: 7), [[0x20, 0x20, 0x20], [0x22, 0x22, 0x22], [0x24, 0x24, 0x24]])
        XCTAssertEqual(try ranges([]), [])

        // Every function of bus 0 but the virtio-iommu's: two ranges around it.
        let all = try IOMMU(bdf: 0x10, endpointRIDs: (0...0xFF).filter { $0 != 0x10 })
        XCTAssertEqual(all.endpointRanges, [Range(bdfStart: 0x00, bdfEnd: 0x0F), Range(bdfStart: 0x11, bdfEnd: 0xFF)])
        for rid in UInt16(0)...0xFF where rid != 0x10 {
            XCTAssertEqual(all.endpointID(rid: rid), UInt32(rid))
        }
        XCTAssertNoThrow(try VIOT.build(iommu: all))

        XCTAssertThrowsError(try IOMMU(bdf: 0x10, endpointRIDs: [0x08, 0x19, 0x18, 0x19])) {
            XCTAssertEqual($0 as? ACPIError, .invalidMachine("virtio-iommu endpoint 0000:00:03.1 is listed twice"))
        }
    }

    // MARK: Validation

    func testInvalidDescriptions() throws {
        func rejects(_ iommu: IOMMU, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try VIOT.build(iommu: iommu), file: file, line: line) {
                XCTAssertEqual(($0 as? ACPIError)?.description, "ACPI machine description: " + message, file: file, line: line)
            }
            XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 1, pci: swiftVMMBridge(), viommu: iommu)),
                                 file: file, line: line) {
                XCTAssertEqual(($0 as? ACPIError)?.description, "ACPI machine description: " + message, file: file, line: line)
            }
        }
        rejects(IOMMU(bdf: 0x10, endpointRanges: []),
                "virtio-iommu 0000:00:02.0 has no endpoint ranges: the VIOT needs at least one")
        rejects(try IOMMU(bdf: 0x10, endpointRIDs: []),
                "virtio-iommu 0000:00:02.0 has no endpoint ranges: the VIOT needs at least one")
        rejects(IOMMU(bdf: 0x10, endpointRanges: [Range(bdfStart: 0x18, bdfEnd: 0x10, endpointStart: 0)]),
                "virtio-iommu endpoint range 0000:00:03.0-0000:00:02.0 is inverted: its BDF start is after its BDF end")
        rejects(IOMMU(bdf: 0x10, endpointRanges: [Range(bdfStart: 0x08, bdfEnd: 0x09, endpointStart: 0xFFFF_FFFF)]),
                "virtio-iommu endpoint range 0000:00:01.0-0000:00:01.1 starting at endpoint ID 0xffffffff runs past endpoint ID 0xffffffff")
        rejects(IOMMU(bdf: 0x10, endpointRanges: [Range(bdfStart: 0x08, bdfEnd: 0x18)]),
                "virtio-iommu 0000:00:02.0 lies inside its own endpoint range 0000:00:01.0-0000:00:03.0: it would translate itself")
        rejects(try IOMMU(bdf: 0x10, endpointRIDs: [0x08, 0x10]),
                "virtio-iommu 0000:00:02.0 lies inside its own endpoint range 0000:00:02.0-0000:00:02.0: it would translate itself")
        rejects(IOMMU(bdf: 0x10, endpointRanges: [Range(bdfStart: 0x18, bdfEnd: 0x18),
                                                  Range(bdfStart: 0x08, bdfEnd: 0x0F),
                                                  Range(bdfStart: 0x0F, bdfEnd: 0x0F, endpointStart: 0x100)]),
                "virtio-iommu endpoint ranges 0000:00:01.0-0000:00:01.7 and 0000:00:01.7-0000:00:01.7 overlap")
        rejects(IOMMU(bdf: 0x10, endpointRanges: [Range(bdfStart: 0x08, bdfEnd: 0x09),
                                                  Range(bdfStart: 0x18, bdfEnd: 0x18, endpointStart: 0x09)]),
                "virtio-iommu endpoint ranges 0000:00:01.0-0000:00:01.1 and 0000:00:03.0-0000:00:03.0 give overlapping endpoint IDs 0x8-0x9 and 0x9-0x9")
        // More ranges than node_count (16 bits, with the virtio-iommu's node) can count.
        let tooMany = (UInt16(0)...0xFFFF).filter { $0 != 0x10 }.map { Range(bdfStart: $0, bdfEnd: $0) }
        XCTAssertEqual(tooMany.count, 65535)
        rejects(IOMMU(bdf: 0x10, endpointRanges: tooMany),
                "virtio-iommu 0000:00:02.0 has 65535 endpoint ranges, at most 65534 fit the VIOT's node count")

        // Fine: ranges touching each other and the virtio-iommu, the same
        // BDFs on another segment with other endpoint IDs, the last endpoint ID.
        XCTAssertNoThrow(try VIOT.build(iommu: IOMMU(bdf: 0x10, endpointRanges: [
            Range(bdfStart: 0x11, bdfEnd: 0x17), Range(bdfStart: 0x00, bdfEnd: 0x0F),
            Range(segment: 1, bdfStart: 0x00, bdfEnd: 0x0F, endpointStart: 0x1_0000),
            Range(segment: 1, bdfStart: 0x10, bdfEnd: 0x10, endpointStart: 0xFFFF_FFFF),
        ])))
    }

    /// What the machine adds: a PCI host bridge to find the virtio-iommu
    /// on, and segment 0, the bridge's.
    func testInvalidMachines() throws {
        func rejects(_ machine: ACPIMachine, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try ACPITables.build(config: machine), file: file, line: line) {
                XCTAssertEqual(($0 as? ACPIError)?.description, "ACPI machine description: " + message, file: file, line: line)
            }
        }
        rejects(ACPIMachine(vcpus: 1, viommu: try exampleIOMMU()),
                "a virtio-iommu (VIOT) needs a PCI host bridge (ACPIMachine.pci): its node names a PCI function")
        var iommu = try exampleIOMMU()
        iommu.segment = 1
        rejects(ACPIMachine(vcpus: 1, pci: swiftVMMBridge(), viommu: iommu),
                "virtio-iommu 0001:00:02.0 is not on the PCI host bridge's segment 0, buses 0-0")
        iommu = try exampleIOMMU()
        iommu.bdf = 0x0110
        rejects(ACPIMachine(vcpus: 1, pci: swiftVMMBridge(), viommu: iommu),
                "virtio-iommu 0000:01:02.0 is not on the PCI host bridge's segment 0, buses 0-0")
        iommu = try exampleIOMMU()
        iommu.endpointRanges.append(Range(segment: 2, bdfStart: 0x08, bdfEnd: 0x08, endpointStart: 0x100))
        rejects(ACPIMachine(vcpus: 1, pci: swiftVMMBridge(), viommu: iommu),
                "virtio-iommu endpoint range 0002:00:01.0-0002:00:01.0 is not on PCI segment 0, the machine's only segment")

        // A virtio-iommu on bus 1 is fine when the bridge has bus 1.
        var bridge = swiftVMMBridge()
        bridge.buses = 0...1
        iommu = try IOMMU(bdf: 0x0110, endpointRIDs: [0x0008, 0x0118])
        XCTAssertNoThrow(try ACPITables.build(config: ACPIMachine(vcpus: 1, pci: bridge, viommu: iommu)))
    }

    // MARK: Layout

    func testLayoutWithVIOT() throws {
        let iommu = try exampleIOMMU()
        for vcpus in [1, 254] {
            let layout = try ACPITables.build(config: ACPIMachine(vcpus: vcpus, pci: swiftVMMBridge(), viommu: iommu))
            XCTAssertEqual(layout.tables.map(\.signature), ["RSD PTR ", "XSDT", "FACP", "APIC", "DSDT", "MCFG", "VIOT"])
            guard let xsdt = layout.table("XSDT"), let viot = layout.table("VIOT"), let mcfg = layout.table("MCFG"),
                  let rsdp = layout.table("RSD PTR ") else { return XCTFail("missing table") }
            XCTAssertEqual(rsdp.bytes.u64(at: 24), xsdt.address)
            XCTAssertEqual(xsdt.bytes.count, 36 + 4 * 8)
            XCTAssertEqual(xsdt.bytes.u32(at: 4), 36 + 4 * 8)
            XCTAssertEqual((0..<4).map { xsdt.bytes.u64(at: 36 + 8 * $0) },
                           ["FACP", "APIC", "MCFG", "VIOT"].map { layout.table($0)?.address ?? 0 })
            XCTAssertEqual(layout.table("FACP")?.bytes.u64(at: 140), layout.table("DSDT")?.address)
            XCTAssertEqual(viot.bytes, try VIOT.build(iommu: iommu))
            XCTAssertEqual(viot.address, (mcfg.end + 7) / 8 * 8, "VIOT follows the MCFG, 8-byte aligned")
            XCTAssertEqual(layout.end, viot.end)
            XCTAssertLessThanOrEqual(layout.end, 0x10_0000)
            var previousEnd: UInt64 = 0
            for t in layout.tables {
                XCTAssertGreaterThanOrEqual(t.address, previousEnd, "\(t.signature) overlaps")
                previousEnd = t.end
                guard t.signature != "RSD PTR " else { continue }
                XCTAssertEqual(Int(t.bytes.u32(at: 4)), t.bytes.count, "\(t.signature) length")
                assertSumsToZero(t.bytes[...], t.signature)
                XCTAssertEqual(t.address % 8, 0, "\(t.signature) aligned")
            }

            // The same machine without the virtio-iommu: no VIOT, three XSDT entries.
            let without = try ACPITables.build(config: ACPIMachine(vcpus: vcpus, pci: swiftVMMBridge()))
            XCTAssertNil(without.table("VIOT"))
            XCTAssertEqual(without.table("XSDT")?.bytes.count, 36 + 3 * 8)
            // The tables that do not point anywhere are the same bytes.
            for sig in ["APIC", "DSDT", "MCFG"] {
                XCTAssertEqual(layout.table(sig)?.bytes, without.table(sig)?.bytes, sig)
            }
        }
        // 1 vCPU: the XSDT's fourth entry moves everything after it 8 bytes
        // (PCIRootTests.testLayoutWithPCI has the layout without it), and the
        // 112-byte VIOT comes last.
        let layout = try ACPITables.build(config: ACPIMachine(vcpus: 1, pci: swiftVMMBridge(), viommu: iommu))
        XCTAssertEqual(layout.tables.map(\.bytes.count), [36, 68, 276, 70, 2169, 60, 112])
        XCTAssertEqual(layout.tables.map(\.address), [0xE0000, 0xE0028, 0xE0070, 0xE0188, 0xE01D0, 0xE0A50, 0xE0A90])
        XCTAssertEqual(layout.end, 0xE0B00)
    }

    /// With `viommu` nil a PCI machine's table area is what the code built
    /// before the VIOT existed (commit 63f7822, length and FNV-1a 64 hash;
    /// PCIRootTests.testMachinesWithoutPCIAreUnchanged covers the machines
    /// without PCI).
    func testPCIMachinesWithoutVIOTAreUnchanged() throws {
        for (vcpus, count, hash) in [(1, 2692, UInt64(0xfa2c_c527_bb51_bc2b)), (2, 2700, 0x651a_951f_73d1_f88f)] {
            let layout = try ACPITables.build(config: ACPIMachine(vcpus: vcpus, pci: swiftVMMBridge()))
            var area = [UInt8](repeating: 0, count: Int(layout.end - layout.rsdpAddress))
            for t in layout.tables {
                let start = Int(t.address - layout.rsdpAddress)
                area.replaceSubrange(start..<(start + t.bytes.count), with: t.bytes)
            }
            XCTAssertEqual(area.count, count, "\(vcpus) vCPUs")
            XCTAssertEqual(fnv1a64(area), hash, "\(vcpus) vCPUs")
        }
    }
}
