import Bits
import CShim
import HostSys
import Synchronization

/// How the user names a device to assign.
public enum AssignedDeviceSpec: Equatable, Sendable, CustomStringConvertible {
    /// `0000:01:00.0` (or `01:00.0`, domain 0).
    case pciAddress(String)
    /// `/dev/vfio/devices/vfioN`.
    case cdev(String)

    /// A path (starting with `/`) is a cdev, anything else a PCI address.
    public init(_ text: String) {
        self = text.hasPrefix("/") ? .cdev(text) : .pciAddress(text)
    }

    public var description: String {
        switch self {
        case let .pciAddress(s), let .cdev(s): return s
        }
    }
}

/// What `AssignedVFIODevice.reset()` managed, best first.
public enum DeviceResetKind: Equatable, Sendable {
    /// A function-level reset (FLR): the device was reset on its own.
    case functionLevel
    /// A secondary bus reset of the bus the device sits on.
    case bus
    /// `VFIO_DEVICE_RESET` on a device without FLR when no bus reset was
    /// possible: usually a power-management reset, which many devices ignore.
    case withoutFLR(whyNoBusReset: String)
    /// The device was not reset: not bound yet, or it has no reset at all.
    case none

    /// For the log: "reset (FLR)", "reset (bus reset)", ...
    public var text: String {
        switch self {
        case .functionLevel: return "reset (FLR)"
        case .bus: return "reset (bus reset)"
        case .withoutFLR: return "reset (no FLR, no bus reset: power-management reset)"
        case .none: return "not reset (the device has no reset)"
        }
    }
}

/// One host PCI device assigned to a VM through its VFIO cdev and iommufd.
///
/// The VMM's order: `open` (sysfs checks, opens the cdev), register
/// `cdev` with kvm-vfio (`VFIODeviceCdev.register(with:)`, which must come
/// before the bind), `bindAndAttach` (bind, attach to the VM's IOAS, read device,
/// region and IRQ info), `IOMMUContext.checkGuestRAM` / `mapGuestRAM`,
/// `mapRegion` for the BARs it maps into the guest and `readRegion` /
/// `writeRegion` / `readConfig` / `writeConfig` for the trapped parts, the
/// IRQ calls as the guest programs MSI/MSI-X/INTx, and `close` once no vCPU
/// runs any more.
///
/// Thread safety: the device's state is behind one `Mutex`. Binding, the IRQ
/// calls, `mapRegion` and `close` hold it across their ioctls, so they happen
/// one at a time; region and config accesses hold it only to look the region
/// up, and do their pread/pwrite without it.
public final class AssignedVFIODevice: Sendable {
    public let bdf: String
    public let cdevPath: String
    public let cdev: VFIODeviceCdev
    /// Where region reads, writes and mmaps go (the cdev's fd, or a test fake).
    public let io: VFIODeviceIO

    private struct State {
        var deviceID: UInt32?
        var pageTableID: UInt32?
        /// The IOAS (or HWPT) id the device was attached to: `pageTableID`'s source.
        var ioasID: UInt32?
        var info = VFIODeviceInfo(flags: 0, numRegions: 0, numIRQs: 0)
        var regions: [UInt32: VFIORegionInfo] = [:]
        var irqs: [VFIOIRQIndex: VFIOIRQInfo] = [:]
        var activeIRQ: VFIOIRQIndex?
        var activeVectors = 0
        var isClosed = false
        var context: IOMMUContext?
        /// What `mapRegion` mapped (addresses as bit patterns), unmapped by `close`.
        var mappings: [(address: UInt, length: UInt64)] = []
    }
    private let state = Mutex(State())

