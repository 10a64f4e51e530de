import Bits
import XCTest

final class HexTests: XCTestCase {
    func testHex() {
        XCTAssertEqual(hex(0), "0x0")
        XCTAssertEqual(hex(255), "0xff")
        XCTAssertEqual(hex(UInt64.max), "0xffffffffffffffff")
        XCTAssertEqual(hex(UInt8(0xA)), "0xa")
        XCTAssertEqual(hex(-16), "0x-10")
    }

    func testHexDigitsPadsToWidth() {
        XCTAssertEqual(hexDigits(3), "3")
        XCTAssertEqual(hexDigits(3, width: 2), "03")
        XCTAssertEqual(hexDigits(UInt16(0xBEEF), width: 4), "beef")
        XCTAssertEqual(hexDigits(0x12345, width: 4), "12345", "never cut")
        XCTAssertEqual(hexDigits(0, width: 4), "0000")
        XCTAssertEqual(hexDigits(-1, width: 4), "-1", "negative values are not padded")
    }

    func testHexRange() {
        XCTAssertEqual(hexRange(UInt64(0x1000)...0x1FFF), "0x1000-0x1fff")
        XCTAssertEqual(hexRange(UInt64(0)...UInt64.max), "0x0-0xffffffffffffffff")
    }

    func testHexDigitValue() {
        let text = Array("09afAF".utf8)
        XCTAssertEqual(text.map(hexDigitValue), [0, 9, 10, 15, 10, 15])
        for c in Array("gG/:@`x -".utf8) + [0, 0x80, 0xFF] {
            XCTAssertNil(hexDigitValue(c), "\(c)")
        }
        let accepted = (0...255).filter { hexDigitValue(UInt8($0)) != nil }
        XCTAssertEqual(accepted.count, 22)
    }
}
