extension FixedWidthInteger {
    /// True for 1, 2, 4, 8, ...; false for 0 and negative values.
    @inlinable
    public var isPowerOfTwo: Bool { self > 0 && self & (self &- 1) == 0 }
}

/// `value` rounded up to a multiple of `alignment`, or nil when `alignment`
/// is not a power of two or the result does not fit in 64 bits.
public func alignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64? {
    guard alignment.isPowerOfTwo else { return nil }
    let (sum, overflow) = value.addingReportingOverflow(alignment - 1)
    return overflow ? nil : sum & ~(alignment - 1)
}

/// `value` rounded down to a multiple of `alignment` (a power of two; any
/// other `alignment` gives a meaningless result, never a trap).
public func alignDown(_ value: UInt64, _ alignment: UInt64) -> UInt64 {
    value & ~(alignment &- 1)
}
