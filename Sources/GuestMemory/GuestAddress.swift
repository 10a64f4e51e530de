/// A guest physical address. Arithmetic on it is always checked: a value that
/// comes from the guest must never trap the VMM.
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt64

    public init(_ raw: UInt64) { self.raw = raw }

    public static func < (lhs: GuestAddress, rhs: GuestAddress) -> Bool { lhs.raw < rhs.raw }

    /// `self + offset`, or nil when it overflows 64 bits.
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = raw.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// `self + offset`, throwing `GuestMemoryError.overflow` when it overflows.
    public func checkedAdding(_ offset: UInt64) throws -> GuestAddress {
        guard let a = adding(offset) else { throw GuestMemoryError.overflow(address: raw, offset: offset) }
        return a
    }

    public var description: String { "0x" + String(raw, radix: 16) }
}

public enum GuestMemoryError: Error, Equatable, CustomStringConvertible {
    /// `[address, address+length)` is not entirely backed by guest RAM.
    case outOfRange(address: UInt64, length: UInt64)
    /// `address + offset` does not fit in 64 bits.
    case overflow(address: UInt64, offset: UInt64)
    /// Regions overlap or are empty when building a memory map.
    case badLayout(String)

    public var description: String {
        switch self {
        case let .outOfRange(a, l):
            return "guest range 0x\(String(a, radix: 16))+0x\(String(l, radix: 16)) is outside guest RAM"
        case let .overflow(a, o):
            return "guest address 0x\(String(a, radix: 16)) + 0x\(String(o, radix: 16)) overflows"
        case let .badLayout(s):
            return "bad guest memory layout: \(s)"
        }
    }
}
