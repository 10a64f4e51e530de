import Bits
import HostSys
import Synchronization

/// A PCI device served by a vfio-user server: what `AssignedVFIODevice` is
/// for a VFIO cdev, with the same shape (regions, config space, mappable
/// areas, interrupts by eventfd, reset), over `VFIOUserClient`.
///
/// Region accesses come from vCPU threads; each is a REGION_READ or
/// REGION_WRITE round trip, bounded by the client's time limit. Once the
/// server is gone every read returns all ones and every write is dropped,
/// as from a device pulled out of its slot.
public final class VFIOUserDevice: Sendable {
    /// VFIO's PCI region and IRQ indexes, which vfio-user keeps
    /// (linux/vfio.h: VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_*_IRQ_INDEX).
    public static let configRegion: UInt32 = 7
    public static let romRegion: UInt32 = 6
    public static let intxIndex: UInt32 = 0
    public static let msiIndex: UInt32 = 1
    public static let msixIndex: UInt32 = 2
    /// Regions looked at: BARs 0-5, the ROM, config space (VGA and
    /// device-specific regions above are not used).
    static let regionsUsed: UInt32 = 8

    public let client: VFIOUserClient
    /// The socket path, for log lines.
    public let name: String
    public let info: VFIOUserDeviceInfo
    public let regions: [UInt32: VFIOUserRegionInfo]
    public let irqs: [UInt32: VFIOUserIRQInfo]

    private struct State {
        /// Descriptors of mappable regions, as the server passed them.
        var regionFDs: [UInt32: FileDescriptor] = [:]
        var mappings: [FileMapping] = []
        var activeIRQ: UInt32?
        var closed = false
    }
    private let state: Mutex<State>

    private init(client: VFIOUserClient, name: String, info: VFIOUserDeviceInfo, regions: [UInt32: VFIOUserRegionInfo],
                 fds: [UInt32: FileDescriptor], irqs: [UInt32: VFIOUserIRQInfo]) {
        self.client = client
        self.name = name
        self.info = info
        self.regions = regions
        self.irqs = irqs
        state = Mutex(State(regionFDs: fds))
    }

    /// Connects to the server at `socket`, negotiates, and reads what the
    /// device has: its info, its regions (with their descriptors), its
    /// interrupts. A device that is not PCI, or has no config space, is refused.
    public static func open(socket: String, options: VFIOUserClient.Options = .init(),
                            log: @escaping @Sendable (String) -> Void,
                            onDisconnect: @escaping @Sendable (String) -> Void = { _ in }) throws -> VFIOUserDevice {
        let client: VFIOUserClient
        do {
            client = try VFIOUserClient.connect(path: socket, name: socket, options: options, log: log, onDisconnect: onDisconnect)
        } catch let e as SysError {
            throw VFIOUserError.disconnected("cannot connect to \(socket): \(e)")
        }
        var fds: [UInt32: FileDescriptor] = [:]
        do {
            try client.negotiate()
            let info = try client.deviceInfo()
            guard info.isPCI else { throw VFIOUserError.invalidRequest("the device at \(socket) is not a PCI device (DEVICE_GET_INFO flags \(hex(info.flags)))") }
            guard info.regionCount > configRegion else {
                throw VFIOUserError.invalidRequest("the device at \(socket) has \(info.regionCount) regions, so no PCI config space (region 7)")
            }
            var regions: [UInt32: VFIOUserRegionInfo] = [:]
            for index in 0..<min(info.regionCount, regionsUsed) {
                let (r, fd) = try client.regionInfo(index)
                guard r.size > 0 else {
                    fd?.close()
                    continue
                }
                regions[index] = r
                if let fd {
                    if r.mappable { fds[index] = fd } else { fd.close() }
                }
            }
            guard let config = regions[configRegion], config.size >= 256 else {
                throw VFIOUserError.invalidRequest("the device at \(socket) has no 256-byte config space (region 7)")
            }
            var irqs: [UInt32: VFIOUserIRQInfo] = [:]
            for index in 0..<min(info.irqCount, 5) {
                let i = try client.irqInfo(index)
                if i.count > 0 { irqs[index] = i }
            }
            return VFIOUserDevice(client: client, name: socket, info: info, regions: regions, fds: fds, irqs: irqs)
        } catch {
            fds.values.forEach { $0.close() }
            client.close()
            throw error
        }
    }

