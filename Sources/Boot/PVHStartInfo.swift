/// struct hvm_start_info and friends (xen/include/public/arch-x86/hvm/start_info.h).
enum PVHStartInfo {
    /// XEN_HVM_START_MAGIC_VALUE ("xEn3" with the 0x80 bit of the "E" set).
    static let magic: UInt32 = 0x336E_C578
    /// Version 1 adds memmap_paddr / memmap_entries.
    static let version: UInt32 = 1
    /// sizeof(struct hvm_start_info).
    static let size = 56
    /// sizeof(struct hvm_modlist_entry).
    static let modlistEntrySize = 32

    /// hvm_start_info: magic, version, flags, nr_modules, modlist_paddr,
    /// cmdline_paddr, rsdp_paddr (0: no ACPI), memmap_paddr, memmap_entries, reserved.
    static func startInfo(cmdline: UInt64, modules: Int, memmapEntries: Int, rsdp: UInt64 = 0) -> [UInt8] {
        var w = ByteWriter()
        w.append(magic)
        w.append(version)
        w.append(UInt32(0))                                            // flags
        w.append(UInt32(truncatingIfNeeded: modules))
        w.append(modules > 0 ? BootLayout.pvhModlistAddress : 0)
        w.append(cmdline)
        w.append(rsdp)                                                 // rsdp_paddr (0: no ACPI)
        w.append(BootLayout.pvhMemmapAddress)
        w.append(UInt32(truncatingIfNeeded: memmapEntries))
        w.append(UInt32(0))                                            // reserved
        return w.bytes
    }

    /// hvm_modlist_entry: paddr, size, cmdline_paddr (0: none), reserved.
    static func module(_ range: Range<UInt64>) -> [UInt8] {
        var w = ByteWriter()
        w.append(range.lowerBound)
        w.append(range.upperBound - range.lowerBound)
        w.append(UInt64(0))
        w.append(UInt64(0))
        return w.bytes
    }

    /// hvm_memmap_table_entry array: addr, size, type, reserved.
    static func memmap(_ entries: [E820Entry]) -> [UInt8] {
        var w = ByteWriter()
        for entry in entries {
            w.append(entry.address)
            w.append(entry.size)
            w.append(entry.kind.rawValue)
            w.append(UInt32(0))
        }
        return w.bytes
    }
}
