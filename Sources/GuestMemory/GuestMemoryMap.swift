/// The x86 guest physical layout SwiftVMM builds. RAM starts at 0; what does
/// not fit below `lowRAMLimit` continues at 4 GiB, leaving [3 GiB, 4 GiB) for
/// the 32-bit MMIO window, the IOAPIC (0xfec00000), the local APIC
/// (0xfee00000) and, later, PCI ECAM.
public struct GuestMemoryMap: Equatable, Sendable {
    /// RAM below this address is "low" RAM (3 GiB).
    public static let lowRAMLimit: UInt64 = 0xC000_0000
    /// Where RAM above the hole starts (4 GiB).
    public static let highRAMStart: UInt64 = 0x1_0000_0000
    /// Start of the MMIO hole below 4 GiB.
    public static let mmioHoleStart: UInt64 = lowRAMLimit
    public static let ioapicBase: UInt64 = 0xFEC0_0000
    public static let lapicBase: UInt64 = 0xFEE0_0000

    public struct RAMRegion: Equatable, Sendable {
        public let base: UInt64
        public let size: UInt64
        public var end: UInt64 { base + size }
    }

    public let ramBytes: UInt64
    public let regions: [RAMRegion]

    /// Lays out `ramBytes` of RAM. `ramBytes` must be positive and at most
    /// 1 TiB, which the config layer checks before calling this.
    public init(ramBytes: UInt64) {
        self.ramBytes = ramBytes
        if ramBytes <= Self.lowRAMLimit {
            regions = [RAMRegion(base: 0, size: ramBytes)]
        } else {
            regions = [RAMRegion(base: 0, size: Self.lowRAMLimit),
                       RAMRegion(base: Self.highRAMStart, size: ramBytes - Self.lowRAMLimit)]
        }
    }

    /// RAM below 4 GiB (where real-mode structures, the kernel and initrd go).
    public var lowRAMEnd: UInt64 { regions[0].end }

    /// First address above all RAM (start of the 64-bit MMIO window later).
    public var ramEnd: UInt64 { regions[regions.count - 1].end }
}
