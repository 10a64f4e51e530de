import Bits

/// A function's configuration space: 256 bytes (conventional PCI) or 4 KiB
/// (PCIe extended, PCIe 4.0 §7.2.2), with a per-byte writable mask and a
/// per-byte write-1-to-clear mask.
///
/// Guest writes (`write(offset:data:)`) change only writable bits and clear
/// the RW1C bits they write as 1; everything else is read-only. Host-side
/// setters (`set8/16/32`) ignore the masks, so a device can update status
/// bits or pending registers. Reads and writes at any offset and width never
/// trap: bytes outside the space read 0xFF and are not written.
///
/// A value type without a lock: the owner (normally `PCIFunction`) keeps it
/// behind its own lock.
public struct PCIConfigSpace: Sendable {
    private enum BarSlot: Equatable, Sendable {
        case none
        case bar(PCIBarDefinition)
        case upperHalf // the high register of the 64-bit BAR below it
    }

    public private(set) var bytes: [UInt8]
    private var writable: [UInt8]
    private var writeOneToClear: [UInt8]
    private var bars: [BarSlot] = Array(repeating: .none, count: PCIReg.barCount)
    private var romSize: UInt64?
    private var lastCapability: Int?
    private var nextCapability = PCIReg.headerSize
    private var lastExtendedCapability: Int?
    private var nextExtendedCapability = PCIReg.firstExtendedCapability

    /// Offsets of the capabilities in the order they were added, with their ID.
    public private(set) var capabilities: [(id: UInt8, offset: Int, length: Int)] = []
    public private(set) var extendedCapabilities: [(id: UInt16, offset: Int, length: Int)] = []

    public var size: Int { bytes.count }
    public var isExtended: Bool { bytes.count == PCIReg.extendedConfigSpaceSize }

    /// An all-zero, all-read-only config space.
    public init(extended: Bool = false) {
        let n = extended ? PCIReg.extendedConfigSpaceSize : PCIReg.configSpaceSize
        bytes = Array(repeating: 0, count: n)
        writable = Array(repeating: 0, count: n)
        writeOneToClear = Array(repeating: 0, count: n)
    }

    /// A type-0 (endpoint) header (PCI 3.0 §6.1, Figure 6-1):
    /// - Vendor/Device ID, Revision ID, Class Code, Subsystem IDs, Interrupt
    ///   Pin, Header Type 0 (single function): read-only.
    /// - Command: the bits in `PCICommand.writable` are writable.
    /// - Status: the error bits are RW1C (`PCIStatus.writeOneToClear`).
    /// - Cache Line Size and Interrupt Line: read/write (PCIe 4.0
    ///   §7.5.1.1.7 keeps Cache Line Size RW for software compatibility;
    ///   Linux writes it and reads it back).
    /// - Latency Timer, BIST, Min_Gnt/Max_Lat: 0 (PCIe 4.0 §7.5.1.1.8 hardwires
    ///   the latency timer).
    /// - `classCode` is the 24-bit value base class << 16 | sub-class << 8 |
    ///   programming interface.
    public static func type0(vendorID: UInt16, deviceID: UInt16, classCode: UInt32, revision: UInt8 = 0,
                             subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0,
                             interruptPin: PCIInterruptPin? = nil, extended: Bool = false) -> PCIConfigSpace {
        var c = PCIConfigSpace(extended: extended)
        c.set16(PCIReg.vendorID, vendorID)
        c.set16(PCIReg.deviceID, deviceID)
        c.set8(PCIReg.revisionID, revision)
        c.set8(PCIReg.classProg, UInt8(truncatingIfNeeded: classCode))
        c.set8(PCIReg.classDevice, UInt8(truncatingIfNeeded: classCode >> 8))
        c.set8(PCIReg.classDevice + 1, UInt8(truncatingIfNeeded: classCode >> 16))
        c.set8(PCIReg.headerType, 0) // PCI_HEADER_TYPE_NORMAL, not multi-function
        c.set16(PCIReg.subsystemVendorID, subsystemVendorID)
        c.set16(PCIReg.subsystemID, subsystemID)
        c.set8(PCIReg.interruptPin, interruptPin?.rawValue ?? 0)
        c.setMask16(PCIReg.command, writable: PCICommand.writable)
        c.setMask16(PCIReg.status, writable: 0, writeOneToClear: PCIStatus.writeOneToClear)
        c.setMask(offset: PCIReg.cacheLineSize, writable: 0xFF)
        c.setMask(offset: PCIReg.interruptLine, writable: 0xFF)
        return c
    }

