import Bits
import Devices
import Synchronization

/// A host PCI function assigned to the guest (VFIO passthrough), as the PCI
/// layer sees it: a virtualized config space in front of the real one, the
/// MSI / MSI-X capabilities and the MSI-X table emulated, everything else
/// forwarded to an `AssignedDeviceBackend`. It never touches the INTx line
/// the root bus offers (the VMM wires the device's own INTx eventfd to the
/// GSI; see `AssignedInterruptMode.intx`).
///
/// Config space policy ("emulated" bytes come from a private
/// `PCIConfigSpace` built at init from the real bytes and never reach the
/// device; "device" bytes are read from and written to the backend):
///
/// | Offset       | Register                        | Policy |
/// |--------------|---------------------------------|--------|
/// | 0x00-0x03    | Vendor ID, Device ID            | device |
/// | 0x04-0x05    | Command                         | device, all bits (vfio-pci virtualizes it; the guest's I/O and memory enables must reach it) |
/// | 0x06-0x07    | Status                          | device (writes too: the error bits are RW1C), except bit 4 Capabilities List: emulated, set when the virtual chain is not empty; written to the device as 0 |
/// | 0x08-0x0B    | Revision ID, Class Code         | device |
/// | 0x0C, 0x0D   | Cache Line Size, Latency Timer  | device |
/// | 0x0E         | Header Type                     | emulated read-only: the real value with bit 7 (multi-function) cleared |
/// | 0x0F         | BIST                            | device |
/// | 0x10-0x27    | BAR 0-5                         | emulated: sizes from the VFIO regions, type bits from the real registers (read-only), sizing reads back the size mask; a register without a BAR reads 0 |
/// | 0x28-0x2B    | Cardbus CIS pointer             | emulated, 0 |
/// | 0x2C-0x2F    | Subsystem Vendor ID, Subsystem ID | device |
/// | 0x30-0x33    | Expansion ROM BAR               | emulated (address and enable bit RW) when a ROM size is given, else 0 |
/// | 0x34         | Capabilities Pointer            | emulated: the first kept capability, or 0 |
/// | 0x35-0x3B    | reserved                        | emulated, 0 |
/// | 0x3C         | Interrupt Line                  | emulated, RW (the root bus writes the GSI) |
/// | 0x3D         | Interrupt Pin                   | device |
/// | 0x3E-0x3F    | Min_Gnt, Max_Lat                | device |
/// | cap + 0, + 1 | ID and next pointer of every kept capability | emulated read-only; next pointers relink the kept capabilities in their original order |
/// | PM, PCIe, vendor-specific body | capability IDs 0x01, 0x10, 0x09 | device |
/// | MSI          | capability 0x05, only a 64-bit-capable one | emulated (`MSICapability` at the real offset, 24 bytes with per-vector masking, else 16; Multiple Message Capable 0); never written to the device |
/// | MSI-X        | capability 0x11, 12 bytes       | emulated: a copy of the real bytes with Enable (bit 15) and Function Mask (bit 14) of Message Control writable and initially 0, all else read-only; never written to the device |
/// | hidden capability | every other ID; a second MSI or MSI-X; a 32-bit-only MSI; one that does not fit below 0x100 | emulated: reads 0, writes dropped (length below) |
/// | 0x40-0xFF, other bytes | device-specific registers | device |
/// | 0x100-0xFFF  | extended config space           | reads 0, writes dropped: extended capabilities (AER, SR-IOV, ...) are hidden, as on a conventional root bus |
/// | < 0, >= 0x1000 | outside config space          | reads 0xFF, writes dropped |
///
/// A hidden capability reads 0 over its structure's size where pci_regs.h
/// gives one (AGP 12, VPD 8, Slot ID 4, MSI 10/14/20/24, CompactPCI hot
/// swap 4, PCI-X 8, debug port 4, SHPC 8, SSVID 8, SATA 8, AF 6), else over
/// its 4-byte header, and never past the next capability or 0x100; its
/// other bytes stay device-specific.
///
/// An access may have any width and offset; it is split into runs of bytes
/// with the same policy, and each device run is one backend call.
///
/// BAR accesses (`readBar` / `writeBar`, for whatever the VMM does not map
/// directly): bytes in the MSI-X table and PBA go to `msix`; bytes at or
/// beyond the VFIO region size (in the rounded-up tail) read all ones and
/// drop writes; everything else goes to the backend. The expansion ROM is
/// read-only (writes are dropped).
///
/// Interrupts: the mode is MSI-X when MSI-X is enabled, else MSI when MSI is
/// enabled, else INTx when the real Interrupt Pin is non-zero and attach
/// gave a GSI, else none. Every change is reported once through
/// `AssignedDeviceBackend.setInterruptMode`, after the MSI-X table or MSI
/// state has been updated.
///
/// Locking: one lock for the virtual config space and the mode; backend
/// config calls and `setInterruptMode` are made with it held (so the device
/// sees config writes in the guest's order), and MSI / MSI-X are updated
/// under it (order: this lock -> MSI(-X) -> router). BAR accesses take no
/// lock of this class.
public final class AssignedPCIFunction: PCIDevice {
    /// Where a config byte comes from.
    enum ByteSource: Equatable {
        /// The virtual config space.
        case emulated
        /// The device, except the `emulatedBits`, which come from the virtual
        /// config space (and are written to the device as 0).
        case device(emulatedBits: UInt8)
    }

