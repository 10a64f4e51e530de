import Bits

/// A parsed ELF64 x86-64 vmlinux that boots through the PVH entry point
/// (xen/include/public/arch-x86/hvm/start_info.h; Linux arch/x86/platform/pvh).
public struct ELFKernel: Equatable, Sendable {
    /// One PT_LOAD program header, loaded at its physical address.
    public struct LoadSegment: Equatable, Sendable {
        /// Index in the program header table (for error messages).
        public let index: Int
        /// p_paddr: where the segment goes in guest physical memory.
        public let physicalAddress: UInt64
        /// p_memsz: bytes the segment occupies (the tail past p_filesz is zeroed).
        public let memorySize: UInt64
        /// The p_filesz bytes from the file.
        public let data: ImageRange

        public var fileSize: UInt64 { data.count }
        /// p_paddr + p_memsz (checked not to overflow when parsed).
        public var end: UInt64 { physicalAddress &+ memorySize }
    }

    /// ELF64 layout (System V gABI, "ELF Header", "Program Header", "Sections", "Note Section").
    enum ELF {
        static let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46] // "\x7fELF"
        static let headerSize: UInt64 = 64                   // sizeof(Elf64_Ehdr)
        static let classOffset: UInt64 = 4                   // e_ident[EI_CLASS]
        static let dataOffset: UInt64 = 5                    // e_ident[EI_DATA]
        static let class64: UInt8 = 2                        // ELFCLASS64
        static let dataLSB: UInt8 = 1                        // ELFDATA2LSB
        static let typeOffset: UInt64 = 16                   // e_type
        static let machineOffset: UInt64 = 18                // e_machine
        static let entryOffset: UInt64 = 24                  // e_entry
        static let phoffOffset: UInt64 = 32                  // e_phoff
        static let shoffOffset: UInt64 = 40                  // e_shoff
        static let phentsizeOffset: UInt64 = 54              // e_phentsize
        static let phnumOffset: UInt64 = 56                  // e_phnum
        static let shentsizeOffset: UInt64 = 58              // e_shentsize
        static let shnumOffset: UInt64 = 60                  // e_shnum
        static let typeExec: UInt16 = 2                      // ET_EXEC
        static let machineX86_64: UInt16 = 62                // EM_X86_64
        static let phdrSize: UInt64 = 56                     // sizeof(Elf64_Phdr)
        static let shdrSize: UInt64 = 64                     // sizeof(Elf64_Shdr)
        static let ptLoad: UInt32 = 1                        // PT_LOAD
        static let ptNote: UInt32 = 4                        // PT_NOTE
        static let shtNote: UInt32 = 7                       // SHT_NOTE
        static let noteHeaderSize: UInt64 = 12               // Elf64_Nhdr: namesz, descsz, type
        static let noteAlignment: UInt64 = 4                 // Linux include/linux/elfnote.h .balign 4
    }

    /// XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h): the 32-bit
    /// physical entry point for PVH.
    static let xenElfnotePhys32Entry: UInt32 = 18
    /// Note name "Xen" with its NUL (namesz 4).
    static let xenNoteName: [UInt8] = [0x58, 0x65, 0x6E, 0x00]

    /// e_entry (the kernel's own 64-bit entry, informational: PVH uses `pvhEntry`).
    public let elfEntry: UInt64
    /// Physical 32-bit PVH entry point from the Xen note.
    public let pvhEntry: UInt32
    /// Non-empty PT_LOAD segments, sorted by physical address, not overlapping.
    public let segments: [LoadSegment]

    /// Lowest physical address any segment occupies.
    public var lowestAddress: UInt64 { segments.first?.physicalAddress ?? 0 }
    /// First byte after the highest segment (including its zeroed tail).
    public var highestEnd: UInt64 { segments.map(\.end).max() ?? 0 }

    static func hasMagic(_ r: ByteReader) -> Bool {
        r.bytes(0, UInt64(ELF.magic.count)) == ELF.magic
    }

    init(parsing r: ByteReader) throws {
        let fileSize = r.count
        guard r.contains(0, ELF.headerSize),
              let elfClass = r.u8(ELF.classOffset), let data = r.u8(ELF.dataOffset),
              let type = r.u16(ELF.typeOffset), let machine = r.u16(ELF.machineOffset),
              let entry = r.u64(ELF.entryOffset), let phoff = r.u64(ELF.phoffOffset),
              let shoff = r.u64(ELF.shoffOffset), let phentsize = r.u16(ELF.phentsizeOffset),
              let phnum = r.u16(ELF.phnumOffset), let shentsize = r.u16(ELF.shentsizeOffset),
              let shnum = r.u16(ELF.shnumOffset)
        else {
            throw BootError.truncated(what: "ELF header", offset: 0, length: ELF.headerSize, fileSize: fileSize)
        }
        guard elfClass == ELF.class64 else {
            throw BootError.invalidImage(detail: "ELF class \(elfClass) is not ELFCLASS64 (2): only a 64-bit vmlinux boots")
        }
        guard data == ELF.dataLSB else {
            throw BootError.invalidImage(detail: "ELF data encoding \(data) is not little-endian (ELFDATA2LSB, 1)")
        }
        guard machine == ELF.machineX86_64 else {
            throw BootError.invalidImage(detail: "ELF machine \(machine) is not x86-64 (EM_X86_64, 62)")
        }
        guard type == ELF.typeExec else {
            throw BootError.invalidImage(detail: "ELF type \(type) is not an executable (ET_EXEC, 2)")
        }
        guard phnum > 0 else { throw BootError.invalidImage(detail: "ELF file has no program headers") }
        guard UInt64(phentsize) >= ELF.phdrSize else {
            throw BootError.invalidImage(detail: "e_phentsize \(phentsize) is smaller than Elf64_Phdr (56)")
        }
        // phnum and phentsize are 16-bit, so the product fits in UInt64.
        let tableSize = UInt64(phnum) * UInt64(phentsize)
        guard r.contains(phoff, tableSize) else {
            throw BootError.truncated(what: "ELF program header table (\(phnum) entries)", offset: phoff,
                                      length: tableSize, fileSize: fileSize)
        }

        var segments: [LoadSegment] = []
        var pvhEntry: UInt64?
        for index in 0..<Int(phnum) {
            let ph = phoff + UInt64(index) * UInt64(phentsize)
            guard let pType = r.u32(ph), let pOffset = r.u64(ph + 8), let pPaddr = r.u64(ph + 24),
                  let pFilesz = r.u64(ph + 32), let pMemsz = r.u64(ph + 40)
            else {
                throw BootError.truncated(what: "ELF program header \(index)", offset: ph, length: ELF.phdrSize,
                                          fileSize: fileSize)
            }
            switch pType {
            case ELF.ptLoad:
                guard pFilesz <= pMemsz else {
                    throw BootError.invalidImage(detail: "PT_LOAD segment \(index) has p_filesz \(hex(pFilesz)) "
                        + "larger than p_memsz \(hex(pMemsz))")
                }
                guard let bytes = r.range(pOffset, pFilesz) else {
                    throw BootError.truncated(what: "PT_LOAD segment \(index) data", offset: pOffset,
                                              length: pFilesz, fileSize: fileSize)
                }
                let (end, overflow) = pPaddr.addingReportingOverflow(pMemsz)
                guard !overflow else {
                    throw BootError.sizeOverflow(detail: "PT_LOAD segment \(index) at \(hex(pPaddr)) "
                        + "+ p_memsz \(hex(pMemsz))")
                }
                if pMemsz == 0 { continue }
                guard pPaddr >= BootLayout.highMemoryStart else {
                    throw BootError.segmentInReservedLowMemory(index: index, start: pPaddr, end: end)
                }
                segments.append(LoadSegment(index: index, physicalAddress: pPaddr, memorySize: pMemsz, data: bytes))
            case ELF.ptNote:
                guard r.contains(pOffset, pFilesz) else {
                    throw BootError.truncated(what: "PT_NOTE segment \(index)", offset: pOffset, length: pFilesz,
                                              fileSize: fileSize)
                }
                if pvhEntry == nil { pvhEntry = try Self.findPVHEntry(r, offset: pOffset, size: pFilesz) }
            default:
                continue
            }
        }
        guard !segments.isEmpty else {
            throw BootError.invalidImage(detail: "ELF file has no non-empty PT_LOAD segments")
        }
        segments.sort { $0.physicalAddress < $1.physicalAddress }
        for (previous, next) in zip(segments, segments.dropFirst()) where next.physicalAddress < previous.end {
            throw BootError.invalidImage(detail: "PT_LOAD segments \(previous.index) [\(hex(previous.physicalAddress)), "
                + "\(hex(previous.end))) and \(next.index) [\(hex(next.physicalAddress)), \(hex(next.end))) overlap")
        }

        // Linux puts the note in a PT_NOTE segment; also look in SHT_NOTE
        // sections for images whose notes are only described there.
        if pvhEntry == nil {
            pvhEntry = try Self.findPVHEntryInSections(r, shoff: shoff, shentsize: shentsize, shnum: shnum)
        }
        guard let found = pvhEntry else { throw BootError.noPVHEntry }
        guard let entry32 = UInt32(exactly: found) else {
            throw BootError.invalidPVHNote(detail: "entry \(hex(found)) is above 4 GiB; PVH starts in 32-bit mode")
        }
        guard segments.contains(where: { UInt64(entry32) >= $0.physicalAddress && UInt64(entry32) < $0.end }) else {
            throw BootError.invalidPVHNote(detail: "entry \(hex(UInt64(entry32))) is not inside any PT_LOAD segment")
        }
        self.elfEntry = entry
        self.pvhEntry = entry32
        self.segments = segments
    }

    /// Walks the notes in `[offset, offset+size)` and returns the PVH entry,
    /// or nil when there is none. A note that runs past the end stops the walk.
    static func findPVHEntry(_ r: ByteReader, offset: UInt64, size: UInt64) throws -> UInt64? {
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow else { return nil }
        var cursor = offset
        while cursor < end, end - cursor >= ELF.noteHeaderSize {
            guard let namesz = r.u32(cursor), let descsz = r.u32(cursor + 4), let type = r.u32(cursor + 8),
                  let paddedName = alignUp(UInt64(namesz), ELF.noteAlignment),
                  let paddedDesc = alignUp(UInt64(descsz), ELF.noteAlignment)
            else { return nil }
            let nameOffset = cursor + ELF.noteHeaderSize
            // Both padded sizes are below 2^33, so these sums cannot overflow
            // for offsets inside an array.
            let descOffset = nameOffset + paddedName
            guard descOffset <= end, UInt64(descsz) <= end - descOffset else { return nil }
            if type == xenElfnotePhys32Entry, namesz == UInt32(xenNoteName.count),
               r.bytes(nameOffset, UInt64(namesz)) == xenNoteName {
                switch descsz {
                case 4: return r.u32(descOffset).map(UInt64.init)
                case 8: return r.u64(descOffset)
                default:
                    throw BootError.invalidPVHNote(detail: "descriptor is \(descsz) bytes, expected 4 or 8")
                }
            }
            cursor = descOffset + paddedDesc
        }
        return nil
    }

    /// Looks for the PVH note in SHT_NOTE sections. A section header table that
    /// is missing or out of range is simply not searched: the loader never needs it.
    static func findPVHEntryInSections(_ r: ByteReader, shoff: UInt64, shentsize: UInt16,
                                       shnum: UInt16) throws -> UInt64? {
        guard shoff != 0, shnum > 0, UInt64(shentsize) >= ELF.shdrSize,
              r.contains(shoff, UInt64(shnum) * UInt64(shentsize))
        else { return nil }
        for index in 0..<UInt64(shnum) {
            let sh = shoff + index * UInt64(shentsize)
            guard let type = r.u32(sh + 4), type == ELF.shtNote,
                  let offset = r.u64(sh + 24), let size = r.u64(sh + 32), r.contains(offset, size)
            else { continue }
            if let entry = try findPVHEntry(r, offset: offset, size: size) { return entry }
        }
        return nil
    }
}
