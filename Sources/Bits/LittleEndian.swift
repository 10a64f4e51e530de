/// Little-endian integers in byte buffers: the raw buffers of guest bus
/// accesses (any length, because the guest chooses the access width) and the
/// byte arrays of ioctl arguments and config-space images.
///
/// Reads from arrays are bounds checked and return nil when the integer does
/// not fit, so callers can hand them untrusted offsets. `put` traps on a
/// range outside the array: its offsets are the caller's own constants.
public enum LE {
    // SAFETY (raw buffer helpers): indices run over 0..<data.count only.

    /// The first up-to-8 bytes of `data` as a little-endian integer; missing
    /// high bytes read as 0.
    public static func load(_ data: UnsafeRawBufferPointer) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<min(data.count, 8) {
            value |= UInt64(data[i]) << (8 * UInt64(i))
        }
        return value
    }

    /// Stores `value` little-endian into `data`; bytes past the eighth are 0.
    public static func store(_ value: UInt64, _ data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count {
            data[i] = i < 8 ? UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) : 0
        }
    }

    /// The low `count` bytes of `value`, little-endian; bytes past the eighth
    /// are 0.
    public static func bytes(_ value: UInt64, count: Int) -> [UInt8] {
        (0..<max(0, count)).map { $0 < 8 ? UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) : 0 }
    }

    /// The `T` at `offset` of `bytes`, or nil unless
    /// `[offset, offset + size of T)` lies inside the array.
    public static func read<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, _ bytes: [UInt8], at offset: Int) -> T? {
        let size = T.bitWidth / 8
        guard offset >= 0, offset <= bytes.count - size else { return nil }
        var value: T = 0
        for i in 0..<size {
            value |= T(bytes[offset + i]) << (8 * i)
        }
        return value
    }

    public static func u16(_ bytes: [UInt8], _ offset: Int) -> UInt16? { read(UInt16.self, bytes, at: offset) }
    public static func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32? { read(UInt32.self, bytes, at: offset) }
    public static func u64(_ bytes: [UInt8], _ offset: Int) -> UInt64? { read(UInt64.self, bytes, at: offset) }

    /// Overwrites `[offset, offset + size of T)` of `bytes` with `value`,
    /// little-endian. Traps when the range is outside the array.
    public static func put<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        let size = T.bitWidth / 8
        precondition(offset >= 0 && offset <= bytes.count - size, "LE.put outside the buffer")
        for i in 0..<size {
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i))
        }
    }
}