    public var isConnected: Bool { client.disconnectReason == nil && !state.withLock { $0.closed } }

    // MARK: - Region access

    /// Reads `buffer.count` bytes at `offset` of region `index`; all ones and
    /// false when the region lacks the bytes or the server does not answer.
    @discardableResult
    public func readRegion(_ index: UInt32, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard inside(index, offset, buffer.count, write: false), !state.withLock({ $0.closed }),
              let data = try? client.regionRead(region: index, offset: offset, count: buffer.count) else {
            Self.fillAllOnes(buffer)
            return false
        }
        buffer.copyBytes(from: data)
        return true
    }

    /// Writes `buffer` at `offset` of region `index`; dropped (false) when the
    /// region lacks the bytes or the server does not answer.
    @discardableResult
    public func writeRegion(_ index: UInt32, offset: UInt64, from buffer: UnsafeRawBufferPointer) -> Bool {
        guard inside(index, offset, buffer.count, write: true), !state.withLock({ $0.closed }) else { return false }
        return (try? client.regionWrite(region: index, offset: offset, data: Array(buffer))) != nil
    }

    public func readConfig(offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard offset >= 0 else {
            Self.fillAllOnes(buffer)
            return false
        }
        return readRegion(Self.configRegion, offset: UInt64(offset), into: buffer)
    }

    public func writeConfig(offset: Int, from buffer: UnsafeRawBufferPointer) -> Bool {
        guard offset >= 0 else { return false }
        return writeRegion(Self.configRegion, offset: UInt64(offset), from: buffer)
    }

    private func inside(_ index: UInt32, _ offset: UInt64, _ count: Int, write: Bool) -> Bool {
        guard count > 0, let r = regions[index], write ? r.writable : r.readable else { return false }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        return !overflow && end <= r.size
    }

    public static func fillAllOnes(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count > 0 else { return }
        _ = buffer.initializeMemory(as: UInt8.self, repeating: 0xFF)
    }

    // MARK: - Mapping

    /// The parts of region `index` the server lets the client mmap: its
    /// sparse areas, or the whole region when it is mappable without them.
    public func mappableAreas(_ index: UInt32) -> [Range<UInt64>] {
        guard let r = regions[index], r.mappable, state.withLock({ $0.regionFDs[index] != nil }) else { return [] }
        return mappableRanges(regionSize: r.size, sparse: r.sparseAreas?.map { ($0.offset, $0.size) })
    }

    /// mmaps `length` bytes at `offset` of region `index` from the server's
    /// descriptor; the bytes must lie in one mappable area, page aligned.
    public func mapRegion(_ index: UInt32, offset: UInt64, length: UInt64) throws -> UnsafeMutableRawPointer {
        let areas = mappableAreas(index)
        let (end, o1) = offset.addingReportingOverflow(length)
        guard let r = regions[index], length > 0, !o1, offset % 4096 == 0,
              areas.contains(where: { $0.lowerBound <= offset && end <= $0.upperBound }) else {
            throw VFIOUserError.invalidRequest("\(name): region \(index) cannot map \(length) bytes at \(hex(offset)) (mappable: \(areas.map { "\(hex($0.lowerBound))..<\(hex($0.upperBound))" }))")
        }
        let (at, o2) = r.offset.addingReportingOverflow(offset)
        guard !o2, at <= UInt64(Int.max), length <= UInt64(Int.max) else {
            throw VFIOUserError.malformed("region \(index): file offset \(hex(r.offset)) + \(hex(offset)) is out of range")
        }
        return try state.withLock { s in
            guard !s.closed, let fd = s.regionFDs[index] else { throw VFIOUserError.disconnected("\(name) is closed") }
            let m = try FileMapping(fd: fd, size: Int(length), offset: Int(at), what: "\(name) region \(index)")
            s.mappings.append(m)
            return m.pointer
        }
    }

