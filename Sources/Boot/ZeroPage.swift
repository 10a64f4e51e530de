/// struct boot_params, "the zero page" (arch/x86/include/uapi/asm/bootparam.h,
/// Documentation/arch/x86/zero-page.rst).
enum ZeroPage {
    static let size = 4096
    // Offsets in struct boot_params (zero-page.rst).
    static let extRamdiskImage = 0x0C0
    static let extRamdiskSize = 0x0C4
    static let extCmdLinePtr = 0x0C8
    static let e820Entries = 0x1E8
    static let setupHeader = 0x1F1
    static let e820Table = 0x2D0
    /// E820_MAX_ENTRIES_ZEROPAGE.
    static let e820MaxEntries = 128

    /// boot.rst type_of_loader: 0xFF = "undefined" for loaders without an ID.
    static let loaderUndefined: UInt8 = 0xFF
    /// boot.rst "Sample Boot Configuration": heap_end = 0xE000, heap_end_ptr =
    /// heap_end - 0x200. Only the real-mode setup code uses it; the 64-bit
    /// entry skips that code, so this just keeps the header self-consistent.
    static let heapEndPtr: UInt16 = 0xE000 - 0x200

    /// The zero page for `image`: the image's setup header plus what the
    /// loader fills in (boot.rst "64-bit Boot Protocol").
    /// struct boot_params.acpi_rsdp_addr (arch/x86/include/uapi/asm/bootparam.h,
    /// offset 0x070; boot protocol 2.14): where the RSDP is, so Linux need not scan.
    static let acpiRSDPAddr = 0x070

    static func build(image: BzImage, cmdline: UInt64, initrd: Range<UInt64>?, e820: [E820Entry], rsdp: UInt64 = 0) -> [UInt8] {
        var w = ByteWriter(zeros: size)
        w.set(rsdp, at: acpiRSDPAddr)
        w.set(bytes: image.setupHeader, at: setupHeader)
        w.set(loaderUndefined, at: Int(BzImage.Offset.typeOfLoader))
        w.set(image.loadFlags | BzImage.canUseHeap, at: Int(BzImage.Offset.loadflags))
        w.set(heapEndPtr, at: Int(BzImage.Offset.heapEndPtr))
        // 64-bit values split into the header's low half and the ext_ high half.
        w.set(UInt32(truncatingIfNeeded: cmdline), at: Int(BzImage.Offset.cmdLinePtr))
        w.set(UInt32(truncatingIfNeeded: cmdline >> 32), at: extCmdLinePtr)
        let start = initrd?.lowerBound ?? 0
        let length = initrd.map { $0.upperBound - $0.lowerBound } ?? 0
        w.set(UInt32(truncatingIfNeeded: start), at: Int(BzImage.Offset.ramdiskImage))
        w.set(UInt32(truncatingIfNeeded: length), at: Int(BzImage.Offset.ramdiskSize))
        w.set(UInt32(truncatingIfNeeded: start >> 32), at: extRamdiskImage)
        w.set(UInt32(truncatingIfNeeded: length >> 32), at: extRamdiskSize)

        let table = e820.prefix(e820MaxEntries)
        w.set(UInt8(truncatingIfNeeded: table.count), at: e820Entries)
        for (i, entry) in table.enumerated() {
            let offset = e820Table + i * E820Entry.bootParamsEntrySize
            w.set(entry.address, at: offset)
            w.set(entry.size, at: offset + 8)
            w.set(entry.kind.rawValue, at: offset + 16)
        }
        return w.bytes
    }
}