    /// iommufd's id for the device, set by `bindAndAttach`.
    public var deviceID: UInt32? { state.withLock { $0.deviceID } }
    /// The page table (the IOAS's automatic HWPT) the device is attached to.
    public var pageTableID: UInt32? { state.withLock { $0.pageTableID } }
    /// The IOAS the device is attached to now (the VM's identity IOAS, a
    /// guest domain's or the blocked one; see `GuestDomains`), nil when detached.
    public var ioasID: UInt32? { state.withLock { $0.ioasID } }
    /// Read by `bindAndAttach` (the kernel refuses it before the bind).
    public var info: VFIODeviceInfo { state.withLock { $0.info } }
    /// The regions the device has, by VFIO index: BAR0-5 = 0-5, ROM = 6,
    /// config space = 7, then VGA and device-specific ones. Absent ones
    /// (EINVAL, or size 0 as vfio-pci reports unimplemented BARs and the upper
    /// half of a 64-bit BAR) are left out.
    public var regions: [UInt32: VFIORegionInfo] { state.withLock { $0.regions } }
    /// The interrupt kinds the device has (EINVAL or a count of 0 left out).
    public var irqs: [VFIOIRQIndex: VFIOIRQInfo] { state.withLock { $0.irqs } }
    /// The interrupt kind enabled now, and with how many vectors.
    public var activeIRQ: VFIOIRQIndex? { state.withLock { $0.activeIRQ } }
    public var activeVectors: Int { state.withLock { $0.activeVectors } }
    public var isClosed: Bool { state.withLock { $0.isClosed } }
    /// The context the device was bound through (`bindAndAttach`), nil once closed.
    var boundContext: IOMMUContext? { state.withLock { $0.context } }

    /// "pid N (comm)" of other processes holding the device, for EBUSY.
    private let findHolders: @Sendable () -> [String]

    public static let romRegion: UInt32 = SHIM_VFIO_PCI_ROM_REGION_INDEX
    public static let configRegion: UInt32 = SHIM_VFIO_PCI_CONFIG_REGION_INDEX
    /// VFIO_PCI_VGA_REGION_INDEX (linux/vfio.h), not exported by the shim.
    static let vgaRegion: UInt32 = 8
    /// More region indexes than this is a confused kernel, not a device.
    static let maxRegions: UInt32 = 64

    /// A device over any cdev and I/O (tests pass fakes); `findHolders`
    /// lists other processes holding it when the bind says it is busy.
    public init(cdev: VFIODeviceCdev, io: VFIODeviceIO, bdf: String, cdevPath: String,
                findHolders: @escaping @Sendable () -> [String] = { [] }) {
        self.cdev = cdev
        self.io = io
        self.bdf = bdf
        self.cdevPath = cdevPath
        self.findHolders = findHolders
    }

    deinit { close() }

    /// "BAR2", "ROM", "config space", "region 9".
    public static func regionName(_ index: UInt32) -> String {
        switch index {
        case 0...5: return "BAR\(index)"
        case romRegion: return "ROM"
        case configRegion: return "config space"
        case vgaRegion: return "VGA region"
        default: return "region \(index)"
        }
    }

    // MARK: - Opening

    /// The PCI address and cdev of `spec`, after the sysfs checks (bound to
    /// vfio-pci, viable group, has a cdev); the errors say how to fix it.
    public static func resolve(_ spec: AssignedDeviceSpec, discovery: SysfsDiscovery) throws -> (bdf: String, cdevPath: String) {
        switch spec {
        case let .pciAddress(text):
            let bdf = SysfsDiscovery.normalizeBDF(text)
            _ = try discovery.checkAssignable(bdf)
            guard let path = discovery.cdev(bdf) else { throw VFIOError.noCdev(bdf: bdf) }
            return (bdf, path)
        case let .cdev(path) where PassedDescriptor.isPassed(path):
            // A descriptor a launcher passed: its device number names it in sysfs.
            let kind: PassedDescriptor.Kind
            do { kind = try PassedDescriptor.kind(of: path, purpose: "a VFIO cdev") } catch let e as SysError {
                throw VFIOError.openFailed(path: path, e)
            }
            guard case let .characterDevice(major, minor) = kind,
                  let bdf = discovery.bdf(forCharDevice: major, minor: minor) else { throw VFIOError.notAVFIOCdev(path: path) }
            _ = try discovery.checkAssignable(bdf)
            return (bdf, path)
        case let .cdev(path):
            guard let bdf = discovery.bdf(forCdev: path) else { throw VFIOError.notAVFIOCdev(path: path) }
            _ = try discovery.checkAssignable(bdf)
            return (bdf, path)
        }
    }

    /// Checks the device in sysfs and opens its cdev. Nothing is bound yet.
    public static func open(_ spec: AssignedDeviceSpec, discovery: SysfsDiscovery = SysfsDiscovery()) throws -> AssignedVFIODevice {
        let (bdf, path) = try resolve(spec, discovery: discovery)
        let cdev = try VFIODeviceCdev.open(path: path, bdf: bdf)
        var paths = [path]
        if let canonical = discovery.cdev(bdf), canonical != path { paths.append(canonical) }
        if let group = discovery.iommuGroup(bdf) { paths.append("/dev/vfio/\(group)") }
        return AssignedVFIODevice(
            cdev: cdev, io: FileDeviceIO(fd: cdev.performer.descriptor), bdf: bdf, cdevPath: path,
            findHolders: { [paths] in ProcScan.holders(of: paths).map { "pid \($0.pid) (\($0.command))" } })
    }