    // MARK: Header fields (host view)

    public var vendorID: UInt16 { read16(PCIReg.vendorID) }
    public var deviceID: UInt16 { read16(PCIReg.deviceID) }
    public var command: UInt16 { read16(PCIReg.command) }
    public var status: UInt16 { read16(PCIReg.status) }
    /// The 24-bit class code.
    public var classCode: UInt32 { read32(PCIReg.revisionID) >> 8 }
    public var interruptPin: PCIInterruptPin? { PCIInterruptPin(rawValue: read8(PCIReg.interruptPin)) }
    public var interruptLine: UInt8 { read8(PCIReg.interruptLine) }

    // MARK: Guest access

    /// Reads `data.count` bytes at `offset`; bytes outside the space read 0xFF.
    public func read(offset: Int, data: UnsafeMutableRawBufferPointer) {
        // SAFETY: i < data.count; `o` is checked against the space before use.
        for i in 0..<data.count {
            let (o, overflow) = offset.addingReportingOverflow(i)
            data[i] = !overflow && o >= 0 && o < bytes.count ? bytes[o] : 0xFF
        }
    }

    /// Writes `data` at `offset` through the masks: writable bits take the new
    /// value, RW1C bits written as 1 clear, other bits keep their value.
    /// Bytes outside the space are dropped.
    public mutating func write(offset: Int, data: UnsafeRawBufferPointer) {
        // SAFETY: i < data.count; `o` is checked against the space before use.
        for i in 0..<data.count {
            let (o, overflow) = offset.addingReportingOverflow(i)
            guard !overflow, o >= 0, o < bytes.count else { continue }
            let v = data[i], w = writable[o], c = writeOneToClear[o]
            var b = (bytes[o] & ~w) | (v & w)
            b &= ~(v & c)
            bytes[o] = b
        }
    }

    /// Guest-style write of an integer (`width` bytes, little-endian).
    public mutating func write(offset: Int, value: UInt32, width: Int = 4) {
        let b = LE.bytes(UInt64(value), count: max(0, min(width, 4)))
        // SAFETY: the buffer is `b` itself, valid for the closure.
        b.withUnsafeBytes { write(offset: offset, data: $0) }
    }

    // MARK: Host access (masks ignored)

    public func read8(_ offset: Int) -> UInt8 {
        offset >= 0 && offset < bytes.count ? bytes[offset] : 0xFF
    }

    public func read16(_ offset: Int) -> UInt16 {
        UInt16(read8(offset)) | UInt16(read8(offset &+ 1)) << 8
    }

    public func read32(_ offset: Int) -> UInt32 {
        UInt32(read16(offset)) | UInt32(read16(offset &+ 2)) << 16
    }

    public mutating func set8(_ offset: Int, _ value: UInt8) {
        guard offset >= 0, offset < bytes.count else { return }
        bytes[offset] = value
    }

    public mutating func set16(_ offset: Int, _ value: UInt16) {
        set8(offset, UInt8(truncatingIfNeeded: value))
        set8(offset &+ 1, UInt8(truncatingIfNeeded: value >> 8))
    }

    public mutating func set32(_ offset: Int, _ value: UInt32) {
        set16(offset, UInt16(truncatingIfNeeded: value))
        set16(offset &+ 2, UInt16(truncatingIfNeeded: value >> 16))
    }