    private struct State {
        var config: PCIConfigSpace
        var mode: AssignedInterruptMode = .none
        var intxGSI: UInt32?
    }

    public let name: String
    /// The BARs, by index (a 64-bit BAR once, at its low index).
    public let bars: [AssignedBar]
    /// The expansion ROM (index `PCIBarRegion.romIndex`), if any.
    public let rom: AssignedBar?
    /// The capabilities the guest sees, in list order.
    public let capabilities: [AssignedCapability]
    /// The capabilities of the real list that the guest does not see.
    public let hiddenCapabilities: [AssignedCapability]
    /// The emulated MSI-X table and PBA, when the device has MSI-X.
    public let msix: MSIXTable?
    public let msixCapabilityOffset: Int?
    /// The emulated MSI capability, when the device has a 64-bit one.
    public let msi: MSICapability?
    /// The real Interrupt Pin (nil: none, or not a valid pin).
    public let interruptPin: PCIInterruptPin?

    private let backend: AssignedDeviceBackend
    private let sources: [ByteSource]
    /// BARs 0-5 and the ROM, by index (nil: none, or the high half of a 64-bit BAR).
    private let barTable: [AssignedBar?]
    private let state: Mutex<State>

    /// PCI_FIND_CAP_TTL in Linux drivers/pci/pci.c.
    static let maxCapabilities = 48

