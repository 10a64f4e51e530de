import Bits

/// Errors of the PCI layer. All come from the VMM's own configuration (device
/// definitions, slot choices, window sizes); guest accesses never throw.
public enum PCIError: Error, Equatable, CustomStringConvertible {
    /// A BAR definition the spec does not allow (size not a power of two, too
    /// small or large for its kind, a 64-bit BAR at index 5, an overlap).
    case invalidBar(index: Int, reason: String)
    /// The standard (0x40-0xFF) or extended (0x100-0xFFF) capability area
    /// has no room for a capability of `length` bytes.
    case capabilitySpaceFull(id: UInt16, length: Int)
    case invalidCapability(id: UInt16, reason: String)
    case invalidMSIX(String)
    case invalidSlot(Int)
    case slotInUse(Int)
    case busFull
    /// A BAR found by sizing at attach time does not fit in its window.
    case barDoesNotFit(device: PCIAddress, bar: Int, size: UInt64, kind: PCIBarKind,
                       window: PCIWindowKind, windowBase: UInt64, windowSize: UInt64, used: UInt64)
    case invalidWindow(PCIWindowKind, String)
    /// A BAR address the user asked for cannot be used.
    case invalidPlacement(device: PCIAddress, bar: Int, reason: String)

    public var description: String {
        switch self {
        case let .invalidBar(i, r):
            return "BAR \(i): \(r)"
        case let .capabilitySpaceFull(id, n):
            return "no room in config space for capability 0x\(String(id, radix: 16)) (\(n) bytes)"
        case let .invalidCapability(id, r):
            return "capability 0x\(String(id, radix: 16)): \(r)"
        case let .invalidMSIX(r):
            return "MSI-X: \(r)"
        case let .invalidSlot(s):
            return "PCI slot \(s) is not 1...31 (slot 0 is the host bridge)"
        case let .slotInUse(s):
            return "PCI slot \(s) is already in use"
        case .busFull:
            return "PCI bus 0 has no free slot (31 devices attached)"
        case let .barDoesNotFit(d, bar, size, kind, w, base, wsize, used):
            let last = base &+ wsize &- 1
            let what = bar == PCIBarRegion.romIndex ? "expansion ROM" : "BAR \(bar)"
            return "\(what) of \(d) (\(formatSize(size)), \(kind)) does not fit in the \(w) "
                + "\(hex(base))-\(hex(last)) (\(formatSize(wsize)), \(formatSize(used)) in use, "
                + "BARs are aligned to their size)"
        case let .invalidWindow(w, r):
            return "\(w): \(r)"
        case let .invalidPlacement(d, _, r):
            return "\(d): \(r)"
        }
    }
}
