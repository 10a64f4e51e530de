import Foundation
import XCTest
@testable import ACPI

/// The VIOT through ACPICA's disassembler. iasl learned the VIOT in ACPICA
/// 20210331; Debian bookworm's acpica-tools (20200925) decodes only its
/// header. With such an iasl the test checks the header, the checksum (a
/// wrong one is a warning) and the raw bytes iasl read, and says so on a
/// line of its own; with a newer one (IASL=/path/to/iasl) it checks every
/// node field and that iasl compiles its disassembly back to our bytes.
extension IASLTests {
    /// The bytes of iasl's "Raw Table Data" hex dump.
    func rawTableData(_ dsl: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for line in dsl.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 1)
            guard fields.count == 2, fields[0].trimmingCharacters(in: .whitespaces).count == 4,
                  UInt16(fields[0].trimmingCharacters(in: .whitespaces), radix: 16) != nil else { continue }
            let hexPart = fields[1].components(separatedBy: "//")[0]
            bytes += hexPart.split(separator: " ").compactMap { UInt8($0, radix: 16) }
        }
        return bytes
    }

    func testIASLDisassemblesTheVIOT() throws {
        let dir = try makeTempDir()
        defer { if ProcessInfo.processInfo.environment["KEEP_IASL"] == nil { try? FileManager.default.removeItem(at: dir) } }
        // The example (00:02.0 translating 00:01.0, 00:03.0-00:03.1) on the PCI layer's machine.
        let layout = try ACPITables.build(config: ACPIMachine(vcpus: 1, pci: swiftVMMBridge(), viommu: try exampleIOMMU()))
        guard let viot = layout.table("VIOT"), let xsdtTable = layout.table("XSDT") else {
            return XCTFail("no VIOT or XSDT in \(layout.tables.map(\.signature))")
        }
        var version = "?"
        for (name, bytes) in [("viot", viot.bytes), ("xsdt", xsdtTable.bytes)] {
            try Data(bytes).write(to: dir.appendingPathComponent("\(name).dat"))
            let (status, output) = try runIASL(["-d", "\(name).dat"], in: dir)
            XCTAssertEqual(status, 0, "iasl -d \(name):\n\(output)")
            XCTAssertFalse(output.contains("Error"), "iasl -d \(name):\n\(output)")
            XCTAssertFalse(output.contains("Warning"), "iasl -d \(name):\n\(output)")
            if let r = output.range(of: "version ") { version = String(output[r.upperBound...].prefix { $0.isNumber }) }
        }

        let xsdt = squeezed(try String(contentsOf: dir.appendingPathComponent("xsdt.dsl"), encoding: .utf8))
        XCTAssertTrue(xsdt.contains("ACPI Table Address 3 : 00000000000E0A90"), xsdt)
        XCTAssertEqual(viot.address, 0xE0A90)

        let raw = try String(contentsOf: dir.appendingPathComponent("viot.dsl"), encoding: .utf8)
        let dsl = squeezed(raw)
        // The header in both iasl generations' words.
        for needle in ["Signature : \"VIOT\"", "Table Length : 00000070", "Revision : 00",
                       "Oem ID : \"SWVMM \"", "Oem Table ID : \"SWIFTVMM\""] {
            XCTAssertTrue(dsl.contains(needle), "VIOT disassembly lacks \(needle):\n\(raw)")
        }
        XCTAssertEqual(rawTableData(raw), viot.bytes, "the bytes iasl read:\n\(raw)")

        if dsl.contains("Unknown ACPI table signature [VIOT]") {
            print("VIOT: iasl \(version) predates VIOT support (ACPICA 20210331): checked its header, checksum and raw bytes only; IASL=/path/to/newer/iasl checks every node field")
            return
        }
        // Each field with the value we wrote, in table order.
        let fields = [
            "Node count : 0003", "Node offset : 0030", "Reserved : 0000000000000000",
            "Type : 03 [VirtIO-PCI IOMMU]", "Reserved : 00", "Length : 0010",
            "PCI Segment : 0000", "PCI BDF number : 0010", "Reserved : 0000000000000000",
            "Type : 01 [PCI Range]", "Reserved : 00", "Length : 0018",
            "Endpoint start : 00000008", "PCI Segment start : 0000", "PCI Segment end : 0000",
            "PCI BDF start : 0008", "PCI BDF end : 0008", "Output node : 0030", "Reserved : 000000000000",
            "Type : 01 [PCI Range]", "Reserved : 00", "Length : 0018",
            "Endpoint start : 00000018", "PCI Segment start : 0000", "PCI Segment end : 0000",
            "PCI BDF start : 0018", "PCI BDF end : 0019", "Output node : 0030", "Reserved : 000000000000",
        ]
        var rest = dsl[...]
        for needle in fields {
            guard let r = rest.range(of: needle) else {
                return XCTFail("VIOT disassembly lacks \(needle) after the fields before it:\n\(raw)")
            }
            rest = rest[r.upperBound...]
        }
        XCTAssertFalse(rest.contains("Type :"), "iasl found more nodes than three:\n\(raw)")

        // iasl's table compiler counts the nodes and sets the node offset
        // itself (DtCompileViot): its bytes after the header must be ours.
        let (status, output) = try runIASL(["viot.dsl"], in: dir)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("0 Errors, 0 Warnings"), output)
        let again = try [UInt8](Data(contentsOf: dir.appendingPathComponent("viot.aml")))
        XCTAssertEqual(again.count, viot.bytes.count)
        XCTAssertEqual(Array(again.dropFirst(36)), Array(viot.bytes.dropFirst(36)))
    }
}