    /// - Parameters:
    ///   - barSizes: VFIO region sizes of BARs 0-5; a missing or 0 entry
    ///     means no BAR. The kind (I/O, 32- or 64-bit memory, prefetchable)
    ///     comes from the low bits of the real BAR register. vfio reports the
    ///     host resource size (`pci_resource_len`), which is not always a
    ///     power of two (a resource the host trimmed or resized); such sizes
    ///     are rounded up to one, as are sizes below the kind's minimum
    ///     (16 bytes memory, 4 bytes I/O), so guest sizing works. A 64-bit
    ///     BAR takes its index and index + 1 (whose region size must be 0).
    ///   - romSize: the VFIO ROM region size; nil or 0 means no ROM. Rounded
    ///     up to a power of two, at least 2 KiB.
    ///   - name: for messages (e.g. the host address "0000:01:00.0").
    /// - Throws: `PCIError.invalidBar` for a BAR the guest could not be shown
    ///   (index outside 0...5, a 64-bit BAR at index 5 or overlapping the
    ///   next BAR, an I/O BAR over 256 bytes, a 32-bit BAR over 2 GiB, a ROM
    ///   over 16 MiB); `PCIError.invalidMSIX` when the real MSI-X table or
    ///   PBA does not lie in one of these memory BARs.
    public init(backend: AssignedDeviceBackend, barSizes: [Int: UInt64], romSize: UInt64?, name: String) throws {
        self.backend = backend
        self.name = name

        var real = [UInt8](repeating: 0xFF, count: PCIReg.configSpaceSize)
        // SAFETY: the buffer is `real` itself, 256 bytes, valid for the closure.
        real.withUnsafeMutableBytes { backend.readConfig(offset: 0, data: $0) }
        var real256 = PCIConfigSpace()
        for (i, b) in real.enumerated() { real256.set8(i, b) }
        let realConfig = real256

        var c = PCIConfigSpace()
        // PCI_HEADER_TYPE: vfio-pci binds only to type-0 functions
        // (vfio_pci_core_register_device rejects other header types).
        c.set8(PCIReg.headerType, realConfig.read8(PCIReg.headerType) & 0x7F)
        c.setMask(offset: PCIReg.interruptLine, writable: 0xFF)

        // BARs.
        for index in barSizes.keys where index < 0 || index >= PCIReg.barCount {
            throw PCIError.invalidBar(index: index, reason: "an assigned function's BARs are 0...5 (VFIO regions 0-5)")
        }
        var bars: [AssignedBar] = []
        var table = [AssignedBar?](repeating: nil, count: PCIReg.barCount + 1)
        var index = 0
        while index < PCIReg.barCount {
            let size = barSizes[index] ?? 0
            guard size > 0 else { index += 1; continue }
            let low = realConfig.read32(PCIReg.bar(index))
            let kind: PCIBarKind
            var prefetchable = false
            if low & PCIBarBits.spaceIO != 0 {
                kind = .io
            } else {
                // Type 10b is 64-bit; 00b and the legacy below-1-MiB 01b are 32-bit.
                kind = low & PCIBarBits.memTypeMask == PCIBarBits.memType64 ? .memory64 : .memory32
                prefetchable = low & PCIBarBits.memPrefetch != 0
            }
            let minimum = kind == .io ? PCIBarBits.minIOSize : PCIBarBits.minMemorySize
            guard let decode = Self.decodeSize(size, minimum: minimum) else {
                throw PCIError.invalidBar(index: index, reason: "region size \(hex(size)) is too large")
            }
            try c.setBar(index, size: decode, kind: kind, prefetchable: prefetchable, maxIOSize: PCIBarBits.maxAssignedIOSize)
            let bar = AssignedBar(index: index, size: size, decodeSize: decode, kind: kind, prefetchable: prefetchable)
            bars.append(bar)
            table[index] = bar
            if kind == .memory64 {
                if let upper = barSizes[index + 1], upper != 0 {
                    throw PCIError.invalidBar(index: index + 1,
                                              reason: "has region size \(hex(upper)) but is the high half of 64-bit BAR \(index)")
                }
                index += 2
            } else {
                index += 1
            }
        }
        if let size = romSize, size > 0 {
            guard let decode = Self.decodeSize(size, minimum: PCIBarBits.minROMSize) else {
                throw PCIError.invalidBar(index: PCIBarRegion.romIndex, reason: "ROM size \(hex(size)) is too large")
            }
            try c.setExpansionROM(size: decode)
            let bar = AssignedBar(index: PCIBarRegion.romIndex, size: size, decodeSize: decode, kind: .memory32,
                                  prefetchable: false)
            rom = bar
            table[PCIBarRegion.romIndex] = bar
        } else {
            rom = nil
        }
        self.bars = bars
        barTable = table

        // Which bytes come from where (see the table above).
        var src = [ByteSource](repeating: .emulated, count: PCIReg.configSpaceSize)
        for o in 0..<PCIReg.headerType { src[o] = .device(emulatedBits: 0) }
        src[PCIReg.status] = .device(emulatedBits: UInt8(PCIStatus.capabilityList))
        src[PCIReg.bist] = .device(emulatedBits: 0)
        for o in PCIReg.subsystemVendorID..<PCIReg.romAddress { src[o] = .device(emulatedBits: 0) }
        for o in PCIReg.interruptPin..<PCIReg.configSpaceSize { src[o] = .device(emulatedBits: 0) }

        // Capabilities: walk the real list, keep some, relink them.
        let found = Self.walkCapabilities(realConfig)
        var kept: [AssignedCapability] = []
        var hidden: [AssignedCapability] = []
        var msixConfig: MSIXConfiguration?
        var msixOffset: Int?
        var msiState: MSICapability?
        for (id, offset) in found {
            // The structure may not run into the next capability (by address).
            let nextStart = found.map { $0.offset }.filter { $0 > offset }.min() ?? PCIReg.configSpaceSize
            switch id {
            case PCICapabilityID.msix where msixOffset == nil && offset + MSIXCapability.length <= PCIReg.configSpaceSize:
                let control = realConfig.read16(offset + MSIXCapability.messageControl)
                let tableReg = realConfig.read32(offset + MSIXCapability.tableRegister)
                let pbaReg = realConfig.read32(offset + MSIXCapability.pbaRegister)
                let m = MSIXConfiguration(vectors: Int(control & MSIXCapability.tableSizeMask) + 1,
                                          tableBar: Int(tableReg & 7), tableOffset: tableReg & 0xFFFF_FFF8,
                                          pbaBar: Int(pbaReg & 7), pbaOffset: pbaReg & 0xFFFF_FFF8)
                try m.validate(against: c)
                for i in 0..<MSIXCapability.length { c.set8(offset + i, realConfig.read8(offset + i)) }
                c.set16(offset + MSIXCapability.messageControl,
                        control & ~(MSIXCapability.enable | MSIXCapability.functionMask))
                c.setMask16(offset + MSIXCapability.messageControl,
                            writable: MSIXCapability.enable | MSIXCapability.functionMask)
                for i in 0..<MSIXCapability.length { src[offset + i] = .emulated }
                msixConfig = m
                msixOffset = offset
                kept.append(AssignedCapability(id: id, offset: offset, length: MSIXCapability.length))
            case PCICapabilityID.msi where msiState == nil && Self.msiIsKept(offset: offset, config: realConfig):
                let control = realConfig.read16(offset + MSICapabilityLayout.messageControl)
                let masking = control & MSICapabilityLayout.perVectorMaskCapable != 0
                let length = MSICapabilityLayout.length(perVectorMasking: masking)
                let config = MSIConfiguration(perVectorMasking: masking)
                let layout = MSICapabilityLayout.bytes(for: config)
                for i in 0..<length {
                    c.set8(offset + i, layout.bytes[i])
                    c.setMask(offset: offset + i, writable: layout.writableMask[i])
                    src[offset + i] = .emulated
                }
                msiState = MSICapability(configuration: config, offset: offset)
                kept.append(AssignedCapability(id: id, offset: offset, length: length))
            case PCICapabilityID.powerManagement, PCICapabilityID.pciExpress, PCICapabilityID.vendorSpecific:
                let length = min(Self.passthroughLength(id: id, offset: offset, config: realConfig),
                                 PCIReg.configSpaceSize - offset)
                kept.append(AssignedCapability(id: id, offset: offset, length: length))
            default:
                let length = min(Self.hiddenLength(id: id, offset: offset, config: realConfig),
                                 nextStart - offset, PCIReg.configSpaceSize - offset)
                hidden.append(AssignedCapability(id: id, offset: offset, length: length))
            }
        }
        // Hidden bytes read 0; a kept passed-through structure wins where a
        // malformed list makes them overlap; kept headers are emulated.
        for h in hidden {
            for o in h.offset..<(h.offset + h.length) { src[o] = .emulated }
        }
        let emulatedCaps: Set<UInt8> = [PCICapabilityID.msi, PCICapabilityID.msix]
        for k in kept where !emulatedCaps.contains(k.id) {
            for o in (k.offset + 2)..<(k.offset + max(k.length, 2)) { src[o] = .device(emulatedBits: 0) }
        }
        for k in kept where emulatedCaps.contains(k.id) {
            for o in k.offset..<(k.offset + k.length) { src[o] = .emulated }
        }
        c.set8(PCIReg.capabilityList, UInt8(truncatingIfNeeded: kept.first?.offset ?? 0))
        for (i, k) in kept.enumerated() {
            c.set8(k.offset, k.id)
            c.set8(k.offset + 1, UInt8(truncatingIfNeeded: i + 1 < kept.count ? kept[i + 1].offset : 0))
            c.setMask16(k.offset, writable: 0)
            src[k.offset] = .emulated
            src[k.offset + 1] = .emulated
        }
        c.set16(PCIReg.status, kept.isEmpty ? 0 : PCIStatus.capabilityList)

        capabilities = kept
        hiddenCapabilities = hidden
        sources = src
        msix = msixConfig.map { MSIXTable(configuration: $0) }
        msixCapabilityOffset = msixOffset
        msi = msiState
        interruptPin = PCIInterruptPin(rawValue: realConfig.read8(PCIReg.interruptPin))
        state = Mutex(State(config: c))
    }

