import XCTest
@testable import ACPI

/// AML encodings, byte for byte, from ACPI 6.5 §20.2.
final class AMLTests: XCTestCase {
    // MARK: PkgLength (§20.2.4)

    func testPkgLengthValueForms() throws {
        let cases: [(Int, [UInt8])] = [
            (0, [0x00]),
            (1, [0x01]),
            (63, [0x3F]),                             // largest one-byte form
            (64, [0x40, 0x04]),                       // smallest two-byte form
            (0x123, [0x43, 0x12]),
            (4095, [0x4F, 0xFF]),                     // largest two-byte form
            (4096, [0x80, 0x00, 0x01]),               // smallest three-byte form
            (0xF_FFFF, [0x8F, 0xFF, 0xFF]),
            (0x10_0000, [0xC0, 0x00, 0x00, 0x01]),    // smallest four-byte form
            (0x0FFF_FFFF, [0xCF, 0xFF, 0xFF, 0xFF]),  // 2^28 - 1
        ]
        for (value, expected) in cases {
            XCTAssertEqual(try AMLPkgLength.encode(value), expected, "value \(value)")
        }
        XCTAssertThrowsError(try AMLPkgLength.encode(0x1000_0000)) {
            XCTAssertEqual($0 as? ACPIError, .pkgLengthOutOfRange(0x1000_0000))
        }
        XCTAssertThrowsError(try AMLPkgLength.encode(-1))
    }

    /// The encoded length counts its own bytes: content 62 fits one byte
    /// (63), content 63 needs two (65).
    func testPkgLengthEnclosingBoundaries() throws {
        let cases: [(Int, [UInt8])] = [
            (0, [0x01]),
            (62, [0x3F]),
            (63, [0x41, 0x04]),                       // 65
            (4093, [0x4F, 0xFF]),                     // 4095
            (4094, [0x81, 0x00, 0x01]),               // 4097
            (0xF_FFFC, [0x8F, 0xFF, 0xFF]),           // 0xFFFFF
            (0xF_FFFD, [0xC1, 0x00, 0x00, 0x01]),     // 0x100001
            (0x0FFF_FFFB, [0xCF, 0xFF, 0xFF, 0xFF]),  // 2^28 - 1
        ]
        for (content, expected) in cases {
            XCTAssertEqual(try AMLPkgLength.encode(enclosing: content), expected, "content \(content)")
        }
        XCTAssertThrowsError(try AMLPkgLength.encode(enclosing: 0x0FFF_FFFC))
        XCTAssertThrowsError(try AMLPkgLength.encode(enclosing: -1))
        XCTAssertThrowsError(try AMLPkgLength.encode(enclosing: Int.max))
    }

    // MARK: Names (§20.2.2)

    func testNameSegPadsWithUnderscore() throws {
        XCTAssertEqual(try AMLNameSeg("_HID").bytes, [0x5F, 0x48, 0x49, 0x44])
        XCTAssertEqual(try AMLNameSeg("RTC").bytes, [0x52, 0x54, 0x43, 0x5F])
        XCTAssertEqual(try AMLNameSeg("A").bytes, [0x41, 0x5F, 0x5F, 0x5F])
        XCTAssertEqual(try AMLNameSeg("PCI0").bytes, [0x50, 0x43, 0x49, 0x30])
        XCTAssertEqual(try AMLNameSeg("S5").description, "S5__")
    }

    func testNameSegRejectsBadNames() {
        for bad in ["", "ABCDE", "1ABC", "abc", "A-B", "A B", "É"] {
            XCTAssertThrowsError(try AMLNameSeg(bad), "'\(bad)'") { error in
                guard case .invalidName? = error as? ACPIError else { return XCTFail("\(error)") }
            }
        }
    }

