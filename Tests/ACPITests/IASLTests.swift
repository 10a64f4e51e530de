import Foundation
import XCTest
@testable import ACPI

/// Cross-checks with ACPICA's own disassembler and compiler when they are
/// installed (Debian package acpica-tools; scripts/deps installs it). Set
/// KEEP_IASL=1 to keep the temporary directories with the .dat/.dsl files,
/// and IASL=/path/to/iasl to use another iasl than /usr/bin/iasl (one new
/// enough to decode the VIOT, VIOTIASLTests.swift; the other tests expect
/// the text of Debian bookworm's iasl 20200925).
final class IASLTests: XCTestCase {
    static let iasl = ProcessInfo.processInfo.environment["IASL"] ?? "/usr/bin/iasl"

    /// Runs `tool` in `directory` and returns its status and its output
    /// (stdout and stderr together).
    func run(_ tool: String, _ arguments: [String], in directory: URL) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
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

    func runIASL(_ arguments: [String], in directory: URL) throws -> (status: Int32, output: String) {
        try run(Self.iasl, arguments, in: directory)
    }

    func makeTempDir() throws -> URL {
        guard FileManager.default.isExecutableFile(atPath: Self.iasl) else {
            throw XCTSkip("\(Self.iasl) not installed: apt-get install acpica-tools")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("acpitests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    func testIASLDisassemblesEveryTable() throws {
        let dir = try makeTempDir()
        defer { if ProcessInfo.processInfo.environment["KEEP_IASL"] == nil { try? FileManager.default.removeItem(at: dir) } }

        for vcpus in [1, 8] {
            let layout = try ACPITables.build(config: ACPIMachine(vcpus: vcpus))
            // iasl 20200925 (Debian bookworm's acpica-tools) rejects a bare RSDP
            // ("Binary file does not contain a valid ACPI table": it has no SDT
            // header); TableTests.testRSDPExactBytes checks it byte for byte.
            for t in layout.tables where t.signature != "RSD PTR " {
                let name = t.signature.lowercased()
                let file = dir.appendingPathComponent("\(name)\(vcpus).dat")
                try Data(t.bytes).write(to: file)
                let (status, output) = try runIASL(["-d", file.lastPathComponent], in: dir)
                XCTAssertEqual(status, 0, "iasl -d \(name), \(vcpus) vCPUs:\n\(output)")
                XCTAssertFalse(output.contains("Error"), "iasl -d \(name), \(vcpus) vCPUs:\n\(output)")
                XCTAssertFalse(output.contains("Warning"), "iasl -d \(name), \(vcpus) vCPUs:\n\(output)")
            }
        }

        let dsl = try String(contentsOf: dir.appendingPathComponent("dsdt1.dsl"), encoding: .utf8)
        for needle in ["Name (\\_S5, Package (0x04)", "Device (COM1)", "EisaId (\"PNP0501\")",
                       "EisaId (\"PNP0B00\")", "EisaId (\"PNP0303\")", "Name (_HID, \"QEMU0001\")",
                       "IRQNoFlags ()", "0x03F8"] {
            XCTAssertTrue(dsl.contains(needle), "DSDT disassembly lacks \(needle):\n\(dsl)")
        }
        let facp = try String(contentsOf: dir.appendingPathComponent("facp1.dsl"), encoding: .utf8)
        XCTAssertTrue(facp.contains("Hardware Reduced (V5) : 1"), facp)
    }

    /// AML using every encoder feature, disassembled by iasl and compiled
    /// again with optimizations off (-oa), must come back byte for byte: our
    /// bytes parse as ACPICA expects and are the forms its compiler picks.
    func testIASLRecompilesOurAMLToTheSameBytes() throws {
        let dir = try makeTempDir()
        defer { if ProcessInfo.processInfo.environment["KEEP_IASL"] == nil { try? FileManager.default.removeItem(at: dir) } }

        let crs = AMLResourceTemplate([
            try AMLAddressSpace.wordBusNumber(0...0xFF, usage: .producer),
            try AMLAddressSpace.wordIO(0...0xCF7, usage: .producer),
            try AMLAddressSpace.wordIO(0xD00...0xFFFF, usage: .consumer, isaRanges: .nonISAOnly),
            try AMLAddressSpace.dwordMemory(0xC000_0000...0xFEBF_FFFF, usage: .producer,
                                            cacheability: .nonCacheable, readWrite: true),
            try AMLAddressSpace.qwordMemory(0x1_0000_0000...0x1F_FFFF_FFFF, usage: .producer,
                                            cacheability: .prefetchable, readWrite: false),
            AMLMemory32Fixed(readWrite: true, base: 0xFEC0_0000, length: 0x1000),
            AMLIOPort(decodes16Bit: false, minimum: 0x100, maximum: 0x1F0, alignment: 0x10, length: 4),
            AMLIRQNoFlags([3, 4, 15]),
        ])
        let terms: [any AMLTerm] = [
            try AMLScope("\\_SB", [
                try AMLDevice("PCI0", [
                    try AMLName("_HID", AMLEISAID("PNP0A08")),
                    try AMLName("_CID", AMLEISAID("PNP0A03")),
                    try AMLName("_UID", AMLInteger(0)),
                    try AMLName("_CRS", crs),
                    try AMLName("BIG", AMLBuffer([UInt8](repeating: 0xA5, count: 5000))),
                    try AMLName("PKG", AMLPackage([
                        AMLInteger(2), AMLInteger(0x100), AMLInteger(0x1_0000), AMLInteger(0xFFFF_FFFF),
                        AMLInteger(0x1_0000_0000), AMLInteger(UInt64.max), AMLOnes(),
                        try AMLString("text"), AMLPackage([AMLInteger(1)]),
                    ])),
                    try AMLMethod("FOO", argumentCount: 3, serialized: true, syncLevel: 2,
                                  [AMLReturn(AMLInteger(0x1234))]),
                ]),
            ]),
            try AMLName("\\_SB.PCI0.NUM", AMLInteger(7)),
        ]
        var aml: [UInt8] = []
        for t in terms { try t.encode(into: &aml) }
        let table = try SDTHeader.table(signature: "SSDT", revision: 2, body: aml)
        try Data(table).write(to: dir.appendingPathComponent("ours.dat"))

        let (dStatus, dOutput) = try runIASL(["-d", "ours.dat"], in: dir)
        XCTAssertEqual(dStatus, 0, dOutput)
        let (cStatus, cOutput) = try runIASL(["-oa", "-p", "again", "ours.dsl"], in: dir)
        XCTAssertEqual(cStatus, 0, cOutput)
        XCTAssertTrue(cOutput.contains("0 Errors, 0 Warnings"), cOutput)
        let again = try [UInt8](Data(contentsOf: dir.appendingPathComponent("again.aml")))
        let dsl = try String(contentsOf: dir.appendingPathComponent("ours.dsl"), encoding: .utf8)
        XCTAssertEqual(Array(again.dropFirst(36)), aml, "iasl's AML differs:\n\(dsl)")
        // The round trip shows the bytes are well-formed; these show iasl
        // reads them as meant.
        for needle in ["WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
                       "WordIO (ResourceConsumer, MinFixed, MaxFixed, PosDecode, NonISAOnlyRanges,",
                       "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
                       "QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Prefetchable, ReadOnly,",
                       "0x0000001F00000000, // Length", "{3,4,15}", "IO (Decode10,",
                       "Method (FOO, 3, Serialized, 2)", "Name (\\_SB.PCI0.NUM, 0x07)",
                       "0xFFFFFFFFFFFFFFFF, ", "Buffer (0x1388)"] {
            XCTAssertTrue(dsl.contains(needle), "disassembly lacks \(needle):\n\(dsl)")
        }
    }

    func testIASLRecompilesTheDSDTToTheSameBytes() throws {
        let dir = try makeTempDir()
        defer { if ProcessInfo.processInfo.environment["KEEP_IASL"] == nil { try? FileManager.default.removeItem(at: dir) } }
        var machine = ACPIMachine(vcpus: 4)
        machine.rtc?.irq = 8
        let dsdt = try DSDT.build(machine: machine)
        try Data(dsdt).write(to: dir.appendingPathComponent("dsdt.dat"))
        XCTAssertEqual(try runIASL(["-d", "dsdt.dat"], in: dir).status, 0)
        let (status, output) = try runIASL(["-oa", "-p", "again", "dsdt.dsl"], in: dir)
        XCTAssertEqual(status, 0, output)
        let again = try [UInt8](Data(contentsOf: dir.appendingPathComponent("again.aml")))
        XCTAssertEqual(Array(again.dropFirst(36)), Array(dsdt.dropFirst(36)))
    }
}
