import Foundation
import XCTest
@testable import ACPI

/// The PCI tables through ACPICA: iasl disassembles and recompiles them, and
/// acpiexec (ACPICA's interpreter, the one Linux runs) evaluates _OSC and
/// _PRT. Skipped, with the reason, when acpica-tools is not installed.
extension IASLTests {
    static let acpiexec = "/usr/bin/acpiexec"

    /// `text` with every run of whitespace made one space, so needles do not
    /// depend on iasl's column layout.
    func squeezed(_ text: String) -> String {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).joined(separator: " ")
    }

    /// An ASL integer as iasl prints it: Zero, One, Ones or 0x....
    func aslInteger(_ token: Substring) -> UInt64? {
        switch token {
        case "Zero": return 0
        case "One": return 1
        default: return token.hasPrefix("0x") ? UInt64(token.dropFirst(2), radix: 16) : nil
        }
    }

    func testIASLDisassemblesThePCITables() throws {
        let dir = try makeTempDir()
        defer { if ProcessInfo.processInfo.environment["KEEP_IASL"] == nil { try? FileManager.default.removeItem(at: dir) } }
        let bridge = swiftVMMBridge()
        let layout = try ACPITables.build(config: ACPIMachine(vcpus: 2, pci: bridge))
        for t in layout.tables where t.signature != "RSD PTR " {
            let name = t.signature.lowercased()
            try Data(t.bytes).write(to: dir.appendingPathComponent("\(name).dat"))
            let (status, output) = try runIASL(["-d", "\(name).dat"], in: dir)
            XCTAssertEqual(status, 0, "iasl -d \(name):\n\(output)")
            XCTAssertFalse(output.contains("Error"), "iasl -d \(name):\n\(output)")
            XCTAssertFalse(output.contains("Warning"), "iasl -d \(name):\n\(output)")
        }

        let dsl = squeezed(try String(contentsOf: dir.appendingPathComponent("dsdt.dsl"), encoding: .utf8))
        for needle in [
            "Device (PCI0)", "Name (_HID, EisaId (\"PNP0A08\")", "Name (_CID, EisaId (\"PNP0A03\")",
            "Name (_ADR, Zero)", "Name (_SEG, Zero)", "Name (_BBN, Zero)", "Name (_UID, Zero)",
            "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, // Granularity 0x0000, // Range Minimum 0x0000, // Range Maximum 0x0000, // Translation Offset 0x0001, // Length",
            "IO (Decode16, 0x0CF8, // Range Minimum 0x0CF8, // Range Maximum 0x01, // Alignment 0x08, // Length",
            "WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, // Granularity 0xC000, // Range Minimum 0xFFFF, // Range Maximum 0x0000, // Translation Offset 0x4000, // Length",
            "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000, // Granularity 0xC0000000, // Range Minimum 0xDFFFFFFF, // Range Maximum 0x00000000, // Translation Offset 0x20000000, // Length",
            "QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x0000000000000000, // Granularity 0x0000000100000000, // Range Minimum 0x00000010FFFFFFFF, // Range Maximum 0x0000000000000000, // Translation Offset 0x0000001000000000, // Length",
            "Name (_PRT, Package (0x7C)",
            "Method (_OSC, 4, Serialized)",
            "If ((Arg0 == ToUUID (\"33db4d5b-1ff7-401c-9657-7441c03dd766\")",
            "Local0 = (CDW3 & 0xFFFFFFF6)",
            "Device (ECAM) { Name (_HID, EisaId (\"PNP0C02\")",
            "Memory32Fixed (ReadWrite, 0xE0000000, // Address Base 0x00100000, // Address Length",
            "Device (COM1)", "Name (\\_S5, Package (0x04)",
        ] {
            XCTAssertTrue(dsl.contains(needle), "DSDT disassembly lacks \(needle):\n\(dsl)")
        }
        XCTAssertFalse(dsl.contains("Prefetchable"), "no window may be prefetchable")

        // Every _PRT entry, read back from iasl's text.
        guard let prtStart = dsl.range(of: "Name (_PRT, Package (0x7C)"),
              let prtEnd = dsl.range(of: "Method (_OSC", range: prtStart.upperBound..<dsl.endIndex) else {
            return XCTFail("no _PRT in\n\(dsl)")
        }
        var entries: [[UInt64]] = []
        for chunk in dsl[prtStart.upperBound..<prtEnd.lowerBound].components(separatedBy: "Package (0x04) {").dropFirst() {
            let body = chunk.prefix { $0 != "}" }
            entries.append(body.split(separator: ",").compactMap { aslInteger(Substring($0.trimmingCharacters(in: .whitespaces))) })
        }
        XCTAssertEqual(entries, bridge.intxRoutes.map { [UInt64($0.slot) << 16 | 0xFFFF, UInt64($0.pin), 0, UInt64($0.gsi)] })
        XCTAssertEqual(entries.count, 124)

        let mcfg = squeezed(try String(contentsOf: dir.appendingPathComponent("mcfg.dsl"), encoding: .utf8))
        for needle in ["Signature : \"MCFG\"", "Revision : 01", "Base Address : 00000000E0000000",
                       "Segment Group Number : 0000", "Start Bus Number : 00", "End Bus Number : 00"] {
            XCTAssertTrue(mcfg.contains(needle), "MCFG disassembly lacks \(needle):\n\(mcfg)")
        }
        let xsdt = squeezed(try String(contentsOf: dir.appendingPathComponent("xsdt.dsl"), encoding: .utf8))
        let mcfgAddress = String(layout.table("MCFG")?.address ?? 0, radix: 16, uppercase: true)
        XCTAssertTrue(xsdt.contains("ACPI Table Address 2 : " + String(repeating: "0", count: 16 - mcfgAddress.count) + mcfgAddress), xsdt)
    }

    /// iasl compiles its own disassembly back to our bytes. Its one warning
    /// is 3073, for _ADR next to _HID (kept as QEMU and Cloud Hypervisor
    /// have it; Sources/ACPI/README.md).
    func testIASLRecompilesThePCIDSDTToTheSameBytes() throws {
        let dir = try makeTempDir()
        defer { if ProcessInfo.processInfo.environment["KEEP_IASL"] == nil { try? FileManager.default.removeItem(at: dir) } }
        var bridge = swiftVMMBridge(slots: Array(0...31))
        bridge.ioWindows = [0x0000...0x0CF7, 0x0D00...0xFFFF]
        bridge.buses = 0...0x3F
        bridge.ecamBase = 0xB000_0000
        let dsdt = try DSDT.build(machine: ACPIMachine(vcpus: 4, pci: bridge))
        try Data(dsdt).write(to: dir.appendingPathComponent("dsdt.dat"))
        XCTAssertEqual(try runIASL(["-d", "dsdt.dat"], in: dir).status, 0)
        let (status, output) = try runIASL(["-oa", "-p", "again", "dsdt.dsl"], in: dir)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("0 Errors, 1 Warnings"), output)
        XCTAssertTrue(output.contains("Warning  3073"), output)
        XCTAssertTrue(output.contains("_HID or _ADR, but not both"), output)
        let again = try [UInt8](Data(contentsOf: dir.appendingPathComponent("again.aml")))
        XCTAssertEqual(Array(again.dropFirst(36)), Array(dsdt.dropFirst(36)))
    }

    func makeACPIExecDir(bridge: ACPIMachine.PCIHostBridge) throws -> URL {
        guard FileManager.default.isExecutableFile(atPath: Self.acpiexec) else {
            throw XCTSkip("acpiexec not installed: apt-get install acpica-tools")
        }
        let dir = try makeTempDir()
        try Data(DSDT.build(machine: ACPIMachine(vcpus: 1, pci: bridge))).write(to: dir.appendingPathComponent("dsdt.dat"))
        return dir
    }

    /// The 12-byte buffers acpiexec printed, in order, as three DWORDs each.
    func returnedBuffers(_ output: String) -> [[UInt32]] {
        output.split(separator: "\n").filter { $0.contains("[Buffer] Length 0C =") }.compactMap { line in
            guard let colon = line.range(of: "0000:") else { return nil }
            let bytes = line[colon.upperBound...].split(separator: " ").prefix(12).compactMap { UInt8($0, radix: 16) }
            guard bytes.count == 12 else { return nil }
            return (0..<3).map { i in (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[4 * i + $1]) << (8 * $1) } }
        }
    }

    /// Runs _OSC as Linux does (a query, then the request for what the
    /// query granted) and with a wrong UUID and revision, in ACPICA's
    /// interpreter.
    func testACPIExecRunsOSCLikeLinux() throws {
        let dir = try makeACPIExecDir(bridge: swiftVMMBridge())
        defer { if ProcessInfo.processInfo.environment["KEEP_IASL"] == nil { try? FileManager.default.removeItem(at: dir) } }
        func buffer(_ dwords: [UInt32]) -> String {
            "(" + dwords.flatMap { d in (0..<4).map { String(format: "%02x", (d >> (8 * $0)) & 0xFF) } }.joined(separator: " ") + ")"
        }
        let uuid = "(" + (try AMLUUID(PCIRoot.oscUUID)).bytes.map { String(format: "%02x", $0) }.joined(separator: " ") + ")"
        // Linux's request: native hot plug 0x1, SHPC 0x2, PME 0x4, AER 0x8,
        // PCIe capability 0x10, LTR 0x20, DPC 0x80; support 0x1F.
        let linux: UInt32 = 0xBF
        // (arguments, the buffer _OSC returns)
        let calls: [(String, [UInt32])] = [
            ("\(uuid) 1 3 \(buffer([1, 0x1F, linux]))", [0x11, 0x1F, 0xB6]),              // query: masked
            ("\(uuid) 1 3 \(buffer([0, 0x1F, 0xB6]))", [0x00, 0x1F, 0xB6]),               // request: granted
            ("\(uuid) 1 3 \(buffer([1, 0x1F, 0]))", [0x01, 0x1F, 0]),                      // nothing asked
            ("\(uuid) 1 3 \(buffer([0, 0x1F, 0xFFFF_FFFF]))", [0x10, 0x1F, 0xFFFF_FFF6]),
            ("\(uuid) 2 3 \(buffer([0, 0x1F, 0x16]))", [0x08, 0x1F, 0x16]),               // unknown revision
            ("(00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff) 1 3 \(buffer([0, 0x1F, linux]))",
             [0x04, 0x1F, linux]),                                                         // unknown UUID
        ]
        let batch = calls.map { "evaluate \\_SB.PCI0._OSC \($0.0)" }.joined(separator: "; ")
        let (status, output) = try run(Self.acpiexec, ["-b", batch, "dsdt.dat"], in: dir)
        XCTAssertEqual(status, 0, output)
        XCTAssertFalse(output.contains("ACPI Error"), output)
        XCTAssertFalse(output.contains("ACPI Warning"), output)
        // Arguments are echoed as "Buffer(12) ..."; only results read "[Buffer] Length 0C".
        XCTAssertEqual(returnedBuffers(output), calls.map(\.1), output)

        // Fewer than 3 DWORDs: the interpreter stops the method (README, "_OSC").
        let short = try run(Self.acpiexec, ["-b", "evaluate \\_SB.PCI0._OSC \(uuid) 1 2 \(buffer([1, 0x1F]))", "dsdt.dat"], in: dir)
        XCTAssertTrue(short.output.contains("AE_AML_BUFFER_LIMIT"), short.output)
    }

    /// _PRT, _SEG, _BBN and the ECAM device's _STA as the interpreter sees them.
    func testACPIExecEvaluatesPRT() throws {
        var bridge = swiftVMMBridge(slots: [1, 2, 31])
        bridge.intxRoutes.append(.init(slot: 0, pin: 0, gsi: 0x1_0000))
        let dir = try makeACPIExecDir(bridge: bridge)
        defer { if ProcessInfo.processInfo.environment["KEEP_IASL"] == nil { try? FileManager.default.removeItem(at: dir) } }
        let (status, output) = try run(Self.acpiexec, ["-b", "evaluate \\_SB.PCI0._PRT; evaluate \\_SB.PCI0._SEG; evaluate \\_SB.PCI0._BBN; evaluate \\_SB.ECAM._STA", "dsdt.dat"], in: dir)
        XCTAssertEqual(status, 0, output)
        XCTAssertFalse(output.contains("ACPI Error"), output)
        XCTAssertTrue(output.contains("[Package] Contains 13 Elements:"), output)
        let integers = output.split(separator: "\n").compactMap { line -> UInt64? in
            guard let r = line.range(of: "[Integer] = ") else { return nil }
            return UInt64(line[r.upperBound...].trimmingCharacters(in: .whitespaces), radix: 16)
        }
        let expected: [UInt64] = bridge.intxRoutes.flatMap { r -> [UInt64] in
            [UInt64(r.slot) << 16 | 0xFFFF, UInt64(r.pin), 0, UInt64(r.gsi)]
        }
        XCTAssertEqual(integers, expected + [0, 0, 0x0F], output)
    }
}
