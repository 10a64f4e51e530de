import Foundation
import XCTest
@testable import Devices

final class CMOSRTCTests: XCTestCase {
    // 2026-11-25 01:02:03 UTC, a Wednesday.
    let fixed = Date(timeIntervalSince1970: 1_795_568_523)

    func read(_ rtc: CMOSRTC, _ reg: UInt8) -> UInt8 {
        [reg].withUnsafeBytes { rtc.write(offset: 0, data: $0) }
        var b: [UInt8] = [0]
        b.withUnsafeMutableBytes { rtc.read(offset: 1, data: $0) }
        return b[0]
    }

    func write(_ rtc: CMOSRTC, _ reg: UInt8, _ v: UInt8) {
        [reg].withUnsafeBytes { rtc.write(offset: 0, data: $0) }
        [v].withUnsafeBytes { rtc.write(offset: 1, data: $0) }
    }

    func testTimeIsHostUTCInBCD() {
        let rtc = CMOSRTC(now: { [fixed] in fixed })
        XCTAssertEqual(read(rtc, 0x00), 0x03)
        XCTAssertEqual(read(rtc, 0x02), 0x02)
        XCTAssertEqual(read(rtc, 0x04), 0x01)
        XCTAssertEqual(read(rtc, 0x07), 0x25)
        XCTAssertEqual(read(rtc, 0x08), 0x11)
        XCTAssertEqual(read(rtc, 0x09), 0x26)
        XCTAssertEqual(read(rtc, 0x32), 0x20)
        XCTAssertEqual(read(rtc, 0x06), 0x04) // Wednesday: 4 counting Sunday as 1
    }

    /// The arithmetic calendar agrees with Foundation's Gregorian UTC calendar,
    /// leap days, century years and dates before 1970 included.
    func testCivilTimeAgreesWithTheGregorianCalendar() {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        var samples: [Int64] = [0, -1, 86_399, 86_400, 951_782_400, 951_868_800, 4_107_542_400, -2_208_988_800,
                                1_795_568_523, 253_402_300_799]
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<2000 {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            samples.append(Int64(x % 16_000_000_000) - 4_000_000_000)
        }
        for t in samples {
            let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday],
                                       from: Date(timeIntervalSince1970: TimeInterval(t)))
            let want = CMOSRTC.CivilTime(year: c.year!, month: c.month!, day: c.day!, hour: c.hour!, minute: c.minute!,
                                         second: c.second!, weekday: c.weekday!)
            XCTAssertEqual(CMOSRTC.civil(t), want, "\(t)")
        }
    }

    func testStatusRegistersNeverReportUpdateInProgress() {
        let rtc = CMOSRTC(now: { [fixed] in fixed })
        XCTAssertEqual(read(rtc, 0x0A) & 0x80, 0)
        XCTAssertEqual(read(rtc, 0x0B), 0x02)
        XCTAssertEqual(read(rtc, 0x0D), 0x80)
        write(rtc, 0x0A, 0xFF)
        XCTAssertEqual(read(rtc, 0x0A) & 0x80, 0)
        write(rtc, 0x0B, 0x04 | 0x40) // guest asks for binary mode + periodic interrupt
        XCTAssertEqual(read(rtc, 0x0B), 0x42, "BCD and 24h stay; other bits are kept")
    }

    func testNMIMaskBitAndRAMStorage() {
        let rtc = CMOSRTC(now: { [fixed] in fixed })
        write(rtc, 0x80 | 0x40, 0x5A) // NMI-disable bit set on the index
        XCTAssertEqual(read(rtc, 0x40), 0x5A)
        write(rtc, 0x00, 0x59) // time writes are ignored
        XCTAssertEqual(read(rtc, 0x00), 0x03)
    }

    func testOddWidthsAndOffsetsNeverTrap() {
        let rtc = CMOSRTC()
        var b = [UInt8](repeating: 0, count: 4)
        b.withUnsafeMutableBytes { rtc.read(offset: 5, data: $0) }
        XCTAssertEqual(b, [0xFF, 0xFF, 0xFF, 0xFF])
        [UInt8]().withUnsafeBytes { rtc.write(offset: 1, data: $0) }
        var empty = [UInt8]()
        empty.withUnsafeMutableBytes { rtc.read(offset: 1, data: $0) }
    }
}
