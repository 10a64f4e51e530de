import GuestMemory

/// One memory map entry, used both for boot_params.e820_table and for PVH's
/// hvm_memmap_table_entry (whose types are defined to match e820's).
public struct E820Entry: Equatable, Sendable {
    public enum Kind: UInt32, Sendable {
        /// E820_TYPE_RAM (arch/x86/include/asm/e820/types.h) = XEN_HVM_MEMMAP_TYPE_RAM.
        case ram = 1
        /// E820_TYPE_RESERVED = XEN_HVM_MEMMAP_TYPE_RESERVED.
        case reserved = 2
    }

    public let address: UInt64
    public let size: UInt64
    public let kind: Kind

    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address
        self.size = size
        self.kind = kind
    }

    /// struct boot_e820_entry: addr u64, size u64, type u32 (20 bytes, packed).
    static let bootParamsEntrySize = 20
    /// struct hvm_memmap_table_entry: addr u64, size u64, type u32, reserved u32 (24 bytes).
    static let pvhEntrySize = 24

    /// The guest memory map: base memory up to the EBDA, the reserved EBDA /
    /// VGA / BIOS range up to 1 MiB, low RAM above 1 MiB, and RAM above 4 GiB
    /// when there is any. Nothing else is reserved: the MMIO hole is simply not
    /// RAM. Requires `lowRAMEnd >= 1 MiB` (the loader checks that first).
    public static func map(for memoryMap: GuestMemoryMap) -> [E820Entry] {
        var entries = [
            E820Entry(address: 0, size: BootLayout.reservedLowStart, kind: .ram),
            E820Entry(address: BootLayout.reservedLowStart,
                      size: BootLayout.highMemoryStart - BootLayout.reservedLowStart, kind: .reserved),
        ]
        let low = memoryMap.lowRAMEnd
        if low > BootLayout.highMemoryStart {
            entries.append(E820Entry(address: BootLayout.highMemoryStart, size: low - BootLayout.highMemoryStart,
                                     kind: .ram))
        }
        for region in memoryMap.regions.dropFirst() where region.size > 0 {
            entries.append(E820Entry(address: region.base, size: region.size, kind: .ram))
        }
        return entries
    }
}
