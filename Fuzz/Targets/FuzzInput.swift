/// Reads a fuzzer's input front to back as numbers and byte strings, in the
/// manner of libFuzzer's FuzzedDataProvider: past the end everything is zero,
/// so every input, even an empty one, is a complete program for a target.
public struct FuzzInput {
    private let bytes: [UInt8]
    private(set) var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isEmpty: Bool { position >= bytes.count }
    public var remaining: Int { max(bytes.count - position, 0) }

    public mutating func u8() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    public mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    public mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    public mutating func bool() -> Bool { u8() & 1 == 1 }

    /// Up to `count` bytes (fewer at the end of the input).
    public mutating func bytes(_ count: Int) -> [UInt8] {
        let n = min(max(count, 0), remaining)
        defer { position += n }
        return Array(bytes[position..<(position + n)])
    }

    /// Everything not read yet.
    public mutating func rest() -> [UInt8] { bytes(remaining) }

    /// An access width as guests use them: 1, 2, 4 or 8 bytes, now and then
    /// 0, 3 or 16.
    public mutating func width() -> Int { [1, 2, 4, 4, 8, 1, 2, 4, 0, 3, 16, 4, 2, 1, 4, 8][Int(u8() & 15)] }
}
