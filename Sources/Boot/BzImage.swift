import Bits

/// A parsed bzImage (Linux/x86 boot protocol, Documentation/arch/x86/boot.rst).
/// Only the fields the loader needs are decoded; `setupHeader` keeps the raw
/// header bytes that get copied into boot_params.hdr.
public struct BzImage: Equatable, Sendable {
    /// Offsets of the real-mode kernel header (boot.rst "The Real-Mode Kernel Header").
    enum Offset {
        static let setupSects: UInt64 = 0x1F1
        static let syssize: UInt64 = 0x1F4
        static let bootFlag: UInt64 = 0x1FE
        static let jump: UInt64 = 0x200
        static let header: UInt64 = 0x202
        static let version: UInt64 = 0x206
        static let typeOfLoader: UInt64 = 0x210
        static let loadflags: UInt64 = 0x211
        static let ramdiskImage: UInt64 = 0x218
        static let ramdiskSize: UInt64 = 0x21C
        static let heapEndPtr: UInt64 = 0x224
        static let cmdLinePtr: UInt64 = 0x228
        static let initrdAddrMax: UInt64 = 0x22C
        static let kernelAlignment: UInt64 = 0x230
        static let relocatableKernel: UInt64 = 0x234
        static let xloadflags: UInt64 = 0x236
        static let cmdlineSize: UInt64 = 0x238
        static let prefAddress: UInt64 = 0x258
        static let initSize: UInt64 = 0x260
        /// First byte after init_size, the last field this loader relies on.
        static let requiredHeaderEnd: UInt64 = 0x264
        /// boot.rst: "setup_header is permanently limited to 144 bytes".
        static let maximumHeaderEnd: UInt64 = 0x1F1 + 144
    }

    /// 0xAA55 at 0x1FE (boot.rst boot_flag).
    static let bootFlagMagic: UInt16 = 0xAA55
    /// "HdrS" at 0x202 (boot.rst header, 0x53726448).
    static let headerMagic: UInt32 = 0x5372_6448
    /// loadflags bit 0 LOADED_HIGH: protected-mode code loads at 0x100000.
    static let loadedHigh: UInt8 = 1 << 0
    /// loadflags bit 7 CAN_USE_HEAP: heap_end_ptr is valid.
    static let canUseHeap: UInt8 = 1 << 7
    /// xloadflags bit 0 XLF_KERNEL_64: the 64-bit entry point at 0x200 exists.
    static let xlfKernel64: UInt16 = 1 << 0
    /// Protocol 2.06 added cmdline_size (boot.rst protocol table).
    public static let minimumProtocol: UInt16 = 0x0206
    /// Protocol 2.12 added xloadflags, the only way to see XLF_KERNEL_64.
    static let xloadflagsProtocol: UInt16 = 0x020C
    /// setup_sects == 0 means 4 (boot.rst setup_sects note (1)).
    static let defaultSetupSects = 4
    /// A "sector" is 512 bytes (boot.rst "The Real-Mode Kernel Header").
    static let sectorSize = 512
    /// syssize counts 16-byte paragraphs (boot.rst syssize).
    static let paragraphSize: UInt64 = 16
    /// Offset of the 64-bit entry startup_64 from the load address (boot.rst
    /// "64-bit Boot Protocol": jump to load address + 0x200).
    public static let entry64Offset: UInt64 = 0x200

    /// Boot protocol version, (major << 8) | minor.
    public let protocolVersion: UInt16
    /// Real-mode setup sectors after the boot sector (0 already turned into 4).
    public let setupSectors: Int
    /// Bytes [0x1F1, header end) of the image, copied into boot_params.hdr.
    public let setupHeader: [UInt8]
    public let loadFlags: UInt8
    public let xloadFlags: UInt16
    /// Protected-mode code size in 16-byte paragraphs.
    public let syssize: UInt32
    public let kernelAlignment: UInt32
    public let relocatable: Bool
    /// Maximum command line length without the NUL.
    public let cmdlineSize: UInt32
    /// Highest address the initramfs may occupy (inclusive).
    public let initrdAddrMax: UInt32
    public let prefAddress: UInt64
    /// Contiguous memory the kernel needs from its runtime start address.
    public let initSize: UInt32
    /// File offset of the protected-mode kernel: (setupSectors + 1) * 512.
    public let payloadOffset: Int
    /// The protected-mode kernel, syssize * 16 bytes, loaded at 1 MiB.
    public let payload: ImageRange

    public var payloadSize: UInt64 { payload.count }

    /// True when `bytes` carries the bzImage signatures (boot_flag and "HdrS").
    static func hasSignature(_ r: ByteReader) -> Bool {
        r.u16(Offset.bootFlag) == bootFlagMagic && r.u32(Offset.header) == headerMagic
    }