    // MARK: Queries

    /// The interrupt mode last reported to the backend.
    public var interruptMode: AssignedInterruptMode { state.withLock { $0.mode } }

    /// The MSI-X table and PBA byte ranges inside their BARs: the VMM keeps
    /// these (widened to pages, see `directMapRanges`) trapped when it maps
    /// the rest of a BAR into the guest. Empty without MSI-X.
    public var msixTableRanges: [(bar: Int, range: Range<UInt64>)] {
        guard let c = msix?.configuration else { return [] }
        let t = UInt64(c.tableOffset), p = UInt64(c.pbaOffset)
        return [(bar: c.tableBar, range: t..<(t + c.tableSize)), (bar: c.pbaBar, range: p..<(p + c.pbaSize))]
    }

    /// `directMapRanges` for BAR `bar` of this function: its region size and
    /// its MSI-X table / PBA ranges.
    public func directMapRanges(bar: Int, mappable: [Range<UInt64>], pageSize: UInt64 = 4096) -> [Range<UInt64>] {
        guard bar >= 0, bar < PCIReg.barCount, let b = barTable[bar], b.kind.isMemory else { return [] }
        return Self.directMapRanges(barSize: b.size, mappable: mappable,
                                    trapped: msixTableRanges.filter { $0.bar == bar }.map(\.range), pageSize: pageSize)
    }

