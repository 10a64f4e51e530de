import XCTest
@testable import ACPI

/// The sleep control register decoding (ACPI 6.5 §4.8.3.7; bit positions of
/// ACPICA's ACPI_X_SLEEP_TYPE_MASK 0x1C, ACPI_X_SLEEP_ENABLE 0x20).
final class SleepTests: XCTestCase {
    func testConstants() {
        XCTAssertEqual(ACPISleep.controlPort, 0x600)
        XCTAssertEqual(ACPISleep.statusPort, 0x601)
        XCTAssertEqual(ACPISleep.slpEnBit, 0x20)
        XCTAssertEqual(ACPISleep.slpTypMask, 0x1C)
        XCTAssertEqual(ACPISleep.wakeStatusBit, 0x80)
        XCTAssertEqual(ACPISleep.s5Type, 5)
        XCTAssertEqual(ACPISleep.s5ControlValue, 0x34)
    }

    /// Every byte: power off exactly when SLP_EN (bit 5) is set and bits 4:2
    /// are 101, whatever the reserved bits 7:6 and 1:0 hold.
    func testDecodeControlWriteForEveryByte() {
        var powerOff: [UInt8] = []
        for value in UInt8.min...UInt8.max where ACPISleep.decodeControlWrite(value) {
            powerOff.append(value)
        }
        let expected: [UInt8] = [0x34, 0x35, 0x36, 0x37, 0x74, 0x75, 0x76, 0x77,
                                 0xB4, 0xB5, 0xB6, 0xB7, 0xF4, 0xF5, 0xF6, 0xF7]
        XCTAssertEqual(powerOff, expected)
        // Near misses: S5 type without SLP_EN, SLP_EN with another type.
        XCTAssertFalse(ACPISleep.decodeControlWrite(0x14))
        XCTAssertFalse(ACPISleep.decodeControlWrite(0x20))
        XCTAssertFalse(ACPISleep.decodeControlWrite(0x2C))  // S3-style type 3
        XCTAssertFalse(ACPISleep.decodeControlWrite(0x3C))  // type 7
        XCTAssertFalse(ACPISleep.decodeControlWrite(0x80))  // WAK_STS written to the wrong port
    }

    /// The value Linux writes is `(first \_S5 element << 2) | SLP_EN`; the
    /// DSDT's first \_S5 element is s5Type.
    func testDSDTS5MatchesDecoder() throws {
        let aml = try DSDT.aml(for: ACPIMachine(vcpus: 1))
        // Name(\_S5, Package(4) { BytePrefix 5, ...
        XCTAssertEqual(Array(aml[0..<11]), [0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x07, 0x04, 0x0A, 0x05])
        XCTAssertTrue(ACPISleep.decodeControlWrite(aml[10] << 2 | 0x20))
    }
}
