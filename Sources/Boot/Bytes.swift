import Bits

/// Bounds-checked little-endian reads from an untrusted byte array (a kernel
/// image). Every offset comes from the file, so every read returns nil instead
/// of trapping when it does not fit.
struct ByteReader {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var count: UInt64 { UInt64(bytes.count) }

    /// True when `[offset, offset+length)` lies inside the array.
    func contains(_ offset: UInt64, _ length: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= count
    }

    func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, at offset: UInt64) -> T? {
        guard let start = Int(exactly: offset) else { return nil }
        return LE.read(T.self, bytes, at: start)
    }

    func u8(_ offset: UInt64) -> UInt8? { integer(UInt8.self, at: offset) }
    func u16(_ offset: UInt64) -> UInt16? { integer(UInt16.self, at: offset) }
    func u32(_ offset: UInt64) -> UInt32? { integer(UInt32.self, at: offset) }
    func u64(_ offset: UInt64) -> UInt64? { integer(UInt64.self, at: offset) }

    /// The bytes `[offset, offset+length)`, or nil when out of range.
    func slice(_ offset: UInt64, _ length: UInt64) -> ArraySlice<UInt8>? {
        guard contains(offset, length), let start = Int(exactly: offset), let n = Int(exactly: length) else {
            return nil
        }
        return bytes[start..<(start + n)]
    }
}

/// Builds the little-endian structures the loader emits (zero page, MP table,
/// hvm_start_info). Offsets passed to `set` are this module's own constants,
/// never values from the image.
struct ByteWriter {
    private(set) var bytes: [UInt8]

    init() { bytes = [] }
    init(zeros count: Int) { bytes = [UInt8](repeating: 0, count: count) }

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func append<S: Sequence>(contentsOf other: S) where S.Element == UInt8 {
        bytes.append(contentsOf: other)
    }

    /// ASCII `text`, space-padded or cut to exactly `width` bytes.
    mutating func appendPadded(_ text: String, width: Int) {
        bytes.append(contentsOf: asciiField(text, width: width))
    }

    mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        LE.put(value, into: &bytes, at: offset)
    }

    mutating func set(bytes other: [UInt8], at offset: Int) {
        precondition(offset >= 0 && other.count <= bytes.count - offset, "ByteWriter.set outside the structure")
        bytes.replaceSubrange(offset..<(offset + other.count), with: other)
    }
}
