import Bits
import GuestMemory

/// Which entry protocol the boot CPU starts in.
public enum BootProtocol: String, Equatable, Sendable {
    /// bzImage, 64-bit Linux boot protocol (boot.rst "64-bit Boot Protocol").
    case linux64
    /// ELF vmlinux through the PVH entry (32-bit protected mode).
    case pvh
}

/// What `LinuxLoader.load` put where, and the state to start the boot CPU in.
public struct BootResult: Equatable, Sendable {
    public let bootProtocol: BootProtocol
    public let cpu: BootCPUState
    public var entryPoint: UInt64 { cpu.rip }
    /// Bytes of the image written to guest memory (bzImage payload, or from
    /// the lowest to the highest PT_LOAD segment, zeroed tails included).
    public let kernelRange: Range<UInt64>
    /// First byte the kernel may need before it reads the memory map
    /// (bzImage: runtime start + init_size; ELF: highest segment end).
    public let kernelMemoryEnd: UInt64
    public let initrdRange: Range<UInt64>?
    public let cmdlineAddress: UInt64
    /// Command line length in bytes, without the NUL.
    public let cmdlineLength: Int
    /// The zero page (linux64) or hvm_start_info (pvh).
    public let bootInfoAddress: UInt64
    public let mpTableAddress: UInt64
    public let vcpus: Int
    public let memoryMap: [E820Entry]

    /// One line per fact, for the VMM's log.
    public var summary: String {
        var lines = [
            "boot protocol: \(bootProtocol == .linux64 ? "Linux 64-bit (bzImage)" : "PVH (ELF vmlinux)")",
            "entry: \(hex(entryPoint))",
            "kernel: [\(hex(kernelRange.lowerBound)), \(hex(kernelRange.upperBound))), "
                + "needs memory up to \(hex(kernelMemoryEnd))",
        ]
        if let initrd = initrdRange {
            lines.append("initrd: [\(hex(initrd.lowerBound)), \(hex(initrd.upperBound))) "
                + "(\(initrd.upperBound - initrd.lowerBound) bytes)")
        } else {
            lines.append("initrd: none")
        }
        lines.append("cmdline: \(hex(cmdlineAddress)) (\(cmdlineLength) bytes)")
        lines.append("\(bootProtocol == .linux64 ? "zero page" : "hvm_start_info"): \(hex(bootInfoAddress))")
        lines.append("MP table: \(hex(mpTableAddress)) (\(vcpus) vCPU\(vcpus == 1 ? "" : "s"))")
        for entry in memoryMap {
            lines.append("e820: [\(hex(entry.address)), \(hex(entry.address &+ entry.size))) "
                + (entry.kind == .ram ? "RAM" : "reserved"))
        }
        return lines.joined(separator: "\n")
    }
}

/// Puts a kernel, its initramfs and command line into guest memory with
/// everything the entry protocol needs, and returns the boot CPU's state.
/// Reads no files and calls no KVM: the VMM passes bytes in and applies the
/// returned state. Sources/Boot/README.md has the memory layout.
public enum LinuxLoader {
    /// Linux x86 COMMAND_LINE_SIZE (arch/x86/include/asm/setup.h) is 2048
    /// including the NUL; the PVH entry copies at most that much.
    public static let pvhCmdlineLimit = 2047

