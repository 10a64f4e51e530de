import Foundation
import XCTest
@testable import ACPI

final class PowerButtonTests: XCTestCase {
    func testExtendedInterruptBytes() throws {
        // Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {9}: 89 06 00 03 01 09 00 00 00
        XCTAssertEqual(try AMLExtendedInterrupt([9]).encodedDescriptor(),
                       [0x89, 0x06, 0x00, 0x03, 0x01, 0x09, 0x00, 0x00, 0x00])
        // Level, ActiveLow: flags 0x05.
        XCTAssertEqual(try AMLExtendedInterrupt([16], edgeTriggered: false, activeLow: true).encodedDescriptor(),
                       [0x89, 0x06, 0x00, 0x05, 0x01, 0x10, 0x00, 0x00, 0x00])
        XCTAssertThrowsError(try AMLExtendedInterrupt([]).encodedDescriptor())
    }

    func testNotifyBytes() throws {
        // Notify (\_SB.PWRB, 0x80): 86 5C 2E "_SB_" "PWRB" 0A 80
        var b: [UInt8] = []
        try AMLNotify("\\_SB.PWRB", 0x80).encode(into: &b)
        XCTAssertEqual(b, [0x86, 0x5C, 0x2E] + Array("_SB_PWRB".utf8) + [0x0A, 0x80])
    }

    func testDSDTHasGEDAndPowerButtonOnlyWhenAsked() throws {
        let without = try DSDT.aml(for: ACPIMachine(vcpus: 1))
        let with = try DSDT.aml(for: ACPIMachine(vcpus: 1, powerButtonGSI: 9))
        XCTAssertFalse(contains(without, Array("ACPI0013".utf8)))
        XCTAssertTrue(contains(with, Array("ACPI0013".utf8)))
        XCTAssertTrue(contains(with, [0x89, 0x06, 0x00, 0x03, 0x01, 0x09, 0x00, 0x00, 0x00]))
        XCTAssertTrue(contains(with, Array("_EVT".utf8)))
        // EisaId("PNP0C0C") = 0x0C0CD041, little endian after DWordPrefix.
        XCTAssertTrue(contains(with, [0x0C, 0x41, 0xD0, 0x0C, 0x0C]))
    }

    func testIASLReadsThePowerButton() throws {
        let iasl = "/usr/bin/iasl"
        guard FileManager.default.isExecutableFile(atPath: iasl) else {
            throw XCTSkip("iasl not installed: apt-get install acpica-tools")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("acpi-pwrb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bytes = try DSDT.build(machine: ACPIMachine(vcpus: 2, powerButtonGSI: 9))
        try Data(bytes).write(to: dir.appendingPathComponent("dsdt.dat"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: iasl)
        p.arguments = ["-d", "dsdt.dat"]
        p.currentDirectoryURL = dir
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, out)
        let dsl = try String(contentsOf: dir.appendingPathComponent("dsdt.dsl"), encoding: .utf8)
        for needle in ["Device (GED)", "Name (_HID, \"ACPI0013\" /* Generic Event Device */)", "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
                       "Method (_EVT, 1", "Notify (\\_SB.PWRB, 0x80)", "EisaId (\"PNP0C0C\")"] {
            XCTAssertTrue(dsl.contains(needle), "missing \(needle) in:\n\(dsl)")
        }
    }

    private func contains(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= hay.count else { return false }
        for i in 0...(hay.count - needle.count) where Array(hay[i..<(i + needle.count)]) == needle { return true }
        return false
    }
}

extension AMLResourceDescriptor {
    func encodedDescriptor() throws -> [UInt8] {
        var b: [UInt8] = []
        try encode(into: &b)
        return b
    }
}
