import XCTest
@testable import Boot

/// MP spec 1.4 tables, byte for byte. Expected bytes are written out here from
/// the spec's tables, not produced by the code under test.
final class MPTableTests: XCTestCase {
    static let floatingPointer: [UInt8] =
        [0x5F, 0x4D, 0x50, 0x5F]                 // "_MP_"
        + [0x10, 0xFC, 0x09, 0x00]               // config table at 0x9fc10
        + [0x01, 0x04, 0x8B]                     // length 1 (16 bytes), spec 1.4, checksum
        + [0x00, 0x00, 0x00, 0x00, 0x00]         // features: table present, virtual wire

    static func header(length: UInt16, checksum: UInt8, entries: UInt16) -> [UInt8] {
        [0x50, 0x43, 0x4D, 0x50]                 // "PCMP"
            + .le(length) + [0x04, checksum]
            + Array("SWIFTVMM".utf8) + Array("SwiftVMM    ".utf8)
            + [0, 0, 0, 0] + [0, 0]              // no OEM table
            + .le(entries)
            + [0x00, 0x00, 0xE0, 0xFE]           // local APIC 0xfee00000
            + [0, 0, 0, 0]                       // no extended table
    }

    static func processor(_ id: UInt8, boot: Bool) -> [UInt8] {
        [0x00, id, 0x14, boot ? 0x03 : 0x01]     // type, APIC id, version 0x14, EN (| BP)
            + [0x00, 0x06, 0x00, 0x00]           // signature: family 6
            + [0x01, 0x02, 0x00, 0x00]           // features: FPU | APIC
            + [UInt8](repeating: 0, count: 8)
    }

    static func rest(ioapicID: UInt8) -> [UInt8] {
        var out: [UInt8] = [0x01, 0x00] + Array("ISA   ".utf8)
        out += [0x02, ioapicID, 0x11, 0x01, 0x00, 0x00, 0xC0, 0xFE]
        for pin in UInt8(0)..<24 {
            out += [0x03, 0x00, 0x00, 0x00, 0x00, pin, ioapicID, pin]
        }
        out += [0x04, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]   // ExtINT -> BSP LINT0
        out += [0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0xFF, 0x01]   // NMI -> all LINT1
        return out
    }

    func assertChecksumsIndependently(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(bytes[0..<16].reduce(UInt8(0), &+), 0, "floating pointer checksum", file: file, line: line)
        let length = Int(bytes[16 + 4]) | Int(bytes[16 + 5]) << 8
        XCTAssertEqual(16 + length, bytes.count, file: file, line: line)
        XCTAssertEqual(bytes[16..<(16 + length)].reduce(UInt8(0), &+), 0, "config table checksum",
                       file: file, line: line)
    }

    func testOneCPUExactBytes() throws {
        let bytes = try MPTable.build(vcpus: 1, at: 0x9_FC00)
        let expected = Self.floatingPointer
            + Self.header(length: 288, checksum: 0xF1, entries: 29)
            + Self.processor(0, boot: true)
            + Self.rest(ioapicID: 1)
        XCTAssertEqual(bytes.count, 304)
        XCTAssertEqual(bytes, expected)
        assertChecksumsIndependently(bytes)
        XCTAssertEqual(MPTable.size(vcpus: 1), 304)
    }

    func testTwoCPUsExactBytes() throws {
        let bytes = try MPTable.build(vcpus: 2, at: 0x9_FC00)
        let expected = Self.floatingPointer
            + Self.header(length: 308, checksum: 0xA4, entries: 30)
            + Self.processor(0, boot: true) + Self.processor(1, boot: false)
            + Self.rest(ioapicID: 2)
        XCTAssertEqual(bytes, expected)
        assertChecksumsIndependently(bytes)
    }

    func testMaximumCPUs() throws {
        let bytes = try MPTable.build(vcpus: 254, at: 0x9_FC00)
        XCTAssertEqual(bytes.count, 16 + 44 + 254 * 20 + 28 * 8)
        assertChecksumsIndependently(bytes)
        // The last processor is APIC 253, and the IOAPIC takes 254, never the broadcast 255.
        XCTAssertEqual(bytes[16 + 44 + 253 * 20 + 1], 253)
        XCTAssertEqual(bytes[16 + 44 + 254 * 20 + 8 + 1], 254)
        XCTAssertEqual(MPTable.ioapicID(vcpus: 254), 254)
    }

    func testRejectsBadCPUCounts() {
        assertThrows(.invalidVCPUCount(0)) { try MPTable.build(vcpus: 0, at: 0x9_FC00) }
        assertThrows(.invalidVCPUCount(255)) { try MPTable.build(vcpus: 255, at: 0x9_FC00) }
    }

    func testMustEndBelowOneMiB() {
        let error = BootError.mpTableDoesNotFit(vcpus: 254, bytes: 5364)
        assertThrows(error) { try MPTable.build(vcpus: 254, at: 0xFF000) }
        assertThrows(.mpTableDoesNotFit(vcpus: 1, bytes: 304)) { try MPTable.build(vcpus: 1, at: UInt64.max - 8) }
        XCTAssertEqual(error.description, "MP table for 254 vCPUs (5364 bytes) does not fit in [0x9fc00, 0x100000)")
        // Exactly up to 1 MiB fits.
        XCTAssertNoThrow(try MPTable.build(vcpus: 1, at: 0x10_0000 - 304))
    }
}
