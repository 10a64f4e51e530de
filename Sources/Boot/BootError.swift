import Bits
import GuestMemory

/// Everything that can go wrong while parsing a kernel image or laying out
/// the guest for boot. The kernel image, the initramfs and the command line
/// are untrusted input: every malformed field ends up here, never in a trap.
public enum BootError: Error, Equatable, CustomStringConvertible {
    /// The kernel file has no bytes at all.
    case emptyImage
    /// The file ends before `what`, which needs `[offset, offset+length)`.
    case truncated(what: String, offset: UInt64, length: UInt64, fileSize: UInt64)
    /// Neither a bzImage boot sector/"HdrS" signature nor an ELF header.
    case notAKernel(detail: String)
    /// bzImage boot protocol older than `BzImage.minimumProtocol`.
    case protocolTooOld(version: UInt16)
    /// bzImage without the 64-bit entry point at load address + 0x200.
    case not64BitCapable(detail: String)
    /// A header field of the image holds a value no loader can honour.
    case invalidImage(detail: String)
    /// ELF kernel without a XEN_ELFNOTE_PHYS32_ENTRY note.
    case noPVHEntry
    /// The PVH entry note exists but is malformed or points nowhere.
    case invalidPVHNote(detail: String)
    /// An ELF PT_LOAD segment lies below 1 MiB, where the boot structures live.
    case segmentInReservedLowMemory(index: Int, start: UInt64, end: UInt64)
    /// An ELF PT_LOAD segment is not inside guest RAM below 4 GiB.
    case segmentOutsideRAM(index: Int, start: UInt64, end: UInt64, ramEnd: UInt64)
    /// A size or address computed from the image overflows 64 bits.
    case sizeOverflow(detail: String)
    /// Low guest RAM ends at `available`, the kernel needs RAM up to `needed`.
    case memoryTooSmall(needed: UInt64, available: UInt64)
    /// No page-aligned place for the initramfs in `[floor, ceiling)`.
    case initrdDoesNotFit(size: UInt64, ceiling: UInt64, floor: UInt64)
    /// Command line longer than the kernel accepts (without the NUL).
    case cmdlineTooLong(length: Int, limit: Int)
    /// Command line contains a NUL byte, which would silently cut it short.
    case cmdlineContainsNUL(offset: Int)
    /// vCPU count outside 1...`MPTable.maxVCPUs`.
    case invalidVCPUCount(Int)
    /// The MP table for `vcpus` CPUs does not fit below 1 MiB.
    case mpTableDoesNotFit(vcpus: Int, bytes: Int)
    /// Writing `what` to guest memory failed (the memory map and the backing
    /// memory disagree).
    case guestMemory(what: String, GuestMemoryError)
    /// The initramfs is not what the kernel can unpack (`Initramfs.validate`).
    case invalidInitramfs(detail: String)

    public var description: String {
        switch self {
        case .emptyImage:
            return "kernel image is empty (0 bytes)"
        case let .truncated(what, offset, length, fileSize):
            return "kernel image is truncated: \(what) needs bytes [\(hex(offset)), \(hex(offset &+ length))) "
                + "but the file is only \(fileSize) bytes"
        case let .notAKernel(detail):
            return "not a kernel: no bzImage signature and not an ELF file (\(detail))"
        case let .protocolTooOld(version):
            return "bzImage boot protocol \(protocolString(version)) is too old: at least "
                + "\(protocolString(BzImage.minimumProtocol)) is required"
        case let .not64BitCapable(detail):
            return "bzImage is not 64-bit capable: \(detail)"
        case let .invalidImage(detail):
            return "invalid kernel image: \(detail)"
        case .noPVHEntry:
            return "ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build with CONFIG_PVH=y"
        case let .invalidPVHNote(detail):
            return "ELF kernel has a bad PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): \(detail)"
        case let .segmentInReservedLowMemory(index, start, end):
            return "ELF PT_LOAD segment \(index) at [\(hex(start)), \(hex(end))) overlaps the reserved low memory "
                + "below \(hex(BootLayout.highMemoryStart)) (boot structures, EBDA, BIOS area)"
        case let .segmentOutsideRAM(index, start, end, ramEnd):
            return "ELF PT_LOAD segment \(index) at [\(hex(start)), \(hex(end))) is outside guest RAM "
                + "[0, \(hex(ramEnd)))"
        case let .sizeOverflow(detail):
            return "kernel image sizes overflow: \(detail)"
        case let .memoryTooSmall(needed, available):
            return "memory too small for kernel (needs \(mib(needed)) MiB of low RAM, guest has \(mib(available)) MiB "
                + "below \(hex(available)))"
        case let .initrdDoesNotFit(size, ceiling, floor):
            return "initramfs (\(mib(size)) MiB, \(size) bytes) does not fit in guest RAM below \(hex(ceiling)) "
                + "(free space starts at \(hex(floor)), after the kernel)"
        case let .cmdlineTooLong(length, limit):
            return "kernel command line is \(length) bytes, the kernel accepts at most \(limit)"
        case let .cmdlineContainsNUL(offset):
            return "kernel command line contains a NUL byte at offset \(offset)"
        case let .invalidVCPUCount(n):
            return "cannot boot with \(n) vCPUs: the MP table describes 1 to \(MPTable.maxVCPUs)"
        case let .mpTableDoesNotFit(vcpus, bytes):
            return "MP table for \(vcpus) vCPUs (\(bytes) bytes) does not fit in "
                + "[\(hex(BootLayout.mpTableAddress)), \(hex(BootLayout.highMemoryStart)))"
        case let .guestMemory(what, error):
            return "writing \(what) to guest memory failed: \(error)"
        case let .invalidInitramfs(detail):
            return "not an initramfs the kernel can unpack: \(detail)"
        }
    }
}

/// Size in MiB, rounded up, so "needs 1 MiB" never under-reports.
func mib(_ bytes: UInt64) -> UInt64 {
    let whole = bytes >> 20
    return bytes & 0xF_FFFF == 0 ? whole : whole + 1
}

/// "2.06" for 0x0206 (boot.rst: version is (major << 8) + minor).
func protocolString(_ version: UInt16) -> String {
    let minor = version & 0xFF
    return "\(version >> 8)." + (minor < 10 ? "0" : "") + "\(minor)"
}
