import Bits
import XCTest

final class LittleEndianTests: XCTestCase {
    func testLoadTakesUpToEightBytes() {
        XCTAssertEqual([UInt8]().withUnsafeBytes { LE.load($0) }, 0)
        XCTAssertEqual([UInt8]([0x34, 0x12]).withUnsafeBytes { LE.load($0) }, 0x1234)
        let ten: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        XCTAssertEqual(ten.withUnsafeBytes { LE.load($0) }, 0x0807_0605_0403_0201)
    }

    func testStoreZeroesPastTheEighthByte() {
        var b = [UInt8](repeating: 0xAA, count: 10)
        b.withUnsafeMutableBytes { LE.store(0x0807_0605_0403_0201, $0) }
        XCTAssertEqual(b, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0])
        var two = [UInt8](repeating: 0xAA, count: 2)
        two.withUnsafeMutableBytes { LE.store(0xDEAD_BEEF, $0) }
        XCTAssertEqual(two, [0xEF, 0xBE])
    }

    func testBytes() {
        XCTAssertEqual(LE.bytes(0x1234_5678, count: 4), [0x78, 0x56, 0x34, 0x12])
        XCTAssertEqual(LE.bytes(0x1234, count: 1), [0x34])
        XCTAssertEqual(LE.bytes(UInt64.max, count: 10), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0])
        XCTAssertEqual(LE.bytes(1, count: 0), [])
        XCTAssertEqual(LE.bytes(1, count: -1), [])
    }

    func testReadsAreBoundsChecked() {
        let b: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        XCTAssertEqual(LE.u16(b, 0), 0x0201)
        XCTAssertEqual(LE.u16(b, 7), 0x0908)
        XCTAssertNil(LE.u16(b, 8))
        XCTAssertEqual(LE.u32(b, 5), 0x0908_0706)
        XCTAssertNil(LE.u32(b, 6))
        XCTAssertEqual(LE.u64(b, 1), 0x0908_0706_0504_0302)
        XCTAssertNil(LE.u64(b, 2))
        XCTAssertNil(LE.u32(b, -1))
        XCTAssertNil(LE.u32(b, .max))
        XCTAssertNil(LE.u32(b, .min))
        XCTAssertNil(LE.u16([], 0))
        XCTAssertEqual(LE.read(UInt8.self, b, at: 8), 9)
    }

    func testPut() {
        var b = [UInt8](repeating: 0, count: 8)
        LE.put(UInt32(0xAABB_CCDD), into: &b, at: 2)
        XCTAssertEqual(b, [0, 0, 0xDD, 0xCC, 0xBB, 0xAA, 0, 0])
        LE.put(UInt16(0x0102), into: &b, at: 6)
        XCTAssertEqual(LE.u64(b, 0), 0x0102_AABB_CCDD_0000)
        LE.put(Int64(-1), into: &b, at: 0)
        XCTAssertEqual(b, [UInt8](repeating: 0xFF, count: 8))
    }
}
