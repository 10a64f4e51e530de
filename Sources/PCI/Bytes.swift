/// Little-endian helpers for the raw buffers bus accesses carry. Buffers can
/// have any length (including 0 and more than 8 bytes) because the guest
/// chooses the access width.
enum LE {
    // SAFETY (all helpers): buffer indices run over 0..<data.count only.

    /// The first up-to-8 bytes of `data` as a little-endian integer.
    static func load(_ data: UnsafeRawBufferPointer) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<min(data.count, 8) {
            v |= UInt64(data[i]) << (8 * UInt64(i))
        }
        return v
    }

    /// Stores `value` little-endian into `data`; bytes past the eighth are 0.
    static func store(_ value: UInt64, _ data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count {
            data[i] = i < 8 ? UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) : 0
        }
    }

    /// Fills `data` with 0xFF: what a read nothing claims returns on PCI (a
    /// master abort reads all ones; PCI 3.0 §6.1 has host bridges return
    /// FFFFh for the Vendor ID of a function that does not exist).
    static func fillOnes(_ data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = 0xFF }
    }

    static func bytes(_ value: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }
}

/// Formats a byte count for messages: "8 GiB", "4 KiB", or bytes in hex.
func formatSize(_ size: UInt64) -> String {
    let units: [(UInt64, String)] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
    for (unit, name) in units where size >= unit && size % unit == 0 {
        return "\(size / unit) \(name)"
    }
    return size < 1024 ? "\(size) B" : "0x\(String(size, radix: 16)) bytes"
}

func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

extension UInt64 {
    /// Rounds up to a multiple of `alignment` (a power of two), or nil on overflow.
    func alignedUp(to alignment: UInt64) -> UInt64? {
        guard alignment > 0, alignment & (alignment - 1) == 0 else { return nil }
        let (sum, o) = addingReportingOverflow(alignment - 1)
        return o ? nil : sum & ~(alignment - 1)
    }

    var isPowerOfTwo: Bool { self != 0 && self & (self - 1) == 0 }
}