    /// Validates everything first, then writes, so a failed load leaves the
    /// reason in the error and not a half-built guest behind.
    /// - Parameter rsdpAddress: where the VMM put the ACPI RSDP (0: no ACPI);
    ///   given to Linux in boot_params.acpi_rsdp_addr or hvm_start_info.rsdp_paddr.
    public static func load(kernel: KernelImage, initrd: [UInt8]?, cmdline: String, vcpus: Int,
                            memoryMap: GuestMemoryMap, rsdpAddress: UInt64 = 0,
                            into memory: GuestMemoryAccess) throws -> BootResult {
        guard vcpus >= 1, vcpus <= MPTable.maxVCPUs else { throw BootError.invalidVCPUCount(vcpus) }
        let lowRAMEnd = memoryMap.lowRAMEnd
        // The boot structures, the EBDA and the MP table all live below 1 MiB.
        guard lowRAMEnd >= BootLayout.highMemoryStart else {
            throw BootError.memoryTooSmall(needed: BootLayout.highMemoryStart, available: lowRAMEnd)
        }
        let mpTable = try MPTable.build(vcpus: vcpus, at: BootLayout.mpTableAddress)
        let e820 = E820Entry.map(for: memoryMap)
        let initrdBytes = initrd.flatMap { $0.isEmpty ? nil : $0 }

        switch kernel {
        case let .bzImage(image):
            let cmd = try cmdlineBytes(cmdline, limit: min(Int(clamping: image.cmdlineSize), cmdlineCapacity))
            let loadAddress = BootLayout.kernelLoadAddress
            let memoryEnd = try image.memoryEnd(loadAddress: loadAddress)
            guard memoryEnd <= lowRAMEnd else {
                throw BootError.memoryTooSmall(needed: memoryEnd, available: lowRAMEnd)
            }
            // initrd_addr_max is the highest byte the initramfs may occupy.
            let ceiling = min(UInt64(image.initrdAddrMax) + 1, lowRAMEnd)
            let initrdRange = try placeInitrd(initrdBytes, floor: memoryEnd, ceiling: ceiling)
            let zeroPage = ZeroPage.build(image: image, cmdline: BootLayout.cmdlineAddress, initrd: initrdRange,
                                          e820: e820, rsdp: rsdpAddress)

            try writeCommon(mpTable: mpTable, cmdline: cmd, into: memory)
            try write(PageTables.bytes, at: BootLayout.pml4Address, "boot page tables", into: memory)
            try write(zeroPage, at: BootLayout.zeroPageAddress, "zero page (boot_params)", into: memory)
            try write(image.payload, at: loadAddress, "bzImage protected-mode kernel", into: memory)
            if let bytes = initrdBytes, let range = initrdRange {
                try write(bytes, at: range.lowerBound, "initramfs", into: memory)
            }
            let entry = loadAddress + BzImage.entry64Offset
            return BootResult(
                bootProtocol: .linux64, cpu: .linux64(entry: entry, zeroPage: BootLayout.zeroPageAddress),
                kernelRange: loadAddress..<(loadAddress + image.payloadSize), kernelMemoryEnd: memoryEnd,
                initrdRange: initrdRange, cmdlineAddress: BootLayout.cmdlineAddress, cmdlineLength: cmd.count - 1,
                bootInfoAddress: BootLayout.zeroPageAddress, mpTableAddress: BootLayout.mpTableAddress,
                vcpus: vcpus, memoryMap: e820)

        case let .elf(elf):
            let cmd = try cmdlineBytes(cmdline, limit: min(pvhCmdlineLimit, cmdlineCapacity))
            // PVH starts with paging off, so everything sits in low RAM.
            for segment in elf.segments where segment.end > lowRAMEnd {
                throw BootError.segmentOutsideRAM(index: segment.index, start: segment.physicalAddress,
                                                  end: segment.end, ramEnd: lowRAMEnd)
            }
            let kernelEnd = elf.highestEnd
            let initrdRange = try placeInitrd(initrdBytes, floor: kernelEnd, ceiling: lowRAMEnd)
            // One zeroed page holds start info, module list and memory map.
            var page = ByteWriter(zeros: Int(BootLayout.pageSize))
            page.set(bytes: PVHStartInfo.startInfo(cmdline: BootLayout.cmdlineAddress,
                                                   modules: initrdRange == nil ? 0 : 1, memmapEntries: e820.count,
                                                   rsdp: rsdpAddress),
                     at: 0)
            if let range = initrdRange {
                page.set(bytes: PVHStartInfo.module(range),
                         at: Int(BootLayout.pvhModlistAddress - BootLayout.pvhStartInfoAddress))
            }
            page.set(bytes: PVHStartInfo.memmap(e820),
                     at: Int(BootLayout.pvhMemmapAddress - BootLayout.pvhStartInfoAddress))

            try writeCommon(mpTable: mpTable, cmdline: cmd, into: memory)
            try write(page.bytes, at: BootLayout.pvhStartInfoAddress, "PVH start info", into: memory)
            for segment in elf.segments {
                let what = "ELF PT_LOAD segment \(segment.index)"
                try write(segment.data, at: segment.physicalAddress, what, into: memory)
                let tail = segment.memorySize - segment.fileSize
                if tail > 0 {
                    let tailStart = segment.physicalAddress + segment.fileSize
                    do { try memory.zero(at: GuestAddress(tailStart), length: tail) } catch let error as GuestMemoryError {
                        throw BootError.guestMemory(what: "\(what) zero fill at \(hex(tailStart))", error)
                    }
                }
            }
            if let bytes = initrdBytes, let range = initrdRange {
                try write(bytes, at: range.lowerBound, "initramfs", into: memory)
            }
            return BootResult(
                bootProtocol: .pvh, cpu: .pvh(entry: elf.pvhEntry, startInfo: BootLayout.pvhStartInfoAddress),
                kernelRange: elf.lowestAddress..<kernelEnd, kernelMemoryEnd: kernelEnd,
                initrdRange: initrdRange, cmdlineAddress: BootLayout.cmdlineAddress, cmdlineLength: cmd.count - 1,
                bootInfoAddress: BootLayout.pvhStartInfoAddress, mpTableAddress: BootLayout.mpTableAddress,
                vcpus: vcpus, memoryMap: e820)
        }
    }

