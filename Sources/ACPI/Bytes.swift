import Bits

/// Little-endian byte helpers for the structures this module emits. Every
/// offset passed to them is one of this module's constants, never a value
/// from the guest.
extension Array where Element == UInt8 {
    /// Appends `value` in little-endian byte order (ACPI 6.5 §5.2: all
    /// multi-byte fields are little-endian).
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        for i in 0..<(T.bitWidth / 8) {
            append(UInt8(truncatingIfNeeded: value >> (8 * i)))
        }
    }

    /// Overwrites `[offset, offset + size of T)` with `value`, little-endian.
    mutating func setLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        LE.put(value, into: &self, at: offset)
    }

    /// Overwrites `[offset, offset + other.count)` with `other`.
    mutating func set(_ other: [UInt8], at offset: Int) {
        precondition(offset >= 0 && other.count <= count - offset, "set outside the structure")
        replaceSubrange(offset..<(offset + other.count), with: other)
    }
}

