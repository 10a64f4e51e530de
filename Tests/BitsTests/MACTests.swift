import Bits
import XCTest

final class MACTests: XCTestCase {
    func testParsesSixTwoDigitOctetsEitherCase() {
        XCTAssertEqual(MAC.parse("52:54:00:12:34:56"), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        XCTAssertEqual(MAC.parse("aA:Bb:0c:D0:e9:F1"), [0xAA, 0xBB, 0x0C, 0xD0, 0xE9, 0xF1])
        XCTAssertEqual(MAC.parse("ff:ff:ff:ff:ff:ff"), [UInt8](repeating: 0xFF, count: 6), "broadcast parses")
        XCTAssertEqual(MAC.parse("00:00:00:00:00:00"), [0, 0, 0, 0, 0, 0], "judged by the caller")
    }

    func testRefusesEveryOtherForm() {
        for text in ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00:12:34:56:", ":52:54:00:12:34:56",
                     "52-54-00-12-34-56", "52.54.00.12.34.56", "525400123456", "5:54:00:12:34:56",
                     "052:54:00:12:34:56", "+5:54:00:12:34:56", "-0:54:00:12:34:56", "52:54:00:12:34:zz",
                     " 52:54:00:12:34:56", "52:54:00:12:34:56 ", "52::54:00:12:34", "0x:54:00:12:34:56",
                     "52:54:00:12:34:5\u{301}", "５2:54:00:12:34:56"] {
            XCTAssertNil(MAC.parse(text), text)
        }
    }

    func testFormatRoundTrips() {
        XCTAssertEqual(MAC.format([0x52, 0x54, 0x00, 0x0A, 0xBC, 0xFF]), "52:54:00:0a:bc:ff")
        for i in 0..<256 {
            let bytes = (0..<MAC.length).map { UInt8(truncatingIfNeeded: i &* 37 &+ $0 &* 101) }
            XCTAssertEqual(MAC.parse(MAC.format(bytes)), bytes)
            XCTAssertEqual(MAC.parse(MAC.format(bytes).uppercased()), bytes)
        }
    }

    func testBits() {
        XCTAssertTrue(MAC.isMulticast([0x01, 0x00, 0x5E, 0, 0, 1]))
        XCTAssertTrue(MAC.isMulticast([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))
        XCTAssertFalse(MAC.isMulticast([0x52, 0x54, 0, 0, 0, 1]))
        XCTAssertFalse(MAC.isMulticast([]))
        XCTAssertTrue(MAC.isZero([0, 0, 0, 0, 0, 0]))
        XCTAssertFalse(MAC.isZero([0, 0, 0, 0, 0, 1]))
    }
}
