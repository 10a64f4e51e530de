import Bits
import XCTest

final class ArithmeticTests: XCTestCase {
    func testIsPowerOfTwo() {
        XCTAssertEqual((0...17).filter { $0.isPowerOfTwo }, [1, 2, 4, 8, 16])
        XCTAssertTrue((UInt64(1) << 63).isPowerOfTwo)
        XCTAssertFalse(UInt64.max.isPowerOfTwo)
        XCTAssertFalse(Int.min.isPowerOfTwo, "negative, and no overflow trap")
        XCTAssertFalse((-4).isPowerOfTwo)
    }

    func testAlignUp() {
        XCTAssertEqual(alignUp(0, 4096), 0)
        XCTAssertEqual(alignUp(1, 4096), 4096)
        XCTAssertEqual(alignUp(4096, 4096), 4096)
        XCTAssertEqual(alignUp(0x1001, 16), 0x1010)
        XCTAssertEqual(alignUp(7, 1), 7)
        XCTAssertNil(alignUp(1, 0), "zero alignment")
        XCTAssertNil(alignUp(1, 3), "not a power of two")
        XCTAssertNil(alignUp(UInt64.max, 2), "overflow")
        XCTAssertEqual(alignUp(UInt64.max - 0xFFF, 4096), UInt64.max - 0xFFF)
    }

    func testAlignDown() {
        XCTAssertEqual(alignDown(0x1FFF, 0x1000), 0x1000)
        XCTAssertEqual(alignDown(0x1000, 0x1000), 0x1000)
        XCTAssertEqual(alignDown(UInt64.max, 1 << 63), 1 << 63)
        XCTAssertEqual(alignDown(5, 0), 0, "no trap")
    }

    func testRangesOverlap() {
        XCTAssertTrue(rangesOverlap(0, 4, 3, 1))
        XCTAssertFalse(rangesOverlap(0, 4, 4, 1), "touching ends do not overlap")
        XCTAssertFalse(rangesOverlap(4, 1, 0, 4))
        XCTAssertTrue(rangesOverlap(2, 1, 0, 4))
        XCTAssertTrue(rangesOverlap(0, 100, 10, 2), "one inside the other")
        XCTAssertFalse(rangesOverlap(0, 0, 0, 4), "empty")
        XCTAssertFalse(rangesOverlap(0, 4, 2, -1), "negative length")
        XCTAssertTrue(rangesOverlap(Int.max - 1, 10, Int.max - 1, 1), "end overflows")
        XCTAssertTrue(rangesOverlap(Int.max - 1, .max, Int.max - 2, 2), "both ends overflow")
        XCTAssertFalse(rangesOverlap(Int.max, .max, .max, .max), "ends saturate at Int.max, so nothing starts there")
        XCTAssertFalse(rangesOverlap(Int.min, 2, Int.max, .max))
        XCTAssertTrue(rangesOverlap(-8, 16, 0, 1))
    }

    func testByteSum() {
        XCTAssertEqual(byteSum([]), 0)
        XCTAssertEqual(byteSum([1, 2, 3]), 6)
        XCTAssertEqual(byteSum([0xFF, 0x02]), 1, "modulo 256")
        let bytes: [UInt8] = [0x52, 0x53, 0x44, 0x20]
        XCTAssertEqual(byteSum(bytes + [0 &- byteSum(bytes)]), 0)
        XCTAssertEqual(byteSum(bytes[1...]), 0x53 &+ 0x44 &+ 0x20)
    }
}
