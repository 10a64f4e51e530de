/// Identity-mapping page tables for the 64-bit entry: one PML4 entry, four
/// PDPT entries and 4 x 512 2-MiB pages covering [0, 4 GiB) (Intel SDM Vol. 3A
/// 4.5, "4-Level Paging"). Four GiB rather than Firecracker's one: boot.rst
/// asks for the kernel's init_size range, the zero page and the command line
/// to be mapped, and the initramfs sits at the top of low RAM (up to 3 GiB);
/// mapping all of the 32-bit space covers wherever the loader puts them for
/// 16 KiB of page directories.
public enum PageTables {
    /// Present | writable (SDM Table 4-15 / 4-17).
    static let presentWritable: UInt64 = 0x3
    /// Present | writable | PS (2 MiB page, SDM Table 4-18).
    static let largePage: UInt64 = 0x83
    static let entriesPerTable = 512
    /// 2 MiB.
    static let largePageSize: UInt64 = 0x20_0000

    /// Bytes for [pml4Address, pageTablesEnd): PML4, PDPT, then the page directories.
    public static var bytes: [UInt8] {
        let page = Int(BootLayout.pageSize)
        var w = ByteWriter(zeros: Int(BootLayout.pageTablesEnd - BootLayout.pml4Address))
        w.set(BootLayout.pdptAddress | presentWritable, at: 0)
        for directory in 0..<BootLayout.pageDirectoryCount {
            let pdAddress = BootLayout.pdAddress + UInt64(directory) * BootLayout.pageSize
            w.set(pdAddress | presentWritable, at: page + directory * 8)
            for entry in 0..<entriesPerTable {
                let frame = UInt64(directory * entriesPerTable + entry) * largePageSize
                w.set(frame | largePage, at: 2 * page + directory * page + entry * 8)
            }
        }
        return w.bytes
    }
}
