import XCTest
import GuestMemory
@testable import ACPI

/// Placement below 1 MiB, the pointer chain, and writing into guest memory.
final class LayoutTests: XCTestCase {
    func testDefaultPlacement() throws {
        let layout = try ACPITables.build(config: ACPIMachine(vcpus: 1))
        XCTAssertEqual(layout.rsdpAddress, 0xE0000)
        XCTAssertEqual(layout.tables.map(\.signature), ["RSD PTR ", "XSDT", "FACP", "APIC", "DSDT"])
        // RSDP 36 bytes, then 8-byte aligned: XSDT 52, FADT 276, MADT 70, DSDT 267.
        XCTAssertEqual(layout.tables.map(\.address), [0xE0000, 0xE0028, 0xE0060, 0xE0178, 0xE01C0])
        XCTAssertEqual(layout.tables.map(\.bytes.count), [36, 52, 276, 70, 267])
        XCTAssertEqual(layout.end, 0xE02CB)
        XCTAssertEqual(layout.table("FACP")?.address, 0xE0060)
        XCTAssertNil(layout.table("MCFG"))
    }

    func testPointersAndChecksums() throws {
        for vcpus in [1, 2, 8, 254] {
            let layout = try ACPITables.build(config: ACPIMachine(vcpus: vcpus))
            XCTAssertLessThanOrEqual(layout.end, 0x10_0000)
            guard let rsdp = layout.table("RSD PTR "), let xsdt = layout.table("XSDT"),
                  let fadt = layout.table("FACP"), let madt = layout.table("APIC"),
                  let dsdt = layout.table("DSDT") else { return XCTFail("missing table") }
            assertSumsToZero(rsdp.bytes[0..<20], "RSDP")
            assertSumsToZero(rsdp.bytes[...], "RSDP extended")
            XCTAssertEqual(rsdp.bytes.u64(at: 24), xsdt.address)
            XCTAssertEqual(xsdt.bytes.u64(at: 36), fadt.address)
            XCTAssertEqual(xsdt.bytes.u64(at: 44), madt.address)
            XCTAssertEqual(fadt.bytes.u64(at: 140), dsdt.address)
            for t in layout.tables where t.signature != "RSD PTR " {
                XCTAssertEqual(Int(t.bytes.u32(at: 4)), t.bytes.count, "\(t.signature) length")
                assertSumsToZero(t.bytes[...], t.signature)
                XCTAssertEqual(t.address % 8, 0, "\(t.signature) aligned")
            }
            XCTAssertEqual(madt.bytes.count, 44 + 8 * vcpus + 18)
        }
    }

    func testTablesThatDoNotFitAreRejected() {
        // RSDP 0xFFF00, XSDT 0xFFF28, FADT 0xFFF60..0x100074, MADT(8) 0x100078..0x1000F6,
        // DSDT 0x1000F8 + 267 = 0x100203.
        XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 8), base: 0xF_FF00, limit: 0x10_0000)) {
            XCTAssertEqual($0 as? ACPIError, .tablesDoNotFit(end: 0x10_0203, limit: 0x10_0000))
            XCTAssertEqual(($0 as? ACPIError)?.description,
                           "ACPI tables end at 0x100203, past the limit 0x100000")
        }
        // Exactly at the limit is fine.
        XCTAssertNoThrow(try ACPITables.build(config: ACPIMachine(vcpus: 1), base: 0xE0000, limit: 0xE02CB))
        XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 1), base: 0xE0000, limit: 0xE02CA))
        XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 1), base: UInt64.max - 15, limit: UInt64.max))
    }

    func testInvalidConfigurations() {
        XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 1), base: 0xE0008, limit: 0x10_0000)) {
            XCTAssertEqual($0 as? ACPIError, .misalignedRSDP(0xE0008))
        }
        XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 0))) {
            XCTAssertEqual($0 as? ACPIError, .invalidVCPUCount(0))
        }
        XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 255)))
        XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 1, sleepControlPort: 0)))
        XCTAssertThrowsError(try ACPITables.build(config: ACPIMachine(vcpus: 1, sleepStatusPort: 0)))
    }

    /// Finds the RSDP the way Linux does (16-byte steps over 0xE0000-0xFFFFF,
    /// signature and checksum) and follows the pointers in guest memory.
    func testWriteIntoGuestMemoryAndFindLikeLinux() throws {
        let memory = ArrayGuestMemory(size: 0x20_0000)
        let layout = try ACPITables.build(config: ACPIMachine(vcpus: 2))
        try layout.write(into: memory)

        var found: UInt64?
        for address in stride(from: UInt64(0xE0000), to: 0x10_0000, by: 16) {
            let candidate = try memory.readBytes(at: GuestAddress(address), count: 20)
            if Array(candidate[0..<8]) == .ascii("RSD PTR ") && candidate.reduce(UInt8(0), &+) == 0 {
                found = address
                break
            }
        }
        XCTAssertEqual(found, 0xE0000)
        let xsdtAddress = try memory.readInteger(UInt64.self, at: GuestAddress(0xE0000 + 24))
        let xsdt = try memory.readBytes(at: GuestAddress(xsdtAddress), count: 52)
        XCTAssertEqual(Array(xsdt[0..<4]), .ascii("XSDT"))
        let fadt = try memory.readBytes(at: GuestAddress(xsdt.u64(at: 36)), count: 276)
        XCTAssertEqual(Array(fadt[0..<4]), .ascii("FACP"))
        let madt = try memory.readBytes(at: GuestAddress(xsdt.u64(at: 44)), count: 4)
        XCTAssertEqual(madt, .ascii("APIC"))
        let dsdtHeader = try memory.readBytes(at: GuestAddress(fadt.u64(at: 140)), count: 8)
        XCTAssertEqual(Array(dsdtHeader[0..<4]), .ascii("DSDT"))
        for t in layout.tables {
            XCTAssertEqual(try memory.readBytes(at: GuestAddress(t.address), count: t.bytes.count), t.bytes)
        }
    }

    func testWriteChecksEveryRangeBeforeWriting() throws {
        // RAM ends inside the DSDT: nothing may be written, not even the RSDP.
        let memory = try ArrayGuestMemory(regions: [(base: 0, size: 0xE0200)])
        let layout = try ACPITables.build(config: ACPIMachine(vcpus: 1))
        XCTAssertThrowsError(try layout.write(into: memory)) {
            XCTAssertEqual($0 as? ACPIError, .tableOutsideGuestMemory(signature: "DSDT", address: 0xE01C0, length: 267))
        }
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xE0000), count: 0x200), [UInt8](repeating: 0, count: 0x200))
    }
}
