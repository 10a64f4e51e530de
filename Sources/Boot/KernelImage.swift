import Bits

/// A kernel the loader can boot: a bzImage (64-bit Linux boot protocol) or an
/// ELF vmlinux with a PVH entry note.
public enum KernelImage: Equatable, Sendable {
    case bzImage(BzImage)
    case elf(ELFKernel)

    /// "MZ": the PE/COFF DOS header that EFI-stub bzImages start with (PE
    /// format spec, "MS-DOS Stub"); used only to call a short file a truncated
    /// bzImage rather than "not a kernel".
    static let dosMagic: [UInt8] = [0x4D, 0x5A]

    /// Detects and validates a kernel image. Never traps on malformed input;
    /// every problem is a `BootError` naming what is wrong.
    public static func parse(_ bytes: [UInt8]) throws -> KernelImage {
        try parse(ImageBytes(bytes))
    }

    /// The same, reading `source` only where the headers are: the payload is
    /// read when the loader copies it into guest memory.
    public static func parse(_ source: any ImageSource) throws -> KernelImage {
        guard source.count > 0 else { throw BootError.emptyImage }
        let r = ByteReader(source)
        if ELFKernel.hasMagic(r) { return .elf(try ELFKernel(parsing: r)) }
        if BzImage.hasSignature(r) { return .bzImage(try BzImage(parsing: r)) }

        let signatureEnd = BzImage.Offset.header + 4
        if r.count < signatureEnd {
            let bootFlag = r.u16(BzImage.Offset.bootFlag)
            if r.bytes(0, UInt64(dosMagic.count)) == dosMagic || bootFlag == BzImage.bootFlagMagic {
                throw BootError.truncated(what: "bzImage boot_flag and \"HdrS\" signature", offset: BzImage.Offset.bootFlag,
                                          length: signatureEnd - BzImage.Offset.bootFlag, fileSize: r.count)
            }
            throw BootError.notAKernel(detail: "the file is only \(r.count) bytes; a bzImage header needs "
                + "\(signatureEnd)")
        }
        let bootFlag = r.u16(BzImage.Offset.bootFlag) ?? 0
        let header = r.u32(BzImage.Offset.header) ?? 0
        throw BootError.notAKernel(detail: "boot_flag at 0x1fe is \(hex(UInt64(bootFlag))) (want 0xaa55), "
            + "header at 0x202 is \(hex(UInt64(header))) (want 0x53726448 \"HdrS\")")
    }

    /// "bzImage (boot protocol 2.15, 9 MiB)" or "ELF with a PVH entry (3
    /// PT_LOAD segments, 40 MiB)": what was found, for `swiftvmm check`.
    public var summary: String {
        switch self {
        case let .bzImage(image):
            return "bzImage (boot protocol \(protocolString(image.protocolVersion)), \(mib(loadedBytes)) MiB)"
        case let .elf(elf):
            let n = elf.segments.count
            return "ELF with a PVH entry (\(n) PT_LOAD segment\(n == 1 ? "" : "s"), \(mib(loadedBytes)) MiB)"
        }
    }

    /// Bytes the image puts into guest memory (payload or PT_LOAD file bytes).
    public var loadedBytes: UInt64 {
        switch self {
        case let .bzImage(image): return image.payloadSize
        case let .elf(elf): return elf.segments.reduce(0) { $0 &+ $1.fileSize }
        }
    }
}
