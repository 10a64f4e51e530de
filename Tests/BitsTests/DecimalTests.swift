import Bits
import XCTest

final class DecimalTests: XCTestCase {
    func testRoundsToTheGivenPlaces() {
        XCTAssertEqual(decimal(12.345, digits: 1), "12.3")
        XCTAssertEqual(decimal(12.35, digits: 1), "12.4")
        XCTAssertEqual(decimal(0.05, digits: 1), "0.1")
        XCTAssertEqual(decimal(1234.5678, digits: 2), "1234.57")
        XCTAssertEqual(decimal(7.5, digits: 0), "8")
        XCTAssertEqual(decimal(0.004, digits: 2), "0.00")
        XCTAssertEqual(decimal(3, digits: 3), "3.000")
        XCTAssertEqual(decimal(0.001, digits: 3), "0.001")
    }

    func testSigns() {
        XCTAssertEqual(decimal(-2, digits: 2), "-2.00")
        XCTAssertEqual(decimal(-0.04, digits: 1), "0.0")
        XCTAssertEqual(decimal(-0.06, digits: 1), "-0.1")
    }

    func testWhatItDoesNotRound() {
        XCTAssertEqual(decimal(.nan, digits: 1), "nan")
        XCTAssertEqual(decimal(.infinity, digits: 1), "inf")
        XCTAssertEqual(decimal(1e20, digits: 1), "1e+20")
        XCTAssertEqual(decimal(1.25, digits: -3), "1")
        XCTAssertEqual(decimal(1.5, digits: 40), "1.500000000")
    }

    func testAgreesWithPrintfOnARange() {
        // Against C's own rounding, for values where the binary fraction is not a tie.
        for i in stride(from: 0, to: 100_000, by: 7) {
            let v = Double(i) / 997
            var buf = [CChar](repeating: 0, count: 64)
            _ = withVaList([v]) { vsnprintf(&buf, 64, "%.3f", $0) }
            XCTAssertEqual(decimal(v, digits: 3), String(cString: buf), "\(v)")
        }
    }
}