    // MARK: - Binding

    /// Binds the device to `ctx`'s iommufd, attaches it to the VM's IOAS, and
    /// reads its info, regions and IRQs. The corresponding ioctls are
    /// `VFIO_DEVICE_BIND_IOMMUFD` and `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    public func bindAndAttach(_ ctx: IOMMUContext) throws {
        try state.withLock { s in
            guard !s.isClosed else { throw VFIOError.deviceNotReady(bdf: bdf, "the device is closed") }
            guard s.deviceID == nil else { throw VFIOError.deviceNotReady(bdf: bdf, "the device is already bound to an iommufd") }
            do {
                s.deviceID = try cdev.bind(to: ctx.iommufd)
            } catch let VFIOError.ioctl(e) where e.errno == Errno.EBUSY || e.errno == Errno.EINVAL {
                // EBUSY: another process has the legacy group open. EINVAL: the
                // cdev is already open and bound elsewhere (cdevs are exclusive).
                let holders = findHolders()
                if e.errno == Errno.EBUSY || !holders.isEmpty { throw VFIOError.deviceBusy(bdf: bdf, holders: holders) }
                throw VFIOError.ioctl(e)
            }
            try attachPageTable(ctx, &s)
            s.context = ctx
        }
        ctx.addEndpoint(self)
        try discover()
    }

    /// Attaches the bound device to `ctx`'s IOAS (again, after
    /// `detachPageTable`). The corresponding ioctl is `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    func attachPageTable(_ ctx: IOMMUContext) throws {
        try state.withLock { s in try attachPageTable(ctx, &s) }
    }

    private func attachPageTable(_ ctx: IOMMUContext, _ s: inout State) throws {
        try attach(ptID: ctx.ioas.id, &s)
    }

    /// Moves the bound device onto IOAS (or HWPT) `ptID` of the iommufd it is
    /// bound to, keeping everything else (binding, regions, IRQs). When it is
    /// attached somewhere already, the kernel replaces the attachment in one
    /// step (`iommufd_device_replace`, Linux 6.6+): its DMA goes through the
    /// old page table up to the switch and through the new one after, never
    /// through none. On failure it stays where it was. Attaching to the IOAS
    /// it is on already does nothing. The corresponding ioctl is
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    public func reattach(ptID: UInt32) throws {
        try state.withLock { s in
            if s.ioasID == ptID, s.pageTableID != nil { return }
            try attach(ptID: ptID, &s)
        }
    }

    private func attach(ptID: UInt32, _ s: inout State) throws {
        guard !s.isClosed, s.deviceID != nil else { throw VFIOError.deviceNotReady(bdf: bdf, "it is not bound to an iommufd") }
        do {
            s.pageTableID = try cdev.attach(ptID: ptID)
            s.ioasID = ptID
        } catch let VFIOError.ioctl(e) where e.errno == Errno.EPERM {
            throw VFIOError.noInterruptRemapping(bdf: bdf)
        }
    }

    /// Detaches the device from its IOAS: its DMA faults until it is attached
    /// again. The corresponding ioctl is `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    func detachPageTable() throws {
        try state.withLock { s in
            guard !s.isClosed, s.pageTableID != nil else { return }
            try cdev.detach()
            s.pageTableID = nil
            s.ioasID = nil
        }
    }

    /// Device info, then every region and IRQ kind it reports.
    func discover() throws {
        let info = try cdev.info()
        state.withLock { $0.info = info }
        var r = [UInt32: VFIORegionInfo]()
        for index in 0..<min(info.numRegions, Self.maxRegions) {
            do {
                let region = try cdev.regionInfo(index)
                if region.size > 0 { r[index] = region }
            } catch let VFIOError.ioctl(e) where e.errno == Errno.EINVAL {
                continue
            }
        }
        state.withLock { $0.regions = r }
        var q = [VFIOIRQIndex: VFIOIRQInfo]()
        for kind in VFIOIRQIndex.allCases where kind.rawValue < info.numIRQs {
            do {
                let i = try cdev.irqInfo(kind.rawValue)
                if i.count > 0 { q[kind] = i }
            } catch let VFIOError.ioctl(e) where e.errno == Errno.EINVAL {
                continue
            }
        }
        state.withLock { $0.irqs = q }
    }

    // MARK: - Region access (vCPU threads: no throwing, no allocation)

    /// The fd offset of `count` bytes at `offset` of region `index`, or nil
    /// when the region is absent, lacks the access, or the bytes fall outside it.
    @inline(__always)
    private func fileOffset(_ index: UInt32, _ offset: UInt64, _ count: Int, write: Bool) -> UInt64? {
        let region = state.withLock { s in s.isClosed ? nil : s.regions[index] }
        guard let r = region, write ? r.isWritable : r.isReadable else { return nil }
        let (end, o1) = offset.addingReportingOverflow(UInt64(count))
        let (at, o2) = r.offset.addingReportingOverflow(offset)
        guard !o1, !o2, end <= r.size else { return nil }
        return at
    }

    /// Reads `buffer.count` bytes at `offset` of region `index`. Out of range,
    /// absent, or failed: the buffer is filled with 0xFF (what a read of
    /// nothing returns on PCI) and the result is false.
    @discardableResult
    public func readRegion(_ index: UInt32, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard let at = fileOffset(index, offset, buffer.count, write: false), io.read(into: buffer, at: at) else {
            Self.fillAllOnes(buffer)
            return false
        }
        return true
    }

    /// What a read of nothing returns on PCI.
    @inline(__always)
    public static func fillAllOnes(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count > 0 else { return }
        _ = buffer.initializeMemory(as: UInt8.self, repeating: 0xFF)
    }

    /// Writes `buffer` at `offset` of region `index`; out of range, absent or
    /// failed writes are dropped and return false.
    @discardableResult
    public func writeRegion(_ index: UInt32, offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool {
        guard let at = fileOffset(index, offset, buffer.count, write: true) else { return false }
        return io.write(from: buffer, at: at)
    }

    /// Reads the device's config space (region 7) at `offset`, as `readRegion`.
    @discardableResult
    public func readConfig(offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard offset >= 0 else {
            Self.fillAllOnes(buffer)
            return false
        }
        return readRegion(Self.configRegion, offset: UInt64(offset), into: buffer)
    }

    /// Writes the device's config space (region 7) at `offset`, as `writeRegion`.
    /// vfio-pci virtualizes parts of it (BARs, MSI/MSI-X control).
    @discardableResult
    public func writeConfig(offset: Int, from buffer: UnsafeRawBufferPointer) -> Bool {
        guard offset >= 0 else { return false }
        return writeRegion(Self.configRegion, offset: UInt64(offset), from: buffer)
    }

    // MARK: - Mapping regions

    /// The parts of region `index` that may be mmapped, as offsets in the
    /// region: the sparse mmap areas when the region has them, else the whole
    /// region when it is mappable (VFIO_REGION_INFO_FLAG_MMAP; with
    /// MSIX_MAPPABLE that includes the MSI-X table, which the VMM must still
    /// trap in the guest), else none.
    public func mappableAreas(_ index: UInt32) -> [Range<UInt64>] {
        Self.mappableAreas(state.withLock { $0.regions[index] })
    }

    private static func mappableAreas(_ region: VFIORegionInfo?) -> [Range<UInt64>] {
        guard let r = region, r.isMappable else { return [] }
        return mappableRanges(regionSize: r.size, sparse: r.sparseAreas?.map { ($0.offset, $0.size) })
    }

    /// mmaps `length` bytes at `offset` of region `index` shared and
    /// read-write; `offset` must be page aligned and the bytes must lie inside
    /// one of `mappableAreas(index)`. Nothing is copied (8 GiB BARs are one
    /// mmap). The mapping stays until `close`.
    public func mapRegion(_ index: UInt32, offset: UInt64, length: UInt64) throws -> UnsafeMutableRawPointer {
        try state.withLock { s in
            guard !s.isClosed else { throw VFIOError.deviceNotReady(bdf: bdf, "the device is closed") }
            let areas = Self.mappableAreas(s.regions[index])
            let (end, o1) = offset.addingReportingOverflow(length)
            guard let r = s.regions[index], length > 0, !o1, offset % DeviceIO.pageSize == 0,
                  areas.contains(where: { $0.lowerBound <= offset && end <= $0.upperBound }) else {
                throw VFIOError.regionNotMappable(bdf: bdf, index: index, offset: offset, length: length, areas: areas)
            }
            let (at, o2) = r.offset.addingReportingOverflow(offset)
            guard !o2 else { throw VFIOError.regionNotMappable(bdf: bdf, index: index, offset: offset, length: length, areas: areas) }
            let p: UnsafeMutableRawPointer
            do {
                p = try io.map(length: length, at: at)
            } catch let e as SysError {
                throw VFIOError.regionMapFailed(bdf: bdf, index: index, e)
            }
            s.mappings.append((UInt(bitPattern: p), length))
            return p
        }
    }

    // MARK: - Interrupts

    /// Signals MSI-X vector i through `eventfds[i]` (-1: none). Disables INTx
    /// or MSI first (vfio-pci refuses to enable one kind while another is on).
    public func enableMSIX(eventfds: [Int32]) throws { try enable(.msix, eventfds) }

    /// Signals MSI vector i through `eventfds[i]`; disables the other kinds first.
    public func enableMSI(eventfds: [Int32]) throws { try enable(.msi, eventfds) }

    /// INTx through `trigger`; `resample` (a KVM resample irqfd) unmasks the
    /// line after the guest's EOI. Disables MSI/MSI-X first.
    public func enableINTx(trigger: Int32, resample: Int32? = nil) throws {
        try state.withLock { s in
            try requireIRQ(.intx, "INTx", vectors: 1, s)
            if let a = s.activeIRQ, a != .intx { try disableIRQs(a, &s) }
            try cdev.enableINTx(trigger: trigger, resample: resample)
            s.activeIRQ = .intx
            s.activeVectors = 1
        }
    }

    /// Has vfio-pci signal `eventfd` when the host wants the device back
    /// (sysfs `remove`, an unbind, a hot-unplug): until the VMM closes the
    /// device, that removal waits. False when the device has no request
    /// notification (VFIO reports none).
    public func notifyOnRequest(eventfd: Int32) throws -> Bool {
        try state.withLock { s in
            guard !s.isClosed else { throw VFIOError.deviceNotReady(bdf: bdf, "the device is closed") }
            guard s.irqs[.request] != nil else { return false }
            try cdev.enable(.request, eventfds: [eventfd])
            return true
        }
    }

    /// Turns off every vector of `kind`. The corresponding ioctl is `VFIO_DEVICE_SET_IRQS`.
    public func disableIRQs(_ kind: VFIOIRQIndex) throws {
        try state.withLock { s in try disableIRQs(kind, &s) }
    }

    private func disableIRQs(_ kind: VFIOIRQIndex, _ s: inout State) throws {
        try cdev.disable(kind)
        if s.activeIRQ == kind {
            s.activeIRQ = nil
            s.activeVectors = 0
        }
    }

    /// Once the device is bound (IRQ info known): it has `kind` with at
    /// least `vectors` vectors.
    private func requireIRQ(_ kind: VFIOIRQIndex, _ name: String, vectors: Int, _ s: State) throws {
        guard !s.isClosed else { throw VFIOError.deviceNotReady(bdf: bdf, "the device is closed") }
        guard s.deviceID != nil else { return }
        guard let i = s.irqs[kind] else {
            throw VFIOError.invalidArgument("\(bdf) has no \(name) interrupt (VFIO reports none); the guest driver must use another kind")
        }
        guard vectors <= Int(i.count) else {
            throw VFIOError.invalidArgument("\(bdf) has \(i.count) \(name) vectors, \(vectors) asked for")
        }
    }

    private func enable(_ kind: VFIOIRQIndex, _ eventfds: [Int32]) throws {
        let name = kind == .msix ? "MSI-X" : "MSI"
        guard !eventfds.isEmpty else { throw VFIOError.invalidArgument("enabling \(name) of \(bdf) with no vectors (use disableIRQs)") }
        try state.withLock { s in
            try requireIRQ(kind, name, vectors: eventfds.count, s)
            // Another kind is on, or more vectors than enabled now: the kernel
            // allocates vectors at enable time, so start over.
            if let a = s.activeIRQ, a != kind || eventfds.count > s.activeVectors { try disableIRQs(a, &s) }
            try cdev.enable(kind, eventfds: eventfds)
            s.activeIRQ = kind
            s.activeVectors = max(s.activeVectors, eventfds.count)
        }
    }

    // MARK: - Reset, coherency, close

    /// Resets the device the best way it allows, in QEMU's order: a
    /// function-level reset when the device has FLR; else a reset of its bus
    /// (`VFIO_DEVICE_PCI_HOT_RESET`), which needs a bridge above it and every
    /// device on that bus owned by this iommufd; else whatever `VFIO_DEVICE_RESET`
    /// does for a device without FLR, usually a PCI power-management reset
    /// (D3hot -> D0), which many devices ignore: DMA set up by the previous user
    /// (a NIC's receive ring) may then survive into the next guest. Nothing is
    /// done (`.none`) before the device is bound or when it has no reset at all.
    /// The corresponding ioctls are `VFIO_DEVICE_RESET` and `VFIO_DEVICE_PCI_HOT_RESET`.
    @discardableResult
    public func reset() throws -> DeviceResetKind {
        let (ready, info) = state.withLock { s in (s.deviceID != nil && !s.isClosed, s.info) }
        guard ready else { return .none }
        if info.supportsReset, hasFunctionLevelReset() {
            try cdev.reset()
            return .functionLevel
        }
        let whyNot: String
        do {
            try cdev.hotReset()
            return .bus
        } catch let VFIOError.ioctl(e) where e.errno == Errno.ENODEV {
            whyNot = "no bus reset: it sits on a root bus, with no bridge above it to reset"
        } catch let VFIOError.ioctl(e) where e.errno == Errno.EPERM || e.errno == Errno.EBUSY {
            whyNot = "no bus reset: its bus holds other devices this VM does not own"
        } catch {
            whyNot = "no bus reset: \(error)"
        }
        guard info.supportsReset else { return .none }
        try cdev.reset()
        return .withoutFLR(whyNoBusReset: whyNot)
    }

    /// Whether the device advertises a function-level reset (PCIe Device
    /// Capabilities bit 28, or the Advanced Features capability), read through VFIO.
    func hasFunctionLevelReset() -> Bool {
        var config = [UInt8](repeating: 0, count: 256)
        guard config.withUnsafeMutableBytes({ readConfig(offset: 0, into: $0) }) else { return false }
        return PCIConfigParser.hasFunctionLevelReset(config: config)
    }

    /// The device's PCIe No Snoop bit, read from its config space through VFIO.
    public func noSnoopState() -> NoSnoopState {
        guard let r = state.withLock({ $0.regions[Self.configRegion] }) else {
            return .unknown("\(bdf) has no config space region")
        }
        var config = [UInt8](repeating: 0, count: Int(min(r.size, 256)))
        let ok = config.withUnsafeMutableBytes { readConfig(offset: 0, into: $0) }
        guard ok else { return .unknown("cannot read the config space of \(bdf) through VFIO") }
        return PCIConfigParser.noSnoop(config: config)
    }

    /// Whether this device makes the guest's WBINVD a real flush: the IOMMU's
    /// report (`IOMMU_GET_HW_INFO`) and the No Snoop bit, `noSnoopEnabled`
    /// when given, else read from the device (unknown counts as enabled).
    public func coherency(noSnoopEnabled: Bool? = nil) throws -> CoherencyVerdict {
        guard let ctx = state.withLock({ s in s.isClosed ? nil : s.context }) else {
            throw VFIOError.deviceNotReady(bdf: bdf, "its DMA coherency is known only once it is bound to an iommufd (bindAndAttach)")
        }
        let hw = try cdev.hardwareInfo(ctx.iommufd)
        let noSnoop = noSnoopEnabled ?? (noSnoopState().isEnabled ?? true)
        return CoherencyVerdict.decide(iommu: hw, hwptEnforcesCoherency: nil, deviceNoSnoopEnabled: noSnoop)
    }

    /// Disables interrupts, detaches from the IOAS, unmaps the regions and
    /// closes the fd; errors on the way are ignored (the fd close undoes it
    /// all in the kernel anyway). Idempotent. No vCPU may use the device
    /// (or a mapping) any more.
    public func close() {
        let context: IOMMUContext? = state.withLock { s in
            guard !s.isClosed else { return nil }
            s.isClosed = true
            if let a = s.activeIRQ { _ = try? cdev.disable(a) }
            s.activeIRQ = nil
            s.activeVectors = 0
            if s.pageTableID != nil { _ = try? cdev.detach() }
            s.pageTableID = nil
            s.ioasID = nil
            for m in s.mappings {
                if let p = UnsafeMutableRawPointer(bitPattern: m.address) { io.unmap(p, length: m.length) }
            }
            s.mappings.removeAll()
            let context = s.context
            s.context = nil
            cdev.close()
            s.deviceID = nil
            return context
        }
        context?.removeEndpoint(self)
    }
}