    /// Sets which bits of the byte at `offset` the guest may write and which
    /// it clears by writing 1. A bit in both masks is RW1C.
    public mutating func setMask(offset: Int, writable w: UInt8, writeOneToClear c: UInt8 = 0) {
        guard offset >= 0, offset < bytes.count else { return }
        writable[offset] = w & ~c
        writeOneToClear[offset] = c
    }

    public mutating func setMask16(_ offset: Int, writable w: UInt16, writeOneToClear c: UInt16 = 0) {
        for i in 0..<2 {
            setMask(offset: offset &+ i, writable: UInt8(truncatingIfNeeded: w >> (8 * i)),
                    writeOneToClear: UInt8(truncatingIfNeeded: c >> (8 * i)))
        }
    }

    public mutating func setMask32(_ offset: Int, writable w: UInt32, writeOneToClear c: UInt32 = 0) {
        for i in 0..<4 {
            setMask(offset: offset &+ i, writable: UInt8(truncatingIfNeeded: w >> (8 * i)),
                    writeOneToClear: UInt8(truncatingIfNeeded: c >> (8 * i)))
        }
    }

    /// The writable mask of the byte at `offset` (0 outside the space).
    public func writableMask(_ offset: Int) -> UInt8 {
        offset >= 0 && offset < writable.count ? writable[offset] : 0
    }

    // MARK: BARs

    /// Declares BAR `index` (0...5). A 64-bit BAR also takes register
    /// `index + 1`. Sizing follows PCI 3.0 §6.2.5.1: address bits below the
    /// size are read-only 0, so writing all ones reads back the size mask;
    /// the type bits (I/O, 64-bit, prefetchable) are read-only.
    /// `maxIOSize` is the spec's 256 bytes unless a caller takes a real
    /// device's larger I/O BAR as it is (`PCIBarBits.maxAssignedIOSize`).
    public mutating func setBar(_ index: Int, size: UInt64, kind: PCIBarKind, prefetchable: Bool = false,
                                maxIOSize: UInt64 = PCIBarBits.maxIOSize) throws {
        guard index >= 0, index < PCIReg.barCount else {
            throw PCIError.invalidBar(index: index, reason: "index must be 0...5")
        }
        guard size.isPowerOfTwo else {
            throw PCIError.invalidBar(index: index, reason: "size \(hex(size)) is not a power of two")
        }
        switch kind {
        case .io:
            guard size >= PCIBarBits.minIOSize, size <= maxIOSize else {
                throw PCIError.invalidBar(index: index, reason: maxIOSize == PCIBarBits.maxIOSize
                    ? "an I/O BAR decodes 4...256 bytes (PCI 3.0 §6.2.5.1)"
                    : "an I/O BAR of \(hex(size)) bytes is larger than the \(hex(maxIOSize)) bytes of I/O space an assigned device may take")
            }
            guard !prefetchable else {
                throw PCIError.invalidBar(index: index, reason: "an I/O BAR cannot be prefetchable")
            }
        case .memory32:
            guard size >= PCIBarBits.minMemorySize, size <= 0x8000_0000 else {
                throw PCIError.invalidBar(index: index, reason: "a 32-bit memory BAR decodes 16 bytes...2 GiB")
            }
        case .memory64:
            guard size >= PCIBarBits.minMemorySize, size <= 1 << 62 else {
                throw PCIError.invalidBar(index: index, reason: "a 64-bit memory BAR decodes 16 bytes...4 EiB")
            }
            guard index + 1 < PCIReg.barCount else {
                throw PCIError.invalidBar(index: index, reason: "a 64-bit BAR needs registers \(index) and \(index + 1)")
            }
        }
        let span = kind == .memory64 ? [index, index + 1] : [index]
        for i in span where bars[i] != .none {
            throw PCIError.invalidBar(index: index, reason: "register \(i) is already used by another BAR")
        }

        let addressMask: UInt64 = ~(size - 1)
        var typeBits: UInt32
        var lowMask: UInt32
        switch kind {
        case .io:
            typeBits = PCIBarBits.spaceIO
            lowMask = UInt32(truncatingIfNeeded: addressMask) & PCIBarBits.ioAddressMask
        case .memory32, .memory64:
            typeBits = kind == .memory64 ? PCIBarBits.memType64 : 0
            if prefetchable { typeBits |= PCIBarBits.memPrefetch }
            lowMask = UInt32(truncatingIfNeeded: addressMask) & PCIBarBits.memAddressMask
        }
        bars[index] = .bar(PCIBarDefinition(size: size, kind: kind, prefetchable: prefetchable))
        set32(PCIReg.bar(index), typeBits)
        setMask32(PCIReg.bar(index), writable: lowMask)
        if kind == .memory64 {
            bars[index + 1] = .upperHalf
            set32(PCIReg.bar(index + 1), 0)
            setMask32(PCIReg.bar(index + 1), writable: UInt32(truncatingIfNeeded: addressMask >> 32))
        }
    }

