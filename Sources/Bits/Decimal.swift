/// Decimal text for log lines, without Foundation's `String(format:)` (which
/// would pull its ICU data into the binary).

/// `value` rounded to `digits` places after the point, half away from zero:
/// `decimal(12.345, digits: 1) == "12.3"`, `decimal(0.05, digits: 1) == "0.1"`,
/// `decimal(-2, digits: 2) == "-2.00"`, `decimal(7.5, digits: 0) == "8"`. NaN,
/// the infinities and magnitudes of 1e18 and more are written as Swift's
/// `description` writes them; `digits` is clamped to 0...9.
public func decimal(_ value: Double, digits: Int) -> String {
    let places = min(max(digits, 0), 9)
    var scale: UInt64 = 1
    for _ in 0..<places { scale *= 10 }
    let scaled = (value.magnitude * Double(scale)).rounded(.toNearestOrAwayFromZero)
    guard value.isFinite, scaled < 1e18 else { return value.description }
    let n = UInt64(scaled)
    var text = String(n / scale)
    if places > 0 {
        let fraction = String(n % scale)
        text += "." + String(repeating: "0", count: places - fraction.count) + fraction
    }
    return (value < 0 && n != 0 ? "-" : "") + text
}
