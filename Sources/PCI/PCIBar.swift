import Bits

/// The three kinds of base address register (PCI 3.0 §6.2.5.1).
public enum PCIBarKind: Equatable, Sendable, CustomStringConvertible {
    /// 32-bit memory BAR (type 00b).
    case memory32
    /// 64-bit memory BAR (type 10b), using this register and the next.
    case memory64
    /// I/O space BAR.
    case io

    public var isMemory: Bool { self != .io }

    public var description: String {
        switch self {
        case .memory32: return "32-bit memory"
        case .memory64: return "64-bit memory"
        case .io: return "I/O"
        }
    }
}

/// One BAR as the guest (or the firmware-like allocator) programmed it.
public struct PCIBarRegion: Equatable, Sendable, CustomStringConvertible {
    /// The index of the expansion ROM BAR in `index` (Linux PCI_ROM_RESOURCE).
    public static let romIndex = 6

    /// 0...5 for the BARs (a 64-bit BAR has the index of its low register),
    /// `romIndex` for the expansion ROM.
    public let index: Int
    public let address: UInt64
    public let size: UInt64
    public let kind: PCIBarKind
    public let prefetchable: Bool

    public init(index: Int, address: UInt64, size: UInt64, kind: PCIBarKind, prefetchable: Bool) {
        self.index = index
        self.address = address
        self.size = size
        self.kind = kind
        self.prefetchable = prefetchable
    }

    /// True when `[address, address+count)` lies wholly inside the region.
    /// Never overflows, even for a region at the very top of the space.
    public func contains(_ addr: UInt64, count: UInt64) -> Bool {
        guard addr >= address else { return false }
        let rel = addr - address
        return rel < size && count <= size - rel
    }

    public var description: String {
        "BAR \(index) \(kind)\(prefetchable ? " prefetchable" : "") \(hex(address)) (\(formatSize(size)))"
    }
}

/// A BAR a device implements: what its sizing reads reveal.
public struct PCIBarDefinition: Equatable, Sendable {
    public let size: UInt64
    public let kind: PCIBarKind
    public let prefetchable: Bool

    public init(size: UInt64, kind: PCIBarKind, prefetchable: Bool = false) {
        self.size = size
        self.kind = kind
        self.prefetchable = prefetchable
    }
}