    /// The BAR declared at `index`, or nil (also for the high half of a 64-bit BAR).
    public func barDefinition(_ index: Int) -> PCIBarDefinition? {
        guard index >= 0, index < bars.count, case let .bar(d) = bars[index] else { return nil }
        return d
    }

    /// Declares an expansion ROM of `size` bytes (PCI 3.0 §6.2.5.2). Without
    /// one, the ROM BAR at 0x30 reads 0 and ignores writes.
    public mutating func setExpansionROM(size: UInt64) throws {
        guard size.isPowerOfTwo, size >= PCIBarBits.minROMSize, size <= PCIBarBits.maxROMSize else {
            throw PCIError.invalidBar(index: PCIBarRegion.romIndex,
                                      reason: "an expansion ROM is a power of two, 2 KiB...16 MiB")
        }
        romSize = size
        set32(PCIReg.romAddress, 0)
        let mask = UInt32(truncatingIfNeeded: ~(size - 1)) & PCIBarBits.romAddressMask
        setMask32(PCIReg.romAddress, writable: mask | PCIBarBits.romEnable)
    }

    public var expansionROMSize: UInt64? { romSize }

    /// The BARs as programmed now. A BAR whose address is 0 counts as
    /// unassigned and is left out, as is a ROM whose enable bit is clear.
    /// Decoding enables in the Command register are not applied here.
    public var barRegions: [PCIBarRegion] {
        var out: [PCIBarRegion] = []
        for i in 0..<PCIReg.barCount {
            guard case let .bar(d) = bars[i] else { continue }
            let low = read32(PCIReg.bar(i))
            var address = UInt64(low & (d.kind == .io ? PCIBarBits.ioAddressMask : PCIBarBits.memAddressMask))
            if d.kind == .memory64 {
                address |= UInt64(read32(PCIReg.bar(i + 1))) << 32
            }
            guard address != 0 else { continue }
            out.append(PCIBarRegion(index: i, address: address, size: d.size, kind: d.kind, prefetchable: d.prefetchable))
        }
        if let size = romSize {
            let v = read32(PCIReg.romAddress)
            let address = UInt64(v & PCIBarBits.romAddressMask)
            if v & PCIBarBits.romEnable != 0, address != 0 {
                out.append(PCIBarRegion(index: PCIBarRegion.romIndex, address: address, size: size,
                                        kind: .memory32, prefetchable: false))
            }
        }
        return out
    }

    // MARK: Capabilities

