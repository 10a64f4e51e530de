import XCTest
@testable import ACPI

/// Control-method terms, byte for byte, from ACPI 6.5 §20.2.5 and §20.2.6.
final class AMLStatementTests: XCTestCase {
    func testArgsAndLocals() throws {
        XCTAssertEqual(try AMLArg(0).encoded(), [0x68])
        XCTAssertEqual(try AMLArg(6).encoded(), [0x6E])
        XCTAssertEqual(try AMLLocal(0).encoded(), [0x60])
        XCTAssertEqual(try AMLLocal(7).encoded(), [0x67])
        XCTAssertThrowsError(try AMLArg(7)) {
            XCTAssertEqual(($0 as? ACPIError)?.description, "invalid AML term: Arg7: method arguments are Arg0...Arg6")
        }
        XCTAssertThrowsError(try AMLArg(-1))
        XCTAssertThrowsError(try AMLLocal(8))
        XCTAssertThrowsError(try AMLLocal(-1))
    }

    func testIfWithoutAndWithElse() throws {
        // If (Arg0) { Return (One) }: IfOp, PkgLength 4 (itself, Arg0, ReturnOp, One).
        XCTAssertEqual(try AMLIf(AMLArg(0), then: [AMLReturn(AMLInteger(1))]).encoded(),
                       [0xA0, 0x04, 0x68, 0xA4, 0x01])
        // ... Else { Return (Zero) }: ElseOp, PkgLength 3.
        XCTAssertEqual(try AMLIf(AMLArg(0), then: [AMLReturn(AMLInteger(1))], else: [AMLReturn(AMLInteger(0))]).encoded(),
                       [0xA0, 0x04, 0x68, 0xA4, 0x01, 0xA1, 0x03, 0xA4, 0x00])
        // An empty Else is still an Else.
        XCTAssertEqual(try AMLIf(AMLArg(1), then: [], else: []).encoded(), [0xA0, 0x02, 0x69, 0xA1, 0x01])
        // A body past 63 bytes takes the two-byte PkgLength.
        let big = try AMLIf(AMLArg(0), then: [AMLName("BUF", AMLBuffer([UInt8](repeating: 0, count: 60)))]).encoded()
        // Name: NameOp 1 + BUF_ 4 + BufferOp 1 + PkgLength 1 + BytePrefix 60 (2) + 60 bytes = 69;
        // with Arg0 the If body is 70, so PkgLength = 70 + 2 = 72 = 0x48 0x04.
        XCTAssertEqual(Array(big.prefix(4)), [0xA0, 0x48, 0x04, 0x68])
        XCTAssertEqual(big.count, 1 + 72)
    }

    func testLogicalOperators() throws {
        XCTAssertEqual(try AMLLEqual(AMLArg(1), AMLInteger(1)).encoded(), [0x93, 0x69, 0x01])
        // LNotEqual is LNotOp LEqualOp (§20.2.5.4).
        XCTAssertEqual(try AMLLNot(AMLLEqual(AMLLocal(0), AMLInteger(0x10))).encoded(), [0x92, 0x93, 0x60, 0x0A, 0x10])
    }

    func testBitwiseOperatorsAndStore() throws {
        let cdw1 = try AMLNameString("CDW1")
        XCTAssertEqual(try AMLBitwise(.or, cdw1, AMLInteger(4), target: cdw1).encoded(),
                       cat([0x7D], .ascii("CDW1"), [0x0A, 0x04], .ascii("CDW1")))
        XCTAssertEqual(try AMLBitwise(.and, AMLArg(0), AMLInteger(0xFFFF_FFF6), target: AMLLocal(2)).encoded(),
                       [0x7B, 0x68, 0x0C, 0xF6, 0xFF, 0xFF, 0xFF, 0x62])
        // No target: NullName.
        XCTAssertEqual(try AMLBitwise(.and, AMLArg(0), AMLArg(1), target: nil).encoded(), [0x7B, 0x68, 0x69, 0x00])
        XCTAssertEqual(try AMLStore(AMLLocal(0), into: cdw1).encoded(), cat([0x70, 0x60], .ascii("CDW1")))
        XCTAssertEqual(try AMLStore(AMLInteger(0x1234), into: AMLLocal(7)).encoded(), [0x70, 0x0B, 0x34, 0x12, 0x67])
    }

    func testCreateDWordField() throws {
        XCTAssertEqual(try AMLCreateDWordField(AMLArg(3), byteIndex: AMLInteger(0), "CDW1").encoded(),
                       cat([0x8A, 0x6B, 0x00], .ascii("CDW1")))
        XCTAssertEqual(try AMLCreateDWordField(AMLArg(3), byteIndex: AMLInteger(8), "CD3").encoded(),
                       cat([0x8A, 0x6B, 0x0A, 0x08], .ascii("CD3_")))
        XCTAssertThrowsError(try AMLCreateDWordField(AMLArg(3), byteIndex: AMLInteger(0), "cdw1"))
    }

    /// ToUUID byte order (§19.6.142): the first three groups reversed, the
    /// last two as written. The PCI host bridge UUID as iasl compiles it.
    func testUUID() throws {
        let pciHostBridge: [UInt8] = [0x5B, 0x4D, 0xDB, 0x33, 0xF7, 0x1F, 0x1C, 0x40,
                                      0x96, 0x57, 0x74, 0x41, 0xC0, 0x3D, 0xD7, 0x66]
        XCTAssertEqual(try AMLUUID("33DB4D5B-1FF7-401C-9657-7441C03DD766").bytes, pciHostBridge)
        XCTAssertEqual(try AMLUUID("33db4d5b-1ff7-401c-9657-7441c03dd766").bytes, pciHostBridge)
        // Buffer (0x10) { ... }: BufferOp, PkgLength 19, BytePrefix 16.
        XCTAssertEqual(try AMLUUID("33DB4D5B-1FF7-401C-9657-7441C03DD766").encoded(),
                       cat([0x11, 0x13, 0x0A, 0x10], pciHostBridge))
        XCTAssertEqual(try AMLUUID("00112233-4455-6677-8899-AABBCCDDEEFF").bytes,
                       [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF])
        for bad in ["", "33DB4D5B-1FF7-401C-9657", "33DB4D5B1FF7-401C-9657-7441C03DD766-",
                    "33DB4D5B-1FF7-401C-9657-7441C03DD76G", "33DB4D5B-1FF7-401C-9657-7441C03DD7666",
                    "33DB4D5B-1FF7-401C--96577441C03DD766", "33DB4D5B-1FF7-401C-9657-7441C03DD76\u{E9}"] {
            XCTAssertThrowsError(try AMLUUID(bad), bad) {
                guard case .invalidTerm? = $0 as? ACPIError else { return XCTFail("\(bad): \($0)") }
            }
        }
    }
}