    func testNameStringForms() throws {
        let cases: [(String, [UInt8])] = [
            ("_SB", [0x5F, 0x53, 0x42, 0x5F]),
            ("\\", [0x5C, 0x00]),                                         // root, NullName
            ("\\_SB", [0x5C, 0x5F, 0x53, 0x42, 0x5F]),
            ("\\_S5", [0x5C, 0x5F, 0x53, 0x35, 0x5F]),
            ("\\_SB.COM1", [0x5C, 0x2E, 0x5F, 0x53, 0x42, 0x5F, 0x43, 0x4F, 0x4D, 0x31]),
            ("_SB.PCI0", [0x2E, 0x5F, 0x53, 0x42, 0x5F, 0x50, 0x43, 0x49, 0x30]),
            ("\\_SB.PCI0.ISA", [0x5C, 0x2F, 0x03, 0x5F, 0x53, 0x42, 0x5F, 0x50, 0x43, 0x49, 0x30,
                                0x49, 0x53, 0x41, 0x5F]),
            ("^^FOO", [0x5E, 0x5E, 0x46, 0x4F, 0x4F, 0x5F]),
            ("^", [0x5E, 0x00]),
            ("^A.B", [0x5E, 0x2E, 0x41, 0x5F, 0x5F, 0x5F, 0x42, 0x5F, 0x5F, 0x5F]),
        ]
        for (path, expected) in cases {
            let name = try AMLNameString(path)
            XCTAssertEqual(try name.encoded(), expected, path)
            XCTAssertEqual(name.description.replacingOccurrences(of: "_", with: ""),
                           path.replacingOccurrences(of: "_", with: ""), path)
        }
    }

    func testNameStringRejectsBadPaths() {
        for bad in ["", "\\^A", "A..B", "A.", ".A", "\\\\A", "_SB.abc", "^\\A", "A^"] {
            XCTAssertThrowsError(try AMLNameString(bad), "'\(bad)'")
        }
        let tooMany = Array(repeating: "A", count: 256).joined(separator: ".")
        XCTAssertThrowsError(try AMLNameString(tooMany))
        XCTAssertNoThrow(try AMLNameString(Array(repeating: "A", count: 255).joined(separator: ".")))
    }

    // MARK: Data objects (§20.2.3)

