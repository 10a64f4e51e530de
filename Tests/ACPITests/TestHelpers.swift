import XCTest

/// Byte helpers for writing expected values by hand. They never call the
/// code under test.
extension Array where Element == UInt8 {
    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    static func ascii(_ text: String) -> [UInt8] { Array(text.utf8) }

    func u16(at offset: Int) -> UInt16 { UInt16(self[offset]) | UInt16(self[offset + 1]) << 8 }

    func u32(at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(self[offset + $1]) << (8 * $1) }
    }

    func u64(at offset: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(self[offset + $1]) << (8 * $1) }
    }
}

/// The 36-byte SDT header as ACPI 6.5 §5.2.6 lays it out, with checksum 0
/// (tests patch byte 9 with `fixChecksum`).
func sdtHeader(_ signature: String, length: UInt32, revision: UInt8) -> [UInt8] {
    cat(.ascii(signature), .le(length), [revision, 0x00],
        .ascii("SWVMM "), .ascii("SWIFTVMM"), .le(UInt32(1)),
        .ascii("SWFT"), .le(UInt32(1)))
}

/// `bytes` with byte `offset` set so that the sum of `range` is 0 mod 256.
func fixChecksum(_ bytes: [UInt8], at offset: Int, over range: Range<Int>? = nil) -> [UInt8] {
    var out = bytes
    out[offset] = 0
    let sum = out[range ?? 0..<out.count].reduce(UInt8(0), &+)
    out[offset] = 0 &- sum
    return out
}

func assertSumsToZero(_ bytes: ArraySlice<UInt8>, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(bytes.reduce(UInt8(0), &+), 0, "\(what) checksum", file: file, line: line)
}

/// Concatenation that the type checker handles quickly (long `+` chains of
/// array literals do not).
func cat(_ parts: [UInt8]...) -> [UInt8] { parts.flatMap { $0 } }