    /// Appends a capability to the list at 0x34 (PCI 3.0 §6.7) and returns its
    /// offset. `bytes` is the whole capability including its two header
    /// bytes; those are overwritten with `id` and the next pointer (0, the end
    /// of the list). `writableMask`, if given, has one mask byte per byte of
    /// `bytes` (the header bytes are always read-only). Capabilities are
    /// placed from 0x40 upward, each 4-byte aligned (the low two bits of a
    /// next pointer are reserved), and the previous capability's next
    /// pointer is linked to the new one. Sets Status.CAP_LIST.
    @discardableResult
    public mutating func addCapability(id: UInt8, bytes body: [UInt8], writableMask: [UInt8]? = nil) throws -> Int {
        guard body.count >= 2 else {
            throw PCIError.invalidCapability(id: UInt16(id), reason: "a capability has at least 2 bytes (ID, next)")
        }
        if let m = writableMask, m.count != body.count {
            throw PCIError.invalidCapability(id: UInt16(id), reason: "writable mask has \(m.count) bytes, capability \(body.count)")
        }
        let offset = nextCapability
        guard offset <= PCIReg.configSpaceSize - body.count else {
            throw PCIError.capabilitySpaceFull(id: UInt16(id), length: body.count)
        }
        for (i, b) in body.enumerated() {
            set8(offset + i, b)
            setMask(offset: offset + i, writable: i < 2 ? 0 : writableMask?[i] ?? 0)
        }
        set8(offset, id)
        set8(offset + 1, 0)
        if let last = lastCapability {
            set8(last + 1, UInt8(truncatingIfNeeded: offset))
        } else {
            set8(PCIReg.capabilityList, UInt8(truncatingIfNeeded: offset))
        }
        set16(PCIReg.status, status | PCIStatus.capabilityList)
        lastCapability = offset
        nextCapability = (offset + body.count + 3) & ~3
        capabilities.append((id: id, offset: offset, length: body.count))
        return offset
    }

    /// Appends a PCIe extended capability (PCIe 4.0 §7.6.3): placed from 0x100
    /// upward, 4-byte aligned, with the 32-bit header (ID bits 15:0, version
    /// 19:16, next offset 31:20) written over the first 4 bytes of `bytes`.
    /// Requires an extended (4 KiB) config space.
    @discardableResult
    public mutating func addExtendedCapability(id: UInt16, version: UInt8, bytes body: [UInt8],
                                               writableMask: [UInt8]? = nil) throws -> Int {
        guard isExtended else {
            throw PCIError.invalidCapability(id: id, reason: "extended capabilities need a 4 KiB (PCIe) config space")
        }
        guard body.count >= 4 else {
            throw PCIError.invalidCapability(id: id, reason: "an extended capability has at least its 4-byte header")
        }
        if let m = writableMask, m.count != body.count {
            throw PCIError.invalidCapability(id: id, reason: "writable mask has \(m.count) bytes, capability \(body.count)")
        }
        let offset = nextExtendedCapability
        guard offset <= PCIReg.extendedConfigSpaceSize - body.count else {
            throw PCIError.capabilitySpaceFull(id: id, length: body.count)
        }
        for (i, b) in body.enumerated() {
            set8(offset + i, b)
            setMask(offset: offset + i, writable: i < 4 ? 0 : writableMask?[i] ?? 0)
        }
        set32(offset, UInt32(id) | UInt32(version & 0xF) << 16)
        if let last = lastExtendedCapability {
            // Next Capability Offset, bits 31:20 of the previous header.
            set32(last, (read32(last) & 0x000F_FFFF) | UInt32(offset) << 20)
        }
        lastExtendedCapability = offset
        nextExtendedCapability = (offset + body.count + 3) & ~3
        extendedCapabilities.append((id: id, offset: offset, length: body.count))
        return offset
    }

    /// The offset of the first capability with `id`, walking the list the
    /// way Linux's `pci_find_capability` does (at most 48 hops, next pointers
    /// masked to 4-byte alignment, stop below 0x40).
    public func findCapability(_ id: UInt8) -> Int? {
        var pos = Int(read8(PCIReg.capabilityList))
        var ttl = 48 // PCI_FIND_CAP_TTL in drivers/pci/pci.c
        while ttl > 0, pos >= PCIReg.headerSize {
            pos &= ~3
            if read8(pos) == id { return pos }
            pos = Int(read8(pos + 1))
            ttl -= 1
        }
        return nil
    }
}