    /// Parses a bzImage whose signatures `KernelImage.parse` has already seen.
    init(parsing r: ByteReader) throws {
        let fileSize = r.count
        // The header fields used below all end before 0x264.
        guard r.contains(0, Offset.requiredHeaderEnd),
              let version = r.u16(Offset.version),
              let sects = r.u8(Offset.setupSects),
              let syssize = r.u32(Offset.syssize),
              let jump = r.u8(Offset.jump + 1),
              let loadflags = r.u8(Offset.loadflags),
              let initrdAddrMax = r.u32(Offset.initrdAddrMax),
              let kernelAlignment = r.u32(Offset.kernelAlignment),
              let relocatable = r.u8(Offset.relocatableKernel),
              let xloadflags = r.u16(Offset.xloadflags),
              let cmdlineSize = r.u32(Offset.cmdlineSize),
              let prefAddress = r.u64(Offset.prefAddress),
              let initSize = r.u32(Offset.initSize)
        else {
            throw BootError.truncated(what: "bzImage setup header", offset: Offset.setupSects,
                                      length: Offset.requiredHeaderEnd - Offset.setupSects, fileSize: fileSize)
        }
        guard version >= Self.minimumProtocol else { throw BootError.protocolTooOld(version: version) }
        guard loadflags & Self.loadedHigh != 0 else {
            throw BootError.invalidImage(detail: "loadflags LOADED_HIGH (bit 0) is clear: a zImage loads at "
                + "0x10000 and is not supported")
        }
        guard version >= Self.xloadflagsProtocol else {
            throw BootError.not64BitCapable(detail: "boot protocol \(protocolString(version)) predates "
                + "xloadflags (2.12), so XLF_KERNEL_64 cannot be checked")
        }
        guard xloadflags & Self.xlfKernel64 != 0 else {
            throw BootError.not64BitCapable(detail: "xloadflags \(hex(UInt64(xloadflags))) lacks XLF_KERNEL_64 "
                + "(bit 0): no 64-bit entry point at 0x200 (a 32-bit kernel?)")
        }

        // boot.rst "jump": 0xEB and a signed offset relative to 0x202; it
        // doubles as the header length. The kernel reads kernel_alignment and
        // init_size back from boot_params, so those must be inside the copy.
        let headerEnd = Int64(Offset.header) + Int64(Int8(bitPattern: jump))
        guard headerEnd >= Int64(Offset.requiredHeaderEnd) else {
            throw BootError.invalidImage(detail: "setup header ends at \(hex(UInt64(max(headerEnd, 0)))) "
                + "(jump byte \(hex(UInt64(jump))) at 0x201), before init_size at 0x260")
        }
        let copyEnd = min(UInt64(headerEnd), Offset.maximumHeaderEnd)

        let setupSectors = sects == 0 ? Self.defaultSetupSects : Int(sects)
        let payloadOffset = (setupSectors + 1) * Self.sectorSize
        guard let header = r.bytes(Offset.setupSects, copyEnd - Offset.setupSects),
              r.contains(0, UInt64(payloadOffset))
        else {
            throw BootError.truncated(what: "real-mode setup code (\(setupSectors) setup sectors + boot sector)",
                                      offset: 0, length: UInt64(payloadOffset), fileSize: fileSize)
        }
        // A UInt32 times 16 always fits in UInt64.
        let payloadSize = UInt64(syssize) * Self.paragraphSize
        guard payloadSize > 0 else {
            throw BootError.invalidImage(detail: "syssize is 0: no protected-mode kernel")
        }
        guard let payload = r.range(UInt64(payloadOffset), payloadSize) else {
            throw BootError.truncated(what: "protected-mode kernel (syssize \(hex(UInt64(syssize))) paragraphs)",
                                      offset: UInt64(payloadOffset), length: payloadSize, fileSize: fileSize)
        }
        if relocatable != 0 {
            guard kernelAlignment != 0, kernelAlignment.nonzeroBitCount == 1 else {
                throw BootError.invalidImage(detail: "kernel_alignment \(hex(UInt64(kernelAlignment))) of a "
                    + "relocatable kernel is not a power of two")
            }
        }

        self.protocolVersion = version
        self.setupSectors = setupSectors
        self.setupHeader = header
        self.loadFlags = loadflags
        self.xloadFlags = xloadflags
        self.syssize = syssize
        self.kernelAlignment = kernelAlignment
        self.relocatable = relocatable != 0
        self.cmdlineSize = cmdlineSize
        self.initrdAddrMax = initrdAddrMax
        self.prefAddress = prefAddress
        self.initSize = initSize
        self.payloadOffset = payloadOffset
        self.payload = payload
    }

    /// Where the kernel runs (and decompresses itself) when loaded at
    /// `loadAddress`. boot.rst init_size gives align_up(load, kernel_alignment)
    /// for relocatable kernels and pref_address otherwise; the decompressor
    /// (arch/x86/boot/compressed/head_64.S startup_64) also never goes below
    /// LOAD_PHYSICAL_ADDR, which header.S stores as pref_address.
    func runtimeStart(loadAddress: UInt64) -> UInt64? {
        guard relocatable else { return prefAddress == 0 ? loadAddress : prefAddress }
        guard let aligned = alignUp(loadAddress, UInt64(kernelAlignment)) else { return nil }
        return max(aligned, prefAddress)
    }

    /// First byte after everything the kernel needs before it reads the e820
    /// map: the loaded image and init_size bytes from the runtime start.
    func memoryEnd(loadAddress: UInt64) throws -> UInt64 {
        let (loadEnd, o1) = loadAddress.addingReportingOverflow(payloadSize)
        guard !o1, let start = runtimeStart(loadAddress: loadAddress) else {
            throw BootError.sizeOverflow(detail: "kernel at \(hex(loadAddress)) + \(payloadSize) bytes, "
                + "kernel_alignment \(hex(UInt64(kernelAlignment)))")
        }
        let (initEnd, o2) = start.addingReportingOverflow(UInt64(initSize))
        guard !o2 else {
            throw BootError.sizeOverflow(detail: "runtime start \(hex(start)) + init_size \(hex(UInt64(initSize)))")
        }
        return max(loadEnd, initEnd)
    }
}
