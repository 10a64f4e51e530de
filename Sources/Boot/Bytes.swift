import Bits

/// Where a kernel image's bytes come from: an array in memory (`check`'s
/// caller, tests, fuzzing) or a file read only where the parser looks and,
/// for what goes into guest memory, chunk by chunk, so the VMM never holds a
/// whole kernel (a PVH vmlinux is 50 MiB and more).
public protocol ImageSource: AnyObject, Sendable {
    /// The image's size in bytes.
    var count: UInt64 { get }
    /// The `length` bytes at `offset`, or nil when they are not all there
    /// (outside the image, or a file that shrank or failed to read).
    func read(_ offset: UInt64, _ length: Int) -> [UInt8]?
}

/// An image held in memory.
public final class ImageBytes: ImageSource {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var count: UInt64 { UInt64(bytes.count) }
    public func read(_ offset: UInt64, _ length: Int) -> [UInt8]? {
        guard length >= 0, let start = Int(exactly: offset), start <= bytes.count, length <= bytes.count - start else {
            return nil
        }
        return Array(bytes[start..<(start + length)])
    }
}

/// A range of an image that the loader copies into guest memory (a bzImage's
/// payload, an ELF segment's file bytes), read when it is copied.
public struct ImageRange: Equatable, Sendable {
    let source: any ImageSource
    public let offset: UInt64
    public let count: UInt64
    /// All of it, in one read (nil when the image no longer has it).
    public var bytes: [UInt8]? { Int(exactly: count).flatMap { source.read(offset, $0) } }

    /// The same range of the same image.
    public static func == (a: ImageRange, b: ImageRange) -> Bool {
        a.source === b.source && a.offset == b.offset && a.count == b.count
    }
}

/// Bounds-checked little-endian reads from an untrusted image (a kernel).
/// Every offset comes from the file, so every read returns nil instead of
/// trapping when it does not fit.
struct ByteReader {
    let source: any ImageSource
    /// The bytes themselves when the image is in memory: read without a copy.
    private let array: [UInt8]?

    init(_ source: any ImageSource) {
        self.source = source
        array = (source as? ImageBytes)?.bytes
    }

    init(_ bytes: [UInt8]) { self.init(ImageBytes(bytes)) }

    var count: UInt64 { source.count }

    /// True when `[offset, offset+length)` lies inside the image.
    func contains(_ offset: UInt64, _ length: UInt64) -> Bool {
        let (end, overflow) = offset.addingReportingOverflow(length)
        return !overflow && end <= count
    }

    func integer<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, at offset: UInt64) -> T? {
        guard let start = Int(exactly: offset) else { return nil }
        if let array { return LE.read(T.self, array, at: start) }
        guard let b = source.read(offset, MemoryLayout<T>.size) else { return nil }
        return LE.read(T.self, b, at: 0)
    }

    func u8(_ offset: UInt64) -> UInt8? { integer(UInt8.self, at: offset) }
    func u16(_ offset: UInt64) -> UInt16? { integer(UInt16.self, at: offset) }
    func u32(_ offset: UInt64) -> UInt32? { integer(UInt32.self, at: offset) }
    func u64(_ offset: UInt64) -> UInt64? { integer(UInt64.self, at: offset) }

    /// The bytes `[offset, offset+length)` read now, or nil when out of range:
    /// for what the parser looks at (magic numbers, headers, note names).
    func bytes(_ offset: UInt64, _ length: UInt64) -> [UInt8]? {
        guard contains(offset, length), let n = Int(exactly: length) else { return nil }
        return source.read(offset, n)
    }

    /// The range `[offset, offset+length)`, or nil when out of range: for
    /// what the loader copies into guest memory, read only then.
    func range(_ offset: UInt64, _ length: UInt64) -> ImageRange? {
        guard contains(offset, length) else { return nil }
        return ImageRange(source: source, offset: offset, count: length)
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
