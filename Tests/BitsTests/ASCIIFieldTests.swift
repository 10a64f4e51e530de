import Bits
import XCTest

final class ASCIIFieldTests: XCTestCase {
    func testCutOrSpacePadded() {
        XCTAssertEqual(asciiField("ISA", width: 6), Array("ISA   ".utf8))
        XCTAssertEqual(asciiField("SWIFTVMM", width: 6), Array("SWIFTV".utf8))
        XCTAssertEqual(asciiField("FACP", width: 4), Array("FACP".utf8))
        XCTAssertEqual(asciiField("", width: 2), [0x20, 0x20])
        XCTAssertEqual(asciiField("x", width: 0), [])
    }
}
