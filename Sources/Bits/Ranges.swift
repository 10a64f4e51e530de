/// True when `[a, a + n)` and `[b, b + m)` share at least one element. Empty
/// ranges (n or m <= 0) share nothing. Any inputs give an answer instead of
/// a trap, so guest-chosen offsets and widths go straight in: an end past
/// `Int.max` counts as `Int.max`.
public func rangesOverlap(_ a: Int, _ n: Int, _ b: Int, _ m: Int) -> Bool {
    guard n > 0, m > 0 else { return false }
    let (aEnd, o1) = a.addingReportingOverflow(n)
    let (bEnd, o2) = b.addingReportingOverflow(m)
    return a < (o2 ? Int.max : bEnd) && b < (o1 ? Int.max : aEnd)
}

/// The parts of a device region of `regionSize` bytes that may be mmapped, as
/// offset ranges in ascending order: the sparse areas (offset, size) when the
/// region lists them, dropping empty ones and any that wrap or end past the
/// region, else the whole region. VFIO and vfio-user describe them alike
/// (`VFIO_REGION_INFO_CAP_SPARSE_MMAP`).
public func mappableRanges(regionSize: UInt64, sparse: [(offset: UInt64, size: UInt64)]?) -> [Range<UInt64>] {
    guard regionSize > 0 else { return [] }
    guard let sparse else { return [0..<regionSize] }
    return sparse.compactMap { a -> Range<UInt64>? in
        let (end, overflow) = a.offset.addingReportingOverflow(a.size)
        guard a.size > 0, !overflow, end <= regionSize else { return nil }
        return a.offset..<end
    }.sorted { $0.lowerBound < $1.lowerBound }
}
