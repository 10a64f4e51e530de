import Foundation
import XCTest
@testable import ACPI

/// Cross-checks with ACPICA's own disassembler when it is installed
/// (Debian package acpica-tools; scripts/deps installs it).
final class IASLTests: XCTestCase {
    static let iasl = "/usr/bin/iasl"

    func runIASL(_ arguments: [String], in directory: URL) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.iasl)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testIASLDisassemblesEveryTable() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.iasl) else {
            throw XCTSkip("iasl not installed: apt-get install acpica-tools")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("acpitests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        for vcpus in [1, 8] {
            let layout = try ACPITables.build(config: ACPIMachine(vcpus: vcpus))
            for t in layout.tables {
                let name = t.signature == "RSD PTR " ? "rsdp" : t.signature.lowercased()
                let file = dir.appendingPathComponent("\(name)\(vcpus).dat")
                try Data(t.bytes).write(to: file)
                let (status, output) = try runIASL(["-d", file.lastPathComponent], in: dir)
                XCTAssertEqual(status, 0, "iasl -d \(name), \(vcpus) vCPUs:\n\(output)")
                XCTAssertFalse(output.contains("Error"), "iasl -d \(name), \(vcpus) vCPUs:\n\(output)")
                XCTAssertFalse(output.contains("Warning"), "iasl -d \(name), \(vcpus) vCPUs:\n\(output)")
            }
        }

        let dsl = try String(contentsOf: dir.appendingPathComponent("dsdt1.dsl"), encoding: .utf8)
        for needle in ["Name (_S5, Package (0x04)", "Device (COM1)", "EisaId (\"PNP0501\")",
                       "EisaId (\"PNP0B00\")", "EisaId (\"PNP0303\")", "Name (_HID, \"QEMU0001\")",
                       "IRQNoFlags ()", "0x03F8"] {
            XCTAssertTrue(dsl.contains(needle), "DSDT disassembly lacks \(needle):\n\(dsl)")
        }
        let facp = try String(contentsOf: dir.appendingPathComponent("facp1.dsl"), encoding: .utf8)
        XCTAssertTrue(facp.contains("Hardware Reduced (V5) : 1"), facp)
    }
}