    // MARK: - Interrupts

    private func require(_ index: UInt32, _ what: String, vectors: Int) throws {
        guard let i = irqs[index] else { throw VFIOUserError.invalidRequest("\(name) has no \(what) interrupt") }
        guard vectors <= Int(i.count) else { throw VFIOUserError.invalidRequest("\(name) has \(i.count) \(what) vectors, \(vectors) asked for") }
        guard i.flags & VFIOUserIRQInfo.flagEventFD != 0 else {
            throw VFIOUserError.invalidRequest("\(name) cannot signal its \(what) interrupt through an eventfd")
        }
    }

    private func switchTo(_ index: UInt32, _ eventfds: [Int32], _ what: String) throws {
        try require(index, what, vectors: eventfds.count)
        let active = state.withLock { $0.activeIRQ }
        if let a = active, a != index { try disableIRQs(a) }
        try client.setIRQs(index: index, action: VFIOUserSetIRQs.actionTrigger, start: 0, eventfds: eventfds)
        state.withLock { $0.activeIRQ = index }
    }

    /// INTx through `trigger` (a KVM irqfd). The server signals it once per
    /// assertion; the line is lowered at the guest's EOI by KVM's resampler.
    /// A server whose INTx is AUTOMASKED (it masks the line at each
    /// assertion, as kernel VFIO does) waits for an unmask after that EOI:
    /// it gets `resample`, which KVM signals at the EOI, as its unmask eventfd
    /// (ACTION_UNMASK | DATA_EVENTFD), as QEMU gives kernel VFIO. A server
    /// that does not automask (libvfio-user's) needs no message.
    public func enableINTx(trigger: Int32, resample: Int32? = nil) throws {
        try switchTo(Self.intxIndex, [trigger], "INTx")
        if let resample, intxAutomasked {
            try client.setIRQs(index: Self.intxIndex, action: VFIOUserSetIRQs.actionUnmask, start: 0, eventfds: [resample])
        }
    }

    /// Whether the server masks its INTx at each assertion (IRQ_INFO's AUTOMASKED).
    public var intxAutomasked: Bool { (irqs[Self.intxIndex]?.flags ?? 0) & VFIOUserIRQInfo.flagAutomasked != 0 }
    public func enableMSI(eventfds: [Int32]) throws { try switchTo(Self.msiIndex, eventfds, "MSI") }
    public func enableMSIX(eventfds: [Int32]) throws { try switchTo(Self.msixIndex, eventfds, "MSI-X") }

    /// Disables every vector of IRQ `index` (DATA_NONE, count 0).
    public func disableIRQs(_ index: UInt32) throws {
        try client.setIRQs(index: index, action: VFIOUserSetIRQs.actionTrigger, start: 0, eventfds: [])
        state.withLock { if $0.activeIRQ == index { $0.activeIRQ = nil } }
    }

    /// DEVICE_RESET when the device offers it: what the log says.
    public func reset() throws -> String {
        guard info.canReset else { return "not reset (the server offers no DEVICE_RESET)" }
        try client.reset()
        return "reset (DEVICE_RESET)"
    }

    /// Interrupts off, mappings undone, connection closed (the server then
    /// drops our DMA windows and eventfds). Idempotent.
    public func close() {
        let active: UInt32? = state.withLock { s in
            guard !s.closed else { return nil }
            s.closed = true
            return s.activeIRQ
        }
        if let a = active, client.disconnectReason == nil { try? disableIRQs(a) }
        state.withLock { s in
            s.mappings = []
            s.regionFDs.values.forEach { $0.close() }
            s.regionFDs = [:]
        }
        client.close()
    }
}
