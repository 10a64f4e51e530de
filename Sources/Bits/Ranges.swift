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
