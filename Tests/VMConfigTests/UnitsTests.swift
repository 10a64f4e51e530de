import VMConfig
import XCTest

final class UnitsTests: XCTestCase {
    func testSizes() {
        XCTAssertEqual(ConfigLoader.parseSize("0"), 0)
        XCTAssertEqual(ConfigLoader.parseSize("4096"), 4096)
        XCTAssertEqual(ConfigLoader.parseSize("4096B"), 4096)
        XCTAssertEqual(ConfigLoader.parseSize("16K"), 16 << 10)
        XCTAssertEqual(ConfigLoader.parseSize("512M"), 512 << 20)
        XCTAssertEqual(ConfigLoader.parseSize("512m"), 512 << 20)
        XCTAssertEqual(ConfigLoader.parseSize("512MiB"), 512 << 20)
        XCTAssertEqual(ConfigLoader.parseSize("2G"), 2 << 30)
        XCTAssertEqual(ConfigLoader.parseSize("2gib"), 2 << 30)
        XCTAssertEqual(ConfigLoader.parseSize("1T"), 1 << 40)
        XCTAssertEqual(ConfigLoader.parseSize("007M"), 7 << 20)
        XCTAssertEqual(ConfigLoader.parseSize("18446744073709551615"), UInt64.max)
        XCTAssertEqual(ConfigLoader.parseSize("16777215T"), 16_777_215 << 40)
    }

    func testMalformedSizes() {
        for s in ["", "M", "12Q", "1.5G", "-1M", "+1M", " 1M", "1M ", "1 M", "1_000", "1MB", "1KB", "0x10",
                  "1MM", "١٢M", "1\u{0}M", "1e9", "G1"] {
            XCTAssertNil(ConfigLoader.parseSize(s), s)
        }
    }

    func testSizeOverflowIsNilNotATrap() {
        XCTAssertNil(ConfigLoader.parseSize("99999999999999999999G"))
        XCTAssertNil(ConfigLoader.parseSize("18446744073709551616"))
        XCTAssertNil(ConfigLoader.parseSize("16777216T"))
        XCTAssertNil(ConfigLoader.parseSize("17179869184G"))
        XCTAssertNil(ConfigLoader.parseSize(String(repeating: "9", count: 10_000) + "K"))
    }

    func testDurations() {
        XCTAssertEqual(ConfigLoader.parseDuration("250ms"), 0.25)
        XCTAssertEqual(ConfigLoader.parseDuration("90s"), 90)
        XCTAssertEqual(ConfigLoader.parseDuration("5m"), 300)
        XCTAssertEqual(ConfigLoader.parseDuration("1h"), 3600)
        XCTAssertEqual(ConfigLoader.parseDuration("0s"), 0)
        XCTAssertEqual(ConfigLoader.parseDuration("8784h"), 366 * 86400)
        XCTAssertEqual(ConfigLoader.maxDurationSeconds, 366 * 86400)
    }

    func testMalformedDurations() {
        for s in ["", "90", "s", "1.5s", "90x", "90S", "5M", "-5s", " 5s", "5 s", "1h30m", "5sec", "ms", "5mss"] {
            XCTAssertNil(ConfigLoader.parseDuration(s), s)
        }
    }

    func testDurationOverflowIsNilNotATrap() {
        XCTAssertNil(ConfigLoader.parseDuration("8785h"))
        XCTAssertNil(ConfigLoader.parseDuration("99999999999999999999h"))
        XCTAssertNil(ConfigLoader.parseDuration("18446744073709551615h"))
        XCTAssertNil(ConfigLoader.parseDuration("18446744073709551615ms"))
    }

    func testTimeoutAsDuration() {
        var c = VMConfig(kernelPath: "/k", timeoutSeconds: 1.5)
        XCTAssertEqual(c.timeout, .milliseconds(1500))
        c.timeoutSeconds = nil
        XCTAssertNil(c.timeout)
        c.timeoutSeconds = .infinity
        XCTAssertNil(c.timeout)
        c.timeoutSeconds = 1e300
        XCTAssertEqual(c.timeout, .milliseconds(Int64.max), "clamped, not a trap")
        c.timeoutSeconds = -1e300
        XCTAssertEqual(c.timeout, .zero)
    }
}
