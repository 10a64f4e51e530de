import Bits
import GuestMemory

/// A range of guest-physical (or I/O port) addresses.
public struct PCIAddressWindow: Equatable, Sendable, CustomStringConvertible {
    public let base: UInt64
    public let size: UInt64

    public init(base: UInt64, size: UInt64) {
        self.base = base
        self.size = size
    }

    /// One past the last address (saturates at 2^64 - 1).
    public var end: UInt64 {
        let (e, o) = base.addingReportingOverflow(size)
        return o ? UInt64.max : e
    }

    public func contains(_ address: UInt64) -> Bool {
        address >= base && address - base < size
    }

    public var description: String { "[\(hex(base)), \(hex(end)))" }
}

public enum PCIWindowKind: Hashable, Sendable, CustomStringConvertible {
    case mmio32, mmio64, io

    public var description: String {
        switch self {
        case .mmio32: return "32-bit MMIO window"
        case .mmio64: return "64-bit MMIO window"
        case .io: return "I/O port window"
        }
    }
}

/// Where the root bus's resources live in the guest. The ACPI writer
/// describes the same values: the three windows in the host bridge's _CRS,
/// the ECAM area in MCFG (and reserved in E820).
public struct PCIWindows: Equatable, Sendable {
    public let mmio32: PCIAddressWindow
    public let mmio64: PCIAddressWindow
    public let io: PCIAddressWindow
    /// ECAM base (PCIe 4.0 §7.2.2) and size: 1 MiB per bus.
    public let ecam: PCIAddressWindow

    public init(mmio32: PCIAddressWindow, mmio64: PCIAddressWindow, io: PCIAddressWindow, ecam: PCIAddressWindow) {
        self.mmio32 = mmio32
        self.mmio64 = mmio64
        self.io = io
        self.ecam = ecam
    }

    /// The 32-bit MMIO window: [3 GiB, 3.5 GiB), the start of the hole below
    /// 4 GiB (`GuestMemoryMap.mmioHoleStart`).
    public static let standardMMIO32 = PCIAddressWindow(base: 0xC000_0000, size: 0x2000_0000)
    /// ECAM for bus 0 only: 1 MiB at 0xE000_0000, right after the 32-bit
    /// window and well below the IOAPIC (0xFEC0_0000). MCFG: start bus 0,
    /// end bus 0.
    public static let standardECAM = PCIAddressWindow(base: 0xE000_0000, size: 0x10_0000)
    /// I/O ports 0x8000-0xFFFF: SeaBIOS's 0xC000-0xFFFF (src/fw/pciinit.c)
    /// and the 16 KiB below it, so an assigned device's 16 KiB I/O BAR fits
    /// beside the others; clear of the legacy ports and 0xCF8-0xCFF.
    public static let standardIO = PCIAddressWindow(base: 0x8000, size: 0x8000)
    /// Size of the 64-bit window: 64 GiB, enough for a 32 GiB BAR at its
    /// natural alignment wherever the window starts.
    public static let standardMMIO64Size: UInt64 = 64 << 30
    /// 64-bit window alignment: 1 GiB.
    public static let mmio64Alignment: UInt64 = 1 << 30

    /// SwiftVMM's layout for a machine with `memoryMap`'s RAM: the fixed
    /// 32-bit, ECAM and I/O windows above, and a 64-bit window that starts at
    /// the first 1 GiB boundary at or above both the end of RAM and 4 GiB
    /// (and `mmio64Floor`, when something else of the machine's sits above
    /// RAM). The guest's physical address width (CPUID 0x80000008) must
    /// cover `mmio64.end`.
    public static func standard(memoryMap: GuestMemoryMap, mmio64Size: UInt64 = standardMMIO64Size,
                                mmio64Floor: UInt64 = 0) -> PCIWindows {
        let start = max(GuestMemoryMap.highRAMStart,
                        alignUp(max(memoryMap.ramEnd, mmio64Floor), mmio64Alignment) ?? UInt64.max)
        return PCIWindows(mmio32: standardMMIO32,
                          mmio64: PCIAddressWindow(base: start, size: mmio64Size),
                          io: standardIO, ecam: standardECAM)
    }

    public func window(_ kind: PCIWindowKind) -> PCIAddressWindow {
        switch kind {
        case .mmio32: return mmio32
        case .mmio64: return mmio64
        case .io: return io
        }
    }
}

