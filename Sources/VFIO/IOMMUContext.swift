import Bits
import GuestMemory
import HostSys
import Synchronization

/// The DMA side of one VM: an iommufd and the one IOAS every assigned device
/// of the VM is attached to, holding guest RAM at IOVA == guest physical
/// address. Order of use: `open`, attach the devices
/// (`AssignedVFIODevice.bindAndAttach`), `checkGuestRAM`, `mapGuestRAM`;
/// at the end close the devices, then `unmapAll`.
///
/// It is the assigned devices' `DMAMapping` (see Sources/GuestMemory): `map`
/// pins the guest RAM behind a guest range (where it lives in this process,
/// from `addGuestRAM`) and maps it into the IOAS at the IOVA asked for,
/// `unmap` undoes whole mappings, `attach` and `detach` attach and detach
/// every device bound through this context. Today all of them share the
/// IOAS, so they are one endpoint, with the identity mapping (`mapGuestRAM`,
/// a client of `IdentityDMA`); with a vIOMMU each guest domain gets an IOAS
/// of its own, one context each on the same iommufd (`GuestDomains`).
public final class IOMMUContext: DMAMapping {
    /// A guest RAM range and where this process has it.
    public typealias GuestRAMRange = (guest: UInt64, host: UInt64, size: UInt64)

    private struct WeakDevice { weak var device: AssignedVFIODevice? }

    private struct State {
        var table = DMAMappingTable()
        var guestRAM: [GuestRAMRange] = []
        var endpoints: [WeakDevice] = []
        var attachedDevices: [String] = []
    }

    public let iommufd: IOMMUFD
    public let ioas: IOAS
    private let state: Mutex<State>
    /// PCI addresses of the devices bound and attached through this context, for messages.
    public internal(set) var attachedDevices: [String] {
        get { state.withLock { $0.attachedDevices } }
        set { state.withLock { $0.attachedDevices = newValue } }
    }

    /// The IOAS's id (what devices attach to).
    public var ioasID: UInt32 { ioas.id }

    /// The IOVA ranges mapped and not unmapped yet, in IOVA order.
    public var mappings: [ClosedRange<UInt64>] { state.withLock { $0.table.entries.map(\.iovaRange) } }

    /// A context over `ioas` of `iommufd`; `mappingLimit` caps its mappings
    /// (`DMAMappingError.tooManyMappings` past it).
    public init(iommufd: IOMMUFD, ioas: IOAS, mappingLimit: Int = DMAMappingTable.defaultLimit) {
        self.iommufd = iommufd
        self.ioas = ioas
        state = Mutex(State(table: DMAMappingTable(limit: mappingLimit)))
    }

    /// Opens `/dev/iommu` and allocates the VM's IOAS.
    public static func open(path: String = "/dev/iommu") throws -> IOMMUContext {
        let fd = try IOMMUFD.open(path: path)
        return IOMMUContext(iommufd: fd, ioas: try fd.allocateIOAS())
    }

    // MARK: - Guest RAM vs. the IOVA ranges the IOMMU allows

    /// Checks, after every device is attached (the ranges narrow with each),
    /// that all guest RAM can be mapped at IOVA == GPA; throws
    /// `VFIOError.iovaConflict` naming the first range that cannot.
    public func checkGuestRAM(_ ranges: [(guest: UInt64, size: UInt64)]) throws {
        let allowed = try ioas.iovaRanges().ranges
        if let c = Self.firstConflict(ram: ranges, allowed: allowed) {
            throw VFIOError.iovaConflict(guestRange: c.ram, allowed: allowed, devices: attachedDevices)
        }
    }

    /// The first RAM range not wholly inside the allowed IOVA ranges, with its
    /// first blocked part. Empty RAM ranges are ignored; a range that wraps
    /// past 2^64 is blocked from where it wraps.
    public static func firstConflict(ram: [(guest: UInt64, size: UInt64)], allowed: [ClosedRange<UInt64>]) -> (ram: ClosedRange<UInt64>, blocked: ClosedRange<UInt64>)? {
        let merged = merge(allowed)
        for r in ram where r.size > 0 {
            let (last, wraps) = r.guest.addingReportingOverflow(r.size - 1)
            let range = r.guest...(wraps ? UInt64.max : last)
            if wraps { return (range, range) }
            if let b = blockedPart(of: range, merged: merged) { return (range, b) }
        }
        return nil
    }