    /// The parts of a BAR the VMM can map straight into the guest: the
    /// `mappable` areas (VFIO sparse-mmap areas, or the whole BAR) shrunk to
    /// whole pages inside `[0, barSize)`, minus the `trapped` ranges widened
    /// to whole pages (a page that holds any trapped byte stays trapped).
    /// The result is page aligned, sorted, merged (adjacent ranges join) and
    /// has no empty range. A BAR smaller than a page has nothing mappable.
    /// `pageSize` must be a power of two, else the result is empty.
    public static func directMapRanges(barSize: UInt64, mappable: [Range<UInt64>], trapped: [Range<UInt64>],
                                       pageSize: UInt64 = 4096) -> [Range<UInt64>] {
        guard pageSize.isPowerOfTwo else { return [] }
        let pageMask = pageSize - 1
        let limit = barSize & ~pageMask
        let areas = merge(mappable.compactMap { r -> Range<UInt64>? in
            guard let lo = alignUp(r.lowerBound, pageSize) else { return nil }
            let hi = min(r.upperBound, limit) & ~pageMask
            return lo < hi ? lo..<hi : nil
        })
        let holes = merge(trapped.compactMap { r -> Range<UInt64>? in
            guard !r.isEmpty else { return nil }
            let lo = r.lowerBound & ~pageMask
            let hi = alignUp(r.upperBound, pageSize) ?? UInt64.max
            return lo..<hi
        })
        var out: [Range<UInt64>] = []
        for area in areas {
            var start = area.lowerBound
            for hole in holes where hole.upperBound > start && hole.lowerBound < area.upperBound {
                if hole.lowerBound > start { out.append(start..<hole.lowerBound) }
                start = max(start, hole.upperBound)
            }
            if start < area.upperBound { out.append(start..<area.upperBound) }
        }
        return merge(out)
    }