    /// Bytes available for the command line and its NUL below the MP table.
    static let cmdlineCapacity = Int(BootLayout.cmdlineAreaEnd - BootLayout.cmdlineAddress) - 1

    /// The command line's UTF-8 bytes plus the NUL, if it is at most `limit`
    /// bytes and has no NUL of its own.
    static func cmdlineBytes(_ cmdline: String, limit: Int) throws -> [UInt8] {
        var bytes = Array(cmdline.utf8)
        if let nul = bytes.firstIndex(of: 0) { throw BootError.cmdlineContainsNUL(offset: nul) }
        guard bytes.count <= limit else { throw BootError.cmdlineTooLong(length: bytes.count, limit: limit) }
        bytes.append(0)
        return bytes
    }

    /// The highest page-aligned range of `initrd.count` bytes inside
    /// [floor, ceiling), page-aligned (boot.rst only requires the initramfs to
    /// stay below initrd_addr_max; the top of RAM keeps it away from where
    /// the kernel decompresses itself, as other loaders do).
    static func placeInitrd(_ initrd: [UInt8]?, floor: UInt64, ceiling: UInt64) throws -> Range<UInt64>? {
        guard let initrd else { return nil }
        let size = UInt64(initrd.count)
        let lowest = alignUp(floor, BootLayout.pageSize) ?? UInt64.max
        guard size <= ceiling else {
            throw BootError.initrdDoesNotFit(size: size, ceiling: ceiling, floor: lowest)
        }
        let start = alignDown(ceiling - size, BootLayout.pageSize)
        guard start >= lowest else {
            throw BootError.initrdDoesNotFit(size: size, ceiling: ceiling, floor: lowest)
        }
        return start..<(start + size)
    }

    /// GDT, IDT, command line and MP table: the same for both protocols.
    static func writeCommon(mpTable: [UInt8], cmdline: [UInt8], into memory: GuestMemoryAccess) throws {
        var gdtAndIDT = BootGDT.bytes
        gdtAndIDT += [UInt8](repeating: 0, count: Int(BootLayout.idtAddress - BootLayout.gdtAddress) - gdtAndIDT.count)
        gdtAndIDT += [UInt8](repeating: 0, count: BootGDT.idtBytes)
        try write(gdtAndIDT, at: BootLayout.gdtAddress, "GDT and IDT", into: memory)
        try write(cmdline, at: BootLayout.cmdlineAddress, "kernel command line", into: memory)
        try write(mpTable, at: BootLayout.mpTableAddress, "MP table", into: memory)
    }

    static func write(_ bytes: ArraySlice<UInt8>, at address: UInt64, _ what: String,
                      into memory: GuestMemoryAccess) throws {
        do {
            try bytes.withUnsafeBytes { try memory.write($0, at: GuestAddress(address)) }
        } catch let error as GuestMemoryError {
            throw BootError.guestMemory(what: "\(what) at \(hex(address))", error)
        }
    }

    /// What the loader reads of an image at a time: its payload goes into guest
    /// memory through one buffer of this size, never the whole file at once.
    static let imageChunkBytes: UInt64 = 1 << 20

    /// Copies an image range (a bzImage payload, an ELF segment) into guest
    /// memory at `address`, `imageChunkBytes` at a time.
    static func write(_ range: ImageRange, at address: UInt64, _ what: String, into memory: GuestMemoryAccess) throws {
        var done: UInt64 = 0
        while done < range.count {
            let n = min(range.count - done, imageChunkBytes)
            guard let chunk = range.source.read(range.offset + done, Int(n)) else {
                throw BootError.truncated(what: "\(what) (the file changed or could not be read while it was loaded)",
                                          offset: range.offset + done, length: n, fileSize: range.source.count)
            }
            try write(chunk, at: address + done, what, into: memory)
            done += n
        }
    }

    static func write(_ bytes: [UInt8], at address: UInt64, _ what: String, into memory: GuestMemoryAccess) throws {
        try write(bytes[...], at: address, what, into: memory)
    }
}