    func testIntegerSmallestEncoding() throws {
        let cases: [(UInt64, [UInt8])] = [
            (0, [0x00]),                                       // ZeroOp
            (1, [0x01]),                                       // OneOp
            (2, [0x0A, 0x02]),
            (0xFF, [0x0A, 0xFF]),
            (0x100, [0x0B, 0x00, 0x01]),
            (0xFFFF, [0x0B, 0xFF, 0xFF]),
            (0x1_0000, [0x0C, 0x00, 0x00, 0x01, 0x00]),
            (0xFFFF_FFFF, [0x0C, 0xFF, 0xFF, 0xFF, 0xFF]),
            (0x1_0000_0000, [0x0E, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]),
            // Never OnesOp: its width depends on the table revision.
            (UInt64.max, [0x0E, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(try AMLInteger(value).encoded(), expected, "0x\(String(value, radix: 16))")
        }
        let literal: AMLInteger = 0x0F
        XCTAssertEqual(try literal.encoded(), [0x0A, 0x0F])
        XCTAssertEqual(try AMLOnes().encoded(), [0xFF])
    }

    func testString() throws {
        XCTAssertEqual(try AMLString("QEMU0001").encoded(),
                       [0x0D, 0x51, 0x45, 0x4D, 0x55, 0x30, 0x30, 0x30, 0x31, 0x00])
        XCTAssertEqual(try AMLString("").encoded(), [0x0D, 0x00])
        XCTAssertThrowsError(try AMLString("A\u{0}B"))
        XCTAssertThrowsError(try AMLString("caf\u{E9}"))
    }

    func testEISAID() throws {
        XCTAssertEqual(try AMLEISAID.compress("PNP0501"), 0x0105_D041)
        XCTAssertEqual(try AMLEISAID("PNP0501").encoded(), [0x0C, 0x41, 0xD0, 0x05, 0x01])
        XCTAssertEqual(try AMLEISAID.compress("PNP0B00"), 0x000B_D041)
        XCTAssertEqual(try AMLEISAID.compress("PNP0303"), 0x0303_D041)
        XCTAssertEqual(try AMLEISAID.compress("PNP0A03"), 0x030A_D041)
        // A small value is still a DWord, as iasl emits EISAID.
        XCTAssertEqual(try AMLEISAID("PNP0B00").encoded(), [0x0C, 0x41, 0xD0, 0x0B, 0x00])
        for bad in ["pnp0501", "PNP050", "PNP05011", "PNP05G1", "PNP05a1", "P@P0501", ""] {
            XCTAssertThrowsError(try AMLEISAID(bad), bad) {
                XCTAssertEqual($0 as? ACPIError, .invalidEISAID(bad))
            }
        }
    }

    func testBuffer() throws {
        XCTAssertEqual(try AMLBuffer([1, 2, 3]).encoded(), [0x11, 0x06, 0x0A, 0x03, 0x01, 0x02, 0x03])
        XCTAssertEqual(try AMLBuffer([]).encoded(), [0x11, 0x02, 0x00])
        // 64 bytes: body 0x0A 0x40 + 64 = 66, PkgLength 68 in two bytes.
        let big = [UInt8](repeating: 0xAB, count: 64)
        XCTAssertEqual(try AMLBuffer(big).encoded(), cat([0x11, 0x44, 0x04, 0x0A, 0x40], big))
    }

    func testPackage() throws {
        let s5 = AMLPackage([AMLInteger(5), AMLInteger(0), AMLInteger(0), AMLInteger(0)])
        XCTAssertEqual(try s5.encoded(), [0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00])
        XCTAssertEqual(try AMLPackage([]).encoded(), [0x12, 0x02, 0x00])
        let nested = AMLPackage([AMLPackage([AMLInteger(1)]), try AMLString("A")])
        XCTAssertEqual(try nested.encoded(), [0x12, 0x09, 0x02, 0x12, 0x03, 0x01, 0x01, 0x0D, 0x41, 0x00])
        XCTAssertThrowsError(try AMLPackage(Array(repeating: AMLInteger(0), count: 256)).encoded()) {
            XCTAssertEqual($0 as? ACPIError, .tooManyElements(what: "Package", count: 256, limit: 255))
        }
    }

    // MARK: Named objects (§20.2.5)

    func testName() throws {
        XCTAssertEqual(try AMLName("_UID", AMLInteger(0)).encoded(), [0x08, 0x5F, 0x55, 0x49, 0x44, 0x00])
        XCTAssertEqual(try AMLName("_HID", AMLEISAID("PNP0501")).encoded(),
                       [0x08, 0x5F, 0x48, 0x49, 0x44, 0x0C, 0x41, 0xD0, 0x05, 0x01])
        XCTAssertThrowsError(try AMLName("_hid", AMLInteger(0)))
    }

    func testMethodReturningConstant() throws {
        let sta = try AMLMethod("_STA", [AMLReturn(AMLInteger(0x0F))])
        XCTAssertEqual(try sta.encoded(), [0x14, 0x09, 0x5F, 0x53, 0x54, 0x41, 0x00, 0xA4, 0x0A, 0x0F])
    }

    func testMethodFlags() throws {
        let m = try AMLMethod("FOO", argumentCount: 2, serialized: true, syncLevel: 3, [])
        XCTAssertEqual(try m.encoded(), [0x14, 0x06, 0x46, 0x4F, 0x4F, 0x5F, 0x3A])
        XCTAssertEqual(try AMLMethod("M", argumentCount: 7, syncLevel: 15, []).flags, 0xF7)
        XCTAssertThrowsError(try AMLMethod("M", argumentCount: 8, []))
        XCTAssertThrowsError(try AMLMethod("M", argumentCount: -1, []))
        XCTAssertThrowsError(try AMLMethod("M", syncLevel: 16, []))
    }

    func testScopeAndDevice() throws {
        let scope = try AMLScope("\\_SB", [AMLDevice("DEV0", [AMLName("_UID", AMLInteger(1))])])
        // Device body: "DEV0" + Name(_UID, One) = 4 + 6 = 10, PkgLength 11.
        let device: [UInt8] = [0x5B, 0x82, 0x0B, 0x44, 0x45, 0x56, 0x30, 0x08, 0x5F, 0x55, 0x49, 0x44, 0x01]
        // Scope body: "\_SB_" + device = 5 + 13 = 18, PkgLength 19.
        XCTAssertEqual(try scope.encoded(), cat([0x10, 0x13, 0x5C, 0x5F, 0x53, 0x42, 0x5F], device))
        XCTAssertEqual(try AMLScope("\\", []).encoded(), [0x10, 0x03, 0x5C, 0x00])
    }

    /// A device big enough to need a two-byte PkgLength.
    func testDeviceWithTwoBytePkgLength() throws {
        let buffer = [UInt8](repeating: 0, count: 60)
        let device = try AMLDevice("BIG", [AMLName("DATA", AMLBuffer(buffer))])
        // Buffer: 0x11, PkgLength(0x0A 0x3C + 60 = 62 -> 63) = 0x3F, 62 bytes: 64.
        // Name: 0x08 "DATA" + 64 = 69. Body: "BIG_" + 69 = 73, PkgLength 75 = 0x4B -> 0x4B 0x04.
        let expected = cat([0x5B, 0x82, 0x4B, 0x04, 0x42, 0x49, 0x47, 0x5F,
                            0x08, 0x44, 0x41, 0x54, 0x41, 0x11, 0x3F, 0x0A, 0x3C], buffer)
        XCTAssertEqual(try device.encoded(), expected)
    }
}
