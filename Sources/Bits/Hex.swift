/// Hexadecimal text for messages and logs, in one format everywhere: lower-case
/// digits, "0x" in front where a reader could take the number for decimal.

/// `value` as "0x" and lower-case hex digits: `hex(255) == "0xff"`,
/// `hex(0) == "0x0"`. A negative value keeps its sign after the prefix
/// (`hex(-16) == "0x-10"`), as `String(_:radix:)` writes it.
@inlinable
public func hex<T: BinaryInteger>(_ value: T) -> String {
    "0x" + String(value, radix: 16)
}

/// `value` as lower-case hex digits without a prefix, zero-padded on the left
/// to at least `width` digits: `hexDigits(3, width: 2) == "03"`,
/// `hexDigits(0x1234, width: 2) == "1234"`. Meant for non-negative values
/// (PCI addresses, register offsets); a negative value is not padded.
public func hexDigits<T: BinaryInteger>(_ value: T, width: Int = 0) -> String {
    let digits = String(value, radix: 16)
    guard value >= 0, digits.count < width else { return digits }
    return String(repeating: "0", count: width - digits.count) + digits
}

/// A closed range as "0x1000-0x1fff" (both ends inclusive).
public func hexRange<T: BinaryInteger>(_ range: ClosedRange<T>) -> String {
    hex(range.lowerBound) + "-" + hex(range.upperBound)
}

/// The value of one ASCII hex digit, either case ("0"-"9", "a"-"f",
/// "A"-"F"), or nil for any other byte.
public func hexDigitValue(_ ascii: UInt8) -> UInt8? {
    switch ascii {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return ascii - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return ascii - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return ascii - UInt8(ascii: "A") + 10
    default: return nil
    }
}