    /// `allowed` sorted, with overlapping and adjacent ranges joined.
    static func merge(_ allowed: [ClosedRange<UInt64>]) -> [ClosedRange<UInt64>] {
        var out = [ClosedRange<UInt64>]()
        for a in allowed.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let l = out.last, l.upperBound == .max || a.lowerBound <= l.upperBound + 1 {
                out[out.count - 1] = l.lowerBound...max(l.upperBound, a.upperBound)
            } else {
                out.append(a)
            }
        }
        return out
    }

    /// The first part of `range` outside every (merged) allowed range, or nil.
    static func blockedPart(of range: ClosedRange<UInt64>, merged: [ClosedRange<UInt64>]) -> ClosedRange<UInt64>? {
        var cursor = range.lowerBound
        for a in merged where a.upperBound >= cursor {
            if a.lowerBound > cursor { return cursor...min(range.upperBound, a.lowerBound - 1) }
            if a.upperBound >= range.upperBound { return nil }
            cursor = a.upperBound + 1 // a.upperBound < range.upperBound: no overflow
        }
        return cursor...range.upperBound
    }

    /// The x86 MSI address window (Intel SDM vol. 3, 11.11.1), which IOMMUs
    /// reserve for interrupt messages.
    static let msiWindow: ClosedRange<UInt64> = 0xFEE0_0000...0xFEEF_FFFF

    /// The text of `VFIOError.iovaConflict`.
    static func conflictMessage(guestRange: ClosedRange<UInt64>, allowed: [ClosedRange<UInt64>], devices: [String]) -> String {
        let merged = merge(allowed)
        let blocked = blockedPart(of: guestRange, merged: merged) ?? guestRange
        let mmu = devices.isEmpty ? "the IOMMU" : "the IOMMU of \(devices.joined(separator: ", "))"
        let list = merged.isEmpty ? "none" : merged.map(hexRange).joined(separator: ", ")
        var s = "guest RAM \(hexRange(guestRange)) is outside the IOVA ranges \(mmu) allows for DMA (\(list)), so it cannot be mapped at IOVA == guest physical address: "
        let below = "use less guest memory (machine.memory) so RAM stays below \(hex(blocked.lowerBound))"
        if let top = merged.last?.upperBound, blocked.lowerBound > top {
            var width = ""
            if top == .max { width = " (64-bit)" } else if (top + 1).nonzeroBitCount == 1 { width = " (\((top + 1).trailingZeroBitCount)-bit address width)" }
            s += "\(hexRange(blocked)) is above the IOMMU's limit \(hex(top))\(width); use less guest memory (machine.memory) so RAM stays below the IOMMU's limit"
        } else if merged.isEmpty {
            s += "the IOMMU allows no IOVA at all; check `dmesg` for IOMMU errors"
        } else if blocked.overlaps(msiWindow) {
            s += "\(hexRange(blocked)) overlaps the reserved MSI window \(hexRange(msiWindow)), where guest RAM must leave a hole; \(below)"
        } else {
            s += "\(hexRange(blocked)) is a reserved IOVA region (an RMRR/IVMD the firmware declares for a device of the group, see /sys/kernel/iommu_groups/*/reserved_regions); \(below), or assign another device"
        }
        return s
    }

    // MARK: - Mapping guest RAM

    /// Maps each guest RAM range readable and writable at IOVA == `guest`
    /// (pinning it) through `IdentityDMA`; returns the bytes mapped and the
    /// time it took. On failure the ranges mapped by this call are unmapped
    /// again and the error names the range (ENOMEM: RLIMIT_MEMLOCK).
    @discardableResult
    public func mapGuestRAM(_ ranges: [GuestRAMRange]) throws -> (bytes: UInt64, seconds: Double) {
        let start = ProcessStats.monotonicNanos
        addGuestRAM(ranges)
        let bytes: UInt64
        do {
            bytes = try IdentityDMA.mapGuestRAM(ranges.map { (guest: $0.guest, size: $0.size) }, into: self)
        } catch let f as IdentityDMA.Failure {
            if case let VFIOError.ioctl(e) = f.underlying { throw VFIOError.guestRAMMapFailed(guestRange: f.range, e) }
            throw f.underlying
        }
        return (bytes, Double(ProcessStats.monotonicNanos &- start) / 1e9)
    }

    /// Tells the context where guest RAM lives in this process, so `map` can
    /// pin it. Ranges already known are not added twice.
    public func addGuestRAM(_ ranges: [GuestRAMRange]) {
        state.withLock { s in
            for r in ranges where r.size > 0 && !s.guestRAM.contains(where: { $0 == r }) { s.guestRAM.append(r) }
        }
    }

    /// The host pieces behind guest `[guest, guest + size)`: one per guest RAM
    /// range it crosses, or nil when any byte is not guest RAM. The range
    /// does not wrap (checked by the table first).
    static func hostPieces(guest: UInt64, size: UInt64, ram: [GuestRAMRange]) -> [(offset: UInt64, host: UInt64, size: UInt64)]? {
        var pieces: [(offset: UInt64, host: UInt64, size: UInt64)] = []
        var done: UInt64 = 0
        while done < size {
            let at = guest + done
            guard let r = ram.first(where: { at >= $0.guest && at - $0.guest < $0.size }) else { return nil }
            let n = min(size - done, r.size - (at - r.guest))
            let (host, wraps) = r.host.addingReportingOverflow(at - r.guest)
            guard !wraps else { return nil }
            pieces.append((done, host, n))
            done += n
        }
        return pieces
    }

    // MARK: - DMAMapping

    /// Pins the guest RAM behind `[guestAddress, guestAddress + size)` and
    /// maps it at `iova` with `permissions` (one `IOMMU_IOAS_MAP` per guest
    /// RAM range it crosses; if one fails, the others are unmapped again).
    /// Refused before any ioctl when the range overlaps a mapping, wraps, or
    /// is not all guest RAM. The corresponding ioctl is `IOMMU_IOAS_MAP`.
    public func map(iova: UInt64, size: UInt64, guestAddress: GuestAddress, permissions: DMAPermissions) throws {
        try state.withLock { s in
            let e = try s.table.checkMap(iova: iova, size: size, guestAddress: guestAddress.raw, permissions: permissions)
            guard let pieces = Self.hostPieces(guest: e.guestAddress, size: e.size, ram: s.guestRAM) else {
                throw DMAMappingError.notGuestRAM(guestAddress: e.guestAddress, size: e.size)
            }
            var done: [(iova: UInt64, size: UInt64)] = []
            for p in pieces {
                do {
                    try ioas.map(hostAddress: p.host, length: p.size, iova: e.iova + p.offset, readable: e.permissions.contains(.read),
                                writable: e.permissions.contains(.write))
                } catch {
                    for d in done.reversed() { _ = try? ioas.unmap(iova: d.iova, length: d.size) }
                    throw error
                }
                done.append((e.iova + p.offset, p.size))
            }
            try s.table.map(iova: e.iova, size: e.size, guestAddress: e.guestAddress, permissions: e.permissions)
        }
    }

    /// Unmaps (and unpins) every mapping inside `[iova, iova + size)`, one
    /// `IOMMU_IOAS_UNMAP` each; refused, unmapping nothing, when it would split
    /// one. On an ioctl error the mappings unmapped so far are gone and the
    /// rest stay. The corresponding ioctl is `IOMMU_IOAS_UNMAP`.
    public func unmap(iova: UInt64, size: UInt64) throws {
        try state.withLock { s in
            for e in try s.table.checkUnmap(iova: iova, size: size) {
                try ioas.unmap(iova: e.iova, length: e.size)
                s.table.remove([e])
            }
        }
    }

    /// The mappings inside `[iova, iova + size)`, as `unmap` would take them.
    func mappings(inside iova: UInt64, size: UInt64) throws -> [DMAMappingTable.Entry] {
        try state.withLock { try $0.table.checkUnmap(iova: iova, size: size) }
    }

    /// The mappings mapped and not unmapped yet, in IOVA order.
    var entries: [DMAMappingTable.Entry] { state.withLock { $0.table.entries } }

    /// Attaches every device bound through this context that is not attached
    /// to the IOAS now. The corresponding ioctl is `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    public func attach() throws {
        for d in endpoints where d.pageTableID == nil { try d.attachPageTable(self) }
    }

    /// Detaches every device bound through this context that is attached to
    /// its IOAS; their DMA then faults. A device a vIOMMU moved to another
    /// IOAS (`GuestDomains`) stays there. The corresponding ioctl is
    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    public func detach() throws {
        for d in endpoints where d.pageTableID != nil && d.ioasID == ioas.id { try d.detachPageTable() }
    }

    /// The open devices bound through this context.
    var endpoints: [AssignedVFIODevice] {
        state.withLock { s in
            s.endpoints.removeAll { $0.device == nil }
            return s.endpoints.compactMap(\.device)
        }
    }

    /// Called by `AssignedVFIODevice` when it binds through this context and when it closes.
    func addEndpoint(_ d: AssignedVFIODevice) {
        state.withLock { s in
            s.attachedDevices.append(d.bdf)
            s.endpoints.append(WeakDevice(device: d))
        }
    }

    func removeEndpoint(_ d: AssignedVFIODevice) {
        state.withLock { s in
            s.attachedDevices.removeAll { $0 == d.bdf }
            s.endpoints.removeAll { $0.device == nil || $0.device === d }
        }
    }

    /// Unmaps everything mapped. Tries every mapping, last first; throws the
    /// first error after trying them all (the table is emptied either way).
    public func unmapAll() throws {
        try state.withLock { s in
            var first: Error?
            for e in s.table.entries.reversed() {
                do { try ioas.unmap(iova: e.iova, length: e.size) } catch { first = first ?? error }
            }
            s.table.remove(s.table.entries)
            if let first { throw first }
        }
    }
}
