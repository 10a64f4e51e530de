/// Where the loader puts things in guest physical memory. Sources/Boot/README.md
/// explains each choice; the short version is in the comments.
public enum BootLayout {
    /// 4 KiB x86 page (Intel SDM Vol. 3A 4.5).
    public static let pageSize: UInt64 = 0x1000

    /// GDT: 6 descriptors (null, code32, code64 = __BOOT_CS 0x10, data =
    /// __BOOT_DS 0x18, 16-byte TSS descriptor at 0x20). Firecracker's
    /// BOOT_GDT_OFFSET (arch/x86_64/regs.rs).
    public static let gdtAddress: UInt64 = 0x500
    /// Empty IDT right after the 48-byte GDT. Firecracker uses 0x520, but its
    /// GDT has 4 entries; ours needs 0x500..<0x530 for selectors up to 0x20.
    public static let idtAddress: UInt64 = 0x530

    /// PVH: struct hvm_start_info (56 bytes, xen/include/public/arch-x86/hvm/start_info.h).
    /// Firecracker's PVH_INFO_START (arch/x86_64/layout.rs).
    public static let pvhStartInfoAddress: UInt64 = 0x6000
    /// PVH: the hvm_modlist_entry array (one entry, the initramfs). Firecracker's MODLIST_START.
    public static let pvhModlistAddress: UInt64 = 0x6040
    /// PVH: the hvm_memmap_table_entry array, in the same page as the start info.
    public static let pvhMemmapAddress: UInt64 = 0x6080

    /// The zero page, struct boot_params (4096 bytes). Firecracker's ZERO_PAGE_START.
    public static let zeroPageAddress: UInt64 = 0x7000
    /// Boot CPU stack pointer, grows down towards the zero page's end (0x8000).
    /// Firecracker's BOOT_STACK_POINTER.
    public static let bootStackPointer: UInt64 = 0x8FF0

    /// Identity-mapping page tables: PML4, one PDPT, then four page directories
    /// of 2 MiB pages (0xB000..<0xF000) covering [0, 4 GiB).
    public static let pml4Address: UInt64 = 0x9000
    public static let pdptAddress: UInt64 = 0xA000
    public static let pdAddress: UInt64 = 0xB000
    public static let pageDirectoryCount = 4
    /// Bytes identity-mapped by the boot page tables (4 GiB).
    public static let identityMappedBytes: UInt64 = 0x1_0000_0000
    /// First byte after the page tables.
    public static let pageTablesEnd: UInt64 = pdAddress + UInt64(pageDirectoryCount) * pageSize

    /// Kernel command line. Firecracker's CMDLINE_START; boot.rst: anywhere
    /// between the end of the setup heap and 0xA0000.
    public static let cmdlineAddress: UInt64 = 0x20000
    /// The command line must end before the MP table (so it can hold at most
    /// `cmdlineAreaEnd - cmdlineAddress - 1` bytes plus the NUL).
    public static let cmdlineAreaEnd: UInt64 = mpTableAddress

    /// MP floating pointer + configuration table: the first KiB of the EBDA
    /// (MP spec 1.4 section 4: searched in the first KiB of the EBDA and in
    /// the last KiB of base memory 639K..640K). Firecracker's SYSTEM_MEM_START.
    public static let mpTableAddress: UInt64 = 0x9FC00
    /// Start of the e820-reserved range [0x9FC00, 1 MiB) (EBDA, VGA hole, BIOS).
    public static let reservedLowStart: UInt64 = 0x9FC00
    /// 1 MiB: the bzImage protected-mode kernel load address (boot.rst
    /// "Loading The Rest of The Kernel": 0x100000 for bzImage kernels).
    public static let highMemoryStart: UInt64 = 0x10_0000
    public static let kernelLoadAddress: UInt64 = highMemoryStart
}