    /// Sorts ranges and joins overlapping or adjacent ones; drops empty ones.
    static func merge(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
        var out: [Range<UInt64>] = []
        for r in ranges.filter({ !$0.isEmpty }).sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = out.last, r.lowerBound <= last.upperBound {
                out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    // MARK: PCIDevice: config space

    private enum ConfigTarget: Equatable {
        case outside, extended, emulated, device
    }

    private func configTarget(_ offset: Int, _ i: Int) -> ConfigTarget {
        let (o, overflow) = offset.addingReportingOverflow(i)
        guard !overflow, o >= 0, o < PCIReg.extendedConfigSpaceSize else { return .outside }
        guard o < PCIReg.configSpaceSize else { return .extended }
        return sources[o] == .emulated ? .emulated : .device
    }

    public func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        state.withLock { s in
            if let m = msi, m.configuration.perVectorMasking,
               rangesOverlap(offset, data.count, m.offset + MSICapabilityLayout.pendingBits, 4) {
                s.config.set32(m.offset + MSICapabilityLayout.pendingBits, m.pendingRegister)
            }
            forEachRun(data.count, { configTarget(offset, $0) }) { a, b, target in
                // SAFETY: a..<b is a non-empty sub-range of 0..<data.count.
                let part = UnsafeMutableRawBufferPointer(rebasing: data[a..<b])
                // Only the outside target can have an overflowing offset.
                let start = offset &+ a
                switch target {
                case .outside:
                    fillAllOnes(part)
                case .extended:
                    for i in 0..<part.count { part[i] = 0 }
                case .emulated:
                    s.config.read(offset: start, data: part)
                case .device:
                    backend.readConfig(offset: start, data: part)
                    for i in 0..<part.count {
                        if case let .device(bits) = sources[start + i], bits != 0 {
                            part[i] = part[i] & ~bits | s.config.read8(start + i) & bits
                        }
                    }
                }
            }
        }
    }

    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {
        state.withLock { s in
            forEachRun(data.count, { configTarget(offset, $0) }) { a, b, target in
                // SAFETY: a..<b is a non-empty sub-range of 0..<data.count.
                let part = UnsafeRawBufferPointer(rebasing: data[a..<b])
                let start = offset &+ a
                switch target {
                case .outside, .extended:
                    break
                case .emulated:
                    s.config.write(offset: start, data: part)
                case .device:
                    var bytes = Array(part)
                    for i in 0..<bytes.count {
                        if case let .device(bits) = sources[start + i] { bytes[i] &= ~bits }
                    }
                    // SAFETY: the buffer is `bytes` itself, valid for the closure.
                    bytes.withUnsafeBytes { backend.writeConfig(offset: start, data: $0) }
                }
            }
            if let t = msix, let cap = msixCapabilityOffset,
               rangesOverlap(offset, data.count, cap + MSIXCapability.messageControl, 2) {
                let control = s.config.read16(cap + MSIXCapability.messageControl)
                t.setControl(enabled: control & MSIXCapability.enable != 0,
                             functionMasked: control & MSIXCapability.functionMask != 0)
            }
            if let m = msi,
               rangesOverlap(offset, data.count, m.offset, MSICapabilityLayout.length(perVectorMasking: m.configuration.perVectorMasking)) {
                m.load(from: s.config)
            }
            updateMode(&s)
        }
    }

    /// The emulated BARs as the guest programmed them.
    public var barRegions: [PCIBarRegion] {
        state.withLock { $0.config.barRegions }
    }

    public func attached(_ context: PCIAttachContext) {
        msix?.attach(router: context.msiRouter, device: context.address)
        msi?.attach(router: context.msiRouter, device: context.address)
        state.withLock { s in
            s.intxGSI = context.intxGSI
            updateMode(&s)
        }
    }

    /// Reports the mode the capabilities now select, if it changed.
    private func updateMode(_ s: inout State) {
        let mode: AssignedInterruptMode
        if let t = msix, t.isEnabled {
            mode = .msix(vectors: t.vectorCount)
        } else if let m = msi, m.isEnabled {
            mode = .msi(vectors: 1)
        } else if interruptPin != nil, let gsi = s.intxGSI {
            mode = .intx(gsi: gsi)
        } else {
            mode = .none
        }
        guard mode != s.mode else { return }
        s.mode = mode
        backend.setInterruptMode(mode)
    }

    // MARK: PCIDevice: BARs

    private enum BarTarget: Equatable {
        case unclaimed, device, msixTable, msixPBA
    }

    private func barTarget(_ index: Int, _ offset: UInt64, _ i: Int) -> BarTarget {
        let (o, overflow) = offset.addingReportingOverflow(UInt64(i))
        guard !overflow, index >= 0, index < barTable.count, let bar = barTable[index] else { return .unclaimed }
        if let c = msix?.configuration {
            if index == c.tableBar, relative(o, UInt64(c.tableOffset), c.tableSize) != nil { return .msixTable }
            if index == c.pbaBar, relative(o, UInt64(c.pbaOffset), c.pbaSize) != nil { return .msixPBA }
        }
        return o < bar.size ? .device : .unclaimed
    }

    public func readBar(_ index: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        forEachRun(data.count, { barTarget(index, offset, $0) }) { a, b, target in
            // SAFETY: a..<b is a non-empty sub-range of 0..<data.count.
            let part = UnsafeMutableRawBufferPointer(rebasing: data[a..<b])
            let start = offset &+ UInt64(a)
            switch target {
            case .device:
                backend.readBar(index, offset: start, data: part)
            case .msixTable:
                if let t = msix { t.readTable(offset: start - UInt64(t.configuration.tableOffset), data: part) }
            case .msixPBA:
                if let t = msix { t.readPBA(offset: start - UInt64(t.configuration.pbaOffset), data: part) }
            case .unclaimed:
                fillAllOnes(part)
            }
        }
    }

    public func writeBar(_ index: Int, offset: UInt64, data: UnsafeRawBufferPointer) {
        forEachRun(data.count, { barTarget(index, offset, $0) }) { a, b, target in
            // SAFETY: a..<b is a non-empty sub-range of 0..<data.count.
            let part = UnsafeRawBufferPointer(rebasing: data[a..<b])
            let start = offset &+ UInt64(a)
            switch target {
            case .device:
                // The expansion ROM is read-only (PCI 3.0 §6.2.5.2).
                if index != PCIBarRegion.romIndex { backend.writeBar(index, offset: start, data: part) }
            case .msixTable:
                if let t = msix { t.writeTable(offset: start - UInt64(t.configuration.tableOffset), data: part) }
            case .msixPBA:
                if let t = msix { t.writePBA(offset: start - UInt64(t.configuration.pbaOffset), data: part) }
            case .unclaimed:
                break
            }
        }
    }

    // MARK: Init helpers

    /// `size` rounded up to a power of two of at least `minimum`, or nil
    /// above 2^63.
    static func decodeSize(_ size: UInt64, minimum: UInt64) -> UInt64? {
        let s = max(size, minimum)
        if s.isPowerOfTwo { return s }
        guard s <= 1 << 63 else { return nil }
        return 1 << UInt64(64 - (s - 1).leadingZeroBitCount)
    }

    /// The real capability list, as Linux's `pci_find_capability` walks it:
    /// only when Status.CAP_LIST is set; pointers masked to 4-byte alignment;
    /// stop at a pointer below 0x40 or above 0xFC, an ID of 0xFF, an offset
    /// seen before (a loop), or after 48 entries.
    static func walkCapabilities(_ config: PCIConfigSpace) -> [(id: UInt8, offset: Int)] {
        guard config.status & PCIStatus.capabilityList != 0 else { return [] }
        var out: [(id: UInt8, offset: Int)] = []
        var seen = Set<Int>()
        var pos = Int(config.read8(PCIReg.capabilityList)) & ~3
        while out.count < maxCapabilities, pos >= PCIReg.headerSize, pos <= 0xFC, seen.insert(pos).inserted {
            let id = config.read8(pos)
            guard id != 0xFF else { break }
            out.append((id: id, offset: pos))
            pos = Int(config.read8(pos + 1)) & ~3
        }
        return out
    }

    /// A real MSI capability is shown only in its 64-bit form
    /// (PCI_MSI_FLAGS_64BIT) and when it fits below 0x100.
    static func msiIsKept(offset: Int, config: PCIConfigSpace) -> Bool {
        let control = config.read16(offset + MSICapabilityLayout.messageControl)
        let masking = control & MSICapabilityLayout.perVectorMaskCapable != 0
        return control & MSICapabilityLayout.is64Bit != 0
            && offset + MSICapabilityLayout.length(perVectorMasking: masking) <= PCIReg.configSpaceSize
    }

    /// The size of a kept, passed-through capability structure.
    static func passthroughLength(id: UInt8, offset: Int, config: PCIConfigSpace) -> Int {
        switch id {
        case PCICapabilityID.powerManagement:
            return 8 // PCI_PM_SIZEOF
        case PCICapabilityID.pciExpress:
            // PCI_EXP_FLAGS_VERS: version 2 has the full structure,
            // PCI_CAP_EXP_SIZEOF 0x3C; version 1 endpoints stop at
            // PCI_CAP_EXP_ENDPOINT_SIZEOF_V1 (20).
            return config.read16(offset + 2) & 0xF >= 2 ? 0x3C : 20
        default:
            // Vendor-specific: the length byte at +2 (PCI_CAP_FLAGS), at least
            // the three bytes that hold it.
            return max(Int(config.read8(offset + 2)), 3)
        }
    }

    /// How many bytes of a hidden capability read 0 (before clipping to the
    /// next capability): the structure's size where pci_regs.h gives one,
    /// else the 4-byte header.
    static func hiddenLength(id: UInt8, offset: Int, config: PCIConfigSpace) -> Int {
        switch id {
        case 0x02: return 12 // PCI_CAP_ID_AGP, PCI_AGP_SIZEOF
        case 0x03: return 8  // PCI_CAP_ID_VPD, PCI_CAP_VPD_SIZEOF
        case 0x04, 0x06, 0x0A: return 4 // SLOTID, CHSWP, DBG: one dword
        case PCICapabilityID.msi:
            // PCI_MSI_DATA_32 + 2 = 10, with mask/pending PCI_MSI_PENDING_32 + 4
            // = 20; 64-bit: 14 / 24 (PCI_MSI_DATA_64, PCI_MSI_PENDING_64).
            let control = config.read16(offset + MSICapabilityLayout.messageControl)
            let mask = control & MSICapabilityLayout.perVectorMaskCapable != 0
            if control & MSICapabilityLayout.is64Bit != 0 { return mask ? 24 : 14 }
            return mask ? 20 : 10
        case 0x07: return 8  // PCI_CAP_ID_PCIX, PCI_CAP_PCIX_SIZEOF_V0
        case 0x0C: return 8  // PCI_CAP_ID_SHPC: DWORD select + data
        case 0x0D: return 8  // PCI_CAP_ID_SSVID
        case PCICapabilityID.msix: return MSIXCapability.length
        case 0x12: return 8  // PCI_CAP_ID_SATA, PCI_SATA_SIZEOF_SHORT
        case 0x13: return 6  // PCI_CAP_ID_AF, PCI_CAP_AF_SIZEOF
        default: return 4
        }
    }
}

/// Calls `body(start, end, class)` for each maximal run of indices in
/// `0..<count` that `classify` puts in the same class, in order.
private func forEachRun<C: Equatable>(_ count: Int, _ classify: (Int) -> C, _ body: (Int, Int, C) -> Void) {
    var i = 0
    while i < count {
        let c = classify(i)
        var j = i + 1
        while j < count, classify(j) == c { j += 1 }
        body(i, j, c)
        i = j
    }
}
