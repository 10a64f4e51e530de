/// Sizes ("512M") and durations ("90s"): parsing without traps and formatting
/// for messages.
enum Units {
    enum Parsed<T> {
        case value(T)
        case malformed
        case overflow
    }

    /// Binary size suffixes, matched case-insensitively. "KB"/"MB" are left
    /// out on purpose: they are ambiguous between 1000 and 1024.
    static let sizeSuffixes: [(String, UInt64)] = [
        ("", 1), ("b", 1),
        ("k", 1 << 10), ("kib", 1 << 10),
        ("m", 1 << 20), ("mib", 1 << 20),
        ("g", 1 << 30), ("gib", 1 << 30),
        ("t", 1 << 40), ("tib", 1 << 40),
    ]

    /// Duration units in milliseconds.
    static let durationUnits: [(String, UInt64)] = [
        ("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000),
    ]

    /// Splits "512M" into (512, "M"): leading ASCII digits, then the rest.
    /// Returns nil without digits. The number is nil when it overflows UInt64.
    private static func splitNumber(_ text: String) -> (number: UInt64?, unit: Substring)? {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else { return nil }
        var n: UInt64? = 0
        for c in digits.unicodeScalars {
            guard let acc = n else { break }
            let (m, o1) = acc.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(c.value - 0x30))
            n = (o1 || o2) ? nil : s
        }
        return (n, text[digits.endIndex...])
    }

    static func parseSize(_ text: String) -> Parsed<UInt64> {
        guard let (number, unit) = splitNumber(text) else { return .malformed }
        let u = unit.lowercased()
        guard let mult = sizeSuffixes.first(where: { $0.0 == u })?.1 else { return .malformed }
        guard let n = number else { return .overflow }
        let (bytes, o) = n.multipliedReportingOverflow(by: mult)
        return o ? .overflow : .value(bytes)
    }

    /// Milliseconds. A unit is required ("90" is ambiguous).
    static func parseDurationMillis(_ text: String) -> Parsed<UInt64> {
        guard let (number, unit) = splitNumber(text), !unit.isEmpty else { return .malformed }
        guard let mult = durationUnits.first(where: { $0.0 == unit })?.1 else { return .malformed }
        guard let n = number else { return .overflow }
        let (ms, o) = n.multipliedReportingOverflow(by: mult)
        return o ? .overflow : .value(ms)
    }

    /// "512M", "1T", "16K" or plain bytes: the largest binary unit that
    /// divides the size exactly.
    static func formatSize(_ bytes: UInt64) -> String {
        for (suffix, mult) in [("T", UInt64(1) << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)]
        where bytes != 0 && bytes % mult == 0 {
            return "\(bytes / mult)\(suffix)"
        }
        return "\(bytes)"
    }

    /// "366 days", "5m", "250ms".
    static func formatMillis(_ ms: UInt64) -> String {
        if ms % 86_400_000 == 0 && ms != 0 { return "\(ms / 86_400_000) days" }
        for (unit, mult) in durationUnits.reversed() where ms != 0 && ms % mult == 0 {
            return "\(ms / mult)\(unit)"
        }
        return "\(ms)ms"
    }
}

extension ConfigLoader {
    /// Parses a size: decimal digits and an optional binary suffix K, M, G or
    /// T (also KiB, MiB, GiB, TiB, B; any case). "512M" is 512 MiB. Returns
    /// nil for anything else, including values that overflow 64 bits.
    public static func parseSize(_ text: String) -> UInt64? {
        if case let .value(v) = Units.parseSize(text) { return v }
        return nil
    }

    /// Parses a duration: decimal digits and a unit, one of ms, s, m, h
    /// ("250ms", "90s", "5m", "1h"). Returns seconds, or nil for anything
    /// else and for durations over `maxDurationSeconds`.
    public static func parseDuration(_ text: String) -> Double? {
        guard case let .value(ms) = Units.parseDurationMillis(text), ms <= maxDurationMillis else { return nil }
        return Double(ms) / 1000
    }

    /// The longest duration accepted: 366 days. Longer is surely a typo, and
    /// the bound keeps every later conversion (to nanoseconds, to a deadline)
    /// far from overflow.
    static let maxDurationMillis: UInt64 = 366 * 86_400_000
    public static let maxDurationSeconds = Double(maxDurationMillis / 1000)
}