/// Assigns BAR addresses the way firmware would, so Linux keeps them:
/// 64-bit memory BARs go to the 64-bit window, 32-bit memory BARs and
/// expansion ROMs to the 32-bit window, I/O BARs to the I/O window. Each BAR
/// is naturally aligned (a BAR decodes an aligned power-of-two block, PCI 3.0
/// §6.2.5.1) and placed at the lowest free address (first fit, in the order
/// of requests). Memory BARs take at least a 4 KiB page each, so no two
/// devices share a page (KVM memory slots and VFIO mappings are per page).
public struct PCIBarAllocator: Sendable {
    /// Minimum footprint and alignment of a memory BAR: one 4 KiB page.
    public static let memoryGranule: UInt64 = 0x1000

    public let windows: PCIWindows
    private var used: [PCIWindowKind: [(base: UInt64, size: UInt64)]] = [:]

    public init(windows: PCIWindows) {
        self.windows = windows
    }

    /// Which window a BAR of `kind` is allocated from.
    public static func windowKind(for kind: PCIBarKind) -> PCIWindowKind {
        switch kind {
        case .memory32: return .mmio32
        case .memory64: return .mmio64
        case .io: return .io
        }
    }

    /// Bytes allocated in `window`.
    public func usedBytes(_ window: PCIWindowKind) -> UInt64 {
        (used[window] ?? []).reduce(0) { $0 &+ $1.size }
    }

    /// Allocates a BAR of `size` bytes (a power of two) for BAR `bar` of
    /// `device`, returning its address. Throws `PCIError.barDoesNotFit`
    /// naming the device and BAR when the window has no aligned gap.
    public mutating func allocate(size: UInt64, kind: PCIBarKind, device: PCIAddress, bar: Int) throws -> UInt64 {
        let wk = Self.windowKind(for: kind)
        let window = windows.window(wk)
        let footprint = kind.isMemory ? max(size, Self.memoryGranule) : size
        func fail() -> PCIError {
            .barDoesNotFit(device: device, bar: bar, size: size, kind: kind, window: wk,
                           windowBase: window.base, windowSize: window.size, used: usedBytes(wk))
        }
        guard footprint.isPowerOfTwo else { throw fail() }
        var ranges = used[wk] ?? []
        var candidate = alignUp(window.base, footprint)
        var insertAt = ranges.count
        for (i, r) in ranges.enumerated() {
            guard let c = candidate else { break }
            if fits(c, footprint, below: r.base) {
                insertAt = i
                break
            }
            let (rEnd, o) = r.base.addingReportingOverflow(r.size)
            candidate = o ? nil : alignUp(max(c, rEnd), footprint)
        }
        guard let address = candidate, fits(address, footprint, below: window.end),
              address >= window.base else { throw fail() }
        ranges.insert((base: address, size: footprint), at: insertAt)
        used[wk] = ranges
        return address
    }

    /// Reserves `[address, address + size)` for BAR `bar` of `device` at a
    /// place the user chose. The address must be aligned to the BAR's size
    /// (PCI 3.0 §6.2.5.1: the low address bits of a BAR are read-only 0),
    /// lie in the window of the BAR's kind and overlap nothing allocated.
    public mutating func reserve(address: UInt64, size: UInt64, kind: PCIBarKind, device: PCIAddress, bar: Int) throws {
        let wk = Self.windowKind(for: kind)
        let window = windows.window(wk)
        let footprint = kind.isMemory ? max(size, Self.memoryGranule) : size
        let what = bar == PCIBarRegion.romIndex ? "expansion ROM" : "BAR \(bar)"
        guard footprint.isPowerOfTwo, address & (footprint - 1) == 0 else {
            throw PCIError.invalidPlacement(device: device, bar: bar,
                reason: "\(what) (\(formatSize(size))) cannot be placed at \(hex(address)): a BAR's address is aligned to its size")
        }
        guard address >= window.base, fits(address, footprint, below: window.end) else {
            throw PCIError.invalidPlacement(device: device, bar: bar,
                reason: "\(what) (\(formatSize(size))) at \(hex(address)) is outside the \(wk) \(window)")
        }
        var ranges = used[wk] ?? []
        for r in ranges where address < r.base &+ r.size && r.base < address &+ footprint {
            throw PCIError.invalidPlacement(device: device, bar: bar,
                reason: "\(what) at \(hex(address)) overlaps another BAR at \(hex(r.base)) (\(formatSize(r.size)))")
        }
        ranges.append((base: address, size: footprint))
        ranges.sort { $0.base < $1.base }
        used[wk] = ranges
    }

    /// Returns a BAR's range to its window (for hot-unplug).
    public mutating func release(address: UInt64, kind: PCIBarKind) {
        let wk = Self.windowKind(for: kind)
        used[wk]?.removeAll { $0.base == address }
    }

    private func fits(_ address: UInt64, _ size: UInt64, below limit: UInt64) -> Bool {
        let (end, o) = address.addingReportingOverflow(size)
        return !o && end <= limit
    }
}
