import Bits
import GuestMemory
import Synchronization

/// The guest IOMMU domains of one VM's assigned devices, for a vIOMMU
/// (virtio-iommu): the guest puts endpoints into domains and maps IOVAs in
/// each; this is where an assigned device's domain becomes host IOMMU state.
///
/// - One IOAS per guest domain, on the iommufd of the VM's identity context
///   (`identity`, all guest RAM at IOVA == GPA, which stays the bypass
///   domain). It is allocated when the first assigned device joins the
///   domain: a domain of emulated devices only costs the host nothing, and
///   its `map`s and `unmap`s are no-ops here (checked all the same). The
///   first `attach` then replays the domain's mappings into the new IOAS.
/// - A device changes domain by `VFIO_DEVICE_ATTACH_IOMMUFD_PT` on the new
///   IOAS while still attached to the old one: the kernel replaces the
///   attachment in one step (Linux 6.6+), so its DMA never sees a
///   half-built table or no table.
/// - `detach` moves a device onto the "blocked" IOAS, which never has
///   anything mapped (allocated on first use): its DMA faults.
/// - Pin accounting: the bytes mapped across every guest-domain IOAS may not
///   exceed `maxPinnedBytes` (default: the guest RAM size). The kernel pins
///   (and charges to RLIMIT_MEMLOCK) every IOAS map on its own, on top of the
///   identity mapping's guest RAM, so this bounds what a guest can make the
///   host pin through the vIOMMU to twice its RAM.
///
/// The arguments come from the guest: a bad one throws (`DMAMappingError`,
/// `VFIOError`), never traps, and every refusal happens before any ioctl.
///
/// Thread safety: calls come from the vIOMMU's request thread while vCPUs
/// run. One `Mutex` is held across each call, ioctls included, so calls
/// happen one at a time. Under it this object takes a domain context's lock
/// (`IOMMUContext.map`/`unmap`) and a device's lock (`reattach`); neither of
/// those ever calls back here, so the locks never nest the other way round.
public final class GuestDomains: Sendable {
    /// Policy caps against a guest that asks for too much.
    public struct Limits: Equatable, Sendable {
        /// Guest domains with an IOAS at the same time.
        public var maxDomains: Int
        /// Mappings in one domain's IOAS (`DMAMappingError.tooManyMappings` past it).
        public var maxMappingsPerDomain: Int
        /// Bytes mapped across all guest-domain IOASes; nil: the guest RAM size.
        public var maxPinnedBytes: UInt64?

        /// 256 domains: far more than a guest has assigned devices (only domains
        /// an assigned device joined have an IOAS), few enough that the host's
        /// IOAS and page-table memory stays small.
        public init(maxDomains: Int = 256, maxMappingsPerDomain: Int = DMAMappingTable.defaultLimit, maxPinnedBytes: UInt64? = nil) {
            self.maxDomains = maxDomains
            self.maxMappingsPerDomain = maxMappingsPerDomain
            self.maxPinnedBytes = maxPinnedBytes
        }
    }

    /// What happened so far. `maps - unmaps` is the number of mappings in the
    /// guest-domain IOASes now.
    public struct Counters: Equatable, Sendable {
        /// Mappings put into a guest-domain IOAS (by `map` or an attach's replay).
        public var maps: UInt64 = 0
        /// Mappings taken out of one (by `unmap`, `free` or `close`).
        public var unmaps: UInt64 = 0
        /// Successful `attach` and `attachIdentity` calls.
        public var attaches: UInt64 = 0
        /// Successful `detach` calls.
        public var detaches: UInt64 = 0
        /// Bytes mapped in the guest-domain IOASes now, and the most ever.
        public var pinnedBytes: UInt64 = 0
        public var peakPinnedBytes: UInt64 = 0

        public init() {}
    }

    /// Where an assigned device's DMA goes now.
    public enum Placement: Equatable, Sendable {
        /// The identity (bypass) IOAS: all guest RAM at IOVA == GPA.
        case identity
        /// Guest domain `id`'s IOAS.
        case domain(UInt32)
        /// The blocked IOAS: nowhere.
        case blocked
        /// Not attached to any IOAS (not bound yet, closed, or detached by
        /// `IOMMUContext.detach`): nowhere.
        case detached
        /// An IOAS these domains do not manage.
        case other(ioasID: UInt32)
    }

    private struct WeakDevice { weak var device: AssignedVFIODevice? }

    private struct Domain {
        let context: IOMMUContext
        /// The bytes mapped in it (the sum of its mappings' sizes).
        var pinned: UInt64
    }

    private struct State {
        var domains: [UInt32: Domain] = [:]
        var blocked: IOAS?
        /// IOASes whose IOMMU_DESTROY failed in `free`; `close` tries again.
        var leftovers: [IOAS] = []
        /// Every device moved by this object, to tell whether a domain is in use.
        var devices: [WeakDevice] = []
        var counters = Counters()
        var isClosed = false
    }

    /// The VM's identity context; its iommufd holds every IOAS here.
    public let identity: IOMMUContext
    /// Guest RAM and where this process has it (what `map` pins).
    public let guestRAM: [IOMMUContext.GuestRAMRange]
    public let limits: Limits
    /// `limits.maxPinnedBytes`, or the guest RAM size.
    public let maxPinnedBytes: UInt64
    private let state = Mutex(State())

    public init(identity: IOMMUContext, guestRAM: [IOMMUContext.GuestRAMRange], limits: Limits = Limits()) {
        self.identity = identity
        self.guestRAM = guestRAM.filter { $0.size > 0 }
        self.limits = limits
        let ramSize = self.guestRAM.reduce(UInt64(0)) { sum, r in
            let (t, o) = sum.addingReportingOverflow(r.size)
            return o ? .max : t
        }
        maxPinnedBytes = limits.maxPinnedBytes ?? ramSize
    }

    // MARK: - Looking

    public var counters: Counters { state.withLock { $0.counters } }

    /// The guest domains that have an IOAS, in order.
    public var domainIDs: [UInt32] { state.withLock { $0.domains.keys.sorted() } }

    /// The IOAS of guest domain `domain`, nil while it has none.
    public func ioasID(domain: UInt32) -> UInt32? { state.withLock { $0.domains[domain]?.context.ioasID } }

    /// The blocked IOAS, once `detach` made it.
    public var blockedIOASID: UInt32? { state.withLock { $0.blocked?.id } }

    /// The mappings in guest domain `domain`'s IOAS, in IOVA order (none without an IOAS).
    public func mappings(domain: UInt32) -> [DMAMappingTable.Entry] {
        state.withLock { $0.domains[domain]?.context.entries ?? [] }
    }

    /// Where `device`'s DMA goes now.
    public func placement(of device: AssignedVFIODevice) -> Placement {
        guard let id = device.ioasID, device.pageTableID != nil, !device.isClosed else { return .detached }
        if id == identity.ioasID { return .identity }
        return state.withLock { s in
            if id == s.blocked?.id { return .blocked }
            if let d = s.domains.first(where: { $0.value.context.ioasID == id }) { return .domain(d.key) }
            return .other(ioasID: id)
        }
    }

    // MARK: - Attaching

    /// Puts `device` into guest domain `domain`. When the domain has no IOAS
    /// yet, one is allocated, `mappings` (the domain's mappings so far, as the
    /// vIOMMU has them) are mapped into it and then the device is moved onto
    /// it; if any step fails, the new IOAS is unmapped and destroyed again and
    /// the device stays where it was. When the domain has an IOAS, `mappings`
    /// are ignored (`map` kept it up to date) and the device is moved. The
    /// mappings are checked (guest RAM, overlaps, the mapping and pin limits)
    /// before any ioctl. The kernel refuses the move when the domain maps an
    /// IOVA the device's IOMMU reserves (see `reservedRegions`).
    /// The corresponding ioctls are `IOMMU_IOAS_ALLOC`, `IOMMU_IOAS_MAP` and
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    public func attach(device: AssignedVFIODevice, domain: UInt32, mappings: [DMAMappingTable.Entry]) throws {
        try state.withLock { s in
            try check(device, s)
            remember(device, &s)
            if let d = s.domains[domain] {
                try device.reattach(ptID: d.context.ioasID)
                s.counters.attaches += 1
                return
            }
            guard s.domains.count < limits.maxDomains else { throw VFIOError.tooManyGuestDomains(domain: domain, limit: limits.maxDomains) }
            let bytes = try checkMappings(mappings)
            try checkPin(domain: domain, size: bytes, s)
            let ioas = try identity.iommufd.allocateIOAS()
            let ctx = IOMMUContext(iommufd: identity.iommufd, ioas: ioas, mappingLimit: limits.maxMappingsPerDomain)
            ctx.addGuestRAM(guestRAM)
            do {
                for m in mappings {
                    try ctx.map(iova: m.iova, size: m.size, guestAddress: GuestAddress(m.guestAddress), permissions: m.permissions)
                }
                try device.reattach(ptID: ioas.id)
            } catch {
                _ = try? ctx.unmapAll()
                if (try? ioas.destroy()) == nil { s.leftovers.append(ioas) }
                throw error
            }
            s.domains[domain] = Domain(context: ctx, pinned: bytes)
            s.counters.maps += UInt64(mappings.count)
            pin(bytes, &s)
            s.counters.attaches += 1
        }
    }

    /// Moves `device` back onto the identity IOAS (the bypass domain: all
    /// guest RAM at IOVA == GPA). The corresponding ioctl is `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    public func attachIdentity(device: AssignedVFIODevice) throws {
        try state.withLock { s in
            try check(device, s)
            remember(device, &s)
            try device.reattach(ptID: identity.ioasID)
            s.counters.attaches += 1
        }
    }

    /// Moves `device` onto the blocked IOAS, which has nothing mapped (made on
    /// first use): its DMA reaches no guest memory until it is attached again.
    /// The corresponding ioctls are `IOMMU_IOAS_ALLOC` (once) and `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    public func detach(device: AssignedVFIODevice) throws {
        try state.withLock { s in
            try check(device, s)
            remember(device, &s)
            let blocked: IOAS
            if let b = s.blocked {
                blocked = b
            } else {
                blocked = try identity.iommufd.allocateIOAS()
                s.blocked = blocked
            }
            try device.reattach(ptID: blocked.id)
            s.counters.detaches += 1
        }
    }

    // MARK: - Mapping

    /// Maps `entry` into guest domain `domain`'s IOAS: the guest RAM behind
    /// `entry.guestAddress..+size` at IOVA `entry.iova`
    /// (IOMMU_IOAS_MAP_FIXED_IOVA), readable and writable as
    /// `entry.permissions` says, pinned until unmapped. Refused before any
    /// ioctl when it is not all guest RAM, wraps, overlaps a mapping, or would
    /// pin more than `maxPinnedBytes` (`VFIOError.pinLimitExceeded`). A
    /// domain without an IOAS (no assigned device joined it yet) is only
    /// checked; its first `attach` replays the mapping. The corresponding
    /// ioctl is `IOMMU_IOAS_MAP`.
    public func map(domain: UInt32, entry: DMAMappingTable.Entry) throws {
        try state.withLock { s in
            guard !s.isClosed else { throw VFIOError.guestDomainsClosed }
            let size = try checkMappings([entry])
            guard var d = s.domains[domain] else { return }
            try checkPin(domain: domain, size: size, s)
            try d.context.map(iova: entry.iova, size: entry.size, guestAddress: GuestAddress(entry.guestAddress), permissions: entry.permissions)
            d.pinned += size // <= maxPinnedBytes: checked above
            s.domains[domain] = d
            s.counters.maps += 1
            pin(size, &s)
        }
    }

    /// Unmaps every mapping inside each entry's IOVA range from guest domain
    /// `domain`'s IOAS, one `IOMMU_IOAS_UNMAP` per mapping. An entry that
    /// would split a mapping is refused; a range with nothing mapped is not an
    /// error; a domain without an IOAS has nothing to unmap. Every entry is
    /// tried; the first error is thrown after. The corresponding ioctl is `IOMMU_IOAS_UNMAP`.
    public func unmap(domain: UInt32, entries: [DMAMappingTable.Entry]) throws {
        try state.withLock { s in
            guard !s.isClosed else { throw VFIOError.guestDomainsClosed }
            guard var d = s.domains[domain] else { return }
            let (countBefore, pinnedBefore) = (d.context.entries.count, d.pinned)
            var first: Error?
            for e in entries {
                do {
                    let gone = try d.context.mappings(inside: e.iova, size: e.size)
                    try d.context.unmap(iova: e.iova, size: e.size)
                    d.pinned -= gone.reduce(UInt64(0)) { $0 + $1.size } // all in d.pinned
                } catch {
                    first = first ?? error
                }
            }
            // An ioctl error leaves the mappings unmapped before it gone and the
            // rest in place: count from the domain's table then.
            if first != nil { d.pinned = d.context.entries.reduce(UInt64(0)) { $0 + $1.size } }
            s.counters.unmaps += UInt64(countBefore - d.context.entries.count)
            s.counters.pinnedBytes -= pinnedBefore - d.pinned
            s.domains[domain] = d
            if let first { throw first }
        }
    }

    // MARK: - Freeing

    /// Unmaps everything in guest domain `domain`'s IOAS and destroys it (the
    /// vIOMMU freed the domain). Every device must have left it first
    /// (`VFIOError.guestDomainInUse` otherwise, changing nothing). A domain
    /// without an IOAS is left alone. The corresponding ioctls are
    /// `IOMMU_IOAS_UNMAP` and `IOMMU_DESTROY`.
    public func free(domain: UInt32) throws {
        try state.withLock { s in
            guard !s.isClosed else { throw VFIOError.guestDomainsClosed }
            guard let d = s.domains[domain] else { return }
            let users = liveDevices(&s).filter { $0.ioasID == d.context.ioasID && $0.pageTableID != nil }
            guard users.isEmpty else { throw VFIOError.guestDomainInUse(domain: domain, devices: users.map(\.bdf)) }
            s.domains[domain] = nil
            if let e = release(d, &s) { throw e }
        }
    }

    /// Unmaps and destroys every guest-domain IOAS and the blocked IOAS, at VM
    /// exit once the devices are closed. Tries them all and throws the first
    /// error after; later calls (but `close`) throw `guestDomainsClosed`.
    public func close() throws {
        try state.withLock { s in
            guard !s.isClosed else { return }
            s.isClosed = true
            var first: Error?
            let earlier = s.leftovers
            for (_, d) in s.domains.sorted(by: { $0.key < $1.key }) {
                if let e = release(d, &s) { first = first ?? e }
            }
            s.domains = [:]
            for ioas in earlier + (s.blocked.map { [$0] } ?? []) {
                do { try ioas.destroy() } catch { first = first ?? error }
            }
            s.leftovers = []
            s.blocked = nil
            if let first { throw first }
        }
    }

    /// Unmaps all of `d` and destroys its IOAS (an IOAS that cannot be
    /// destroyed is kept for `close`); returns the first error.
    private func release(_ d: Domain, _ s: inout State) -> Error? {
        var first: Error?
        let n = d.context.entries.count
        do { try d.context.unmapAll() } catch { first = error } // empties the table either way
        s.counters.unmaps += UInt64(n)
        s.counters.pinnedBytes -= d.pinned
        do { try d.context.ioas.destroy() } catch {
            first = first ?? error
            s.leftovers.append(d.context.ioas)
        }
        return first
    }

    // MARK: - What the vIOMMU tells the guest

    /// The IOVA ranges `device`'s DMA cannot use: the complement, within
    /// 0...2^64-1, of what `IOMMU_IOAS_IOVA_RANGES` allows on the IOAS the
    /// device is attached to now (a virtio-iommu PROBE reports them as
    /// reserved regions). That IOAS's ranges are narrowed by every device on
    /// it, so with several devices on one IOAS (the identity IOAS at boot) the
    /// answer holds the others' reservations too: more than the device needs,
    /// never less. Merged and in order. The corresponding ioctl is `IOMMU_IOAS_IOVA_RANGES`.
    public func reservedRegions(for device: AssignedVFIODevice) throws -> [ClosedRange<UInt64>] {
        guard let id = device.ioasID, device.pageTableID != nil, !device.isClosed else {
            throw VFIOError.deviceNotReady(bdf: device.bdf, "its reserved IOVA regions are known only while it is attached to an IOAS")
        }
        return try state.withLock { s in
            guard !s.isClosed else { throw VFIOError.guestDomainsClosed }
            let ioas: IOAS
            if id == identity.ioasID {
                ioas = identity.ioas
            } else if let b = s.blocked, b.id == id {
                ioas = b
            } else if let d = s.domains.values.first(where: { $0.context.ioasID == id }) {
                ioas = d.context.ioas
            } else {
                throw VFIOError.deviceNotReady(bdf: device.bdf, "it is attached to IOAS \(id), which is not one of this VM's")
            }
            return Self.complement(of: try ioas.iovaRanges().ranges)
        }
    }

    /// The lowest to the highest IOVA the identity IOAS allows (virtio-iommu's
    /// `input_range`); holes inside it are the reserved regions. Ask once every
    /// device is attached (each narrows it). The corresponding ioctl is `IOMMU_IOAS_IOVA_RANGES`.
    public var usableIOVARange: ClosedRange<UInt64> {
        get throws {
            let allowed = try identity.ioas.iovaRanges().ranges
            guard let low = allowed.map(\.lowerBound).min(), let high = allowed.map(\.upperBound).max() else {
                throw VFIOError.malformedReply("IOMMU_IOAS_IOVA_RANGES on IOAS \(identity.ioasID): no IOVA is usable at all")
            }
            return low...high
        }
    }

    /// The page sizes to offer the guest (virtio-iommu's `page_size_mask`),
    /// from the identity IOAS's `out_iova_alignment`; see `pageSizeMask(alignment:)`.
    /// The corresponding ioctl is `IOMMU_IOAS_IOVA_RANGES`.
    public var pageSizeMask: UInt64 {
        get throws { try Self.pageSizeMask(alignment: identity.ioas.iovaRanges().alignment) }
    }

    /// 4 KiB, 2 MiB and 1 GiB, the x86 page sizes (Intel SDM vol. 3, 4.5).
    static let commonPageSizes: UInt64 = (1 << 12) | (1 << 21) | (1 << 30)

    /// The page-size mask for IOVA alignment `alignment` (`out_iova_alignment`
    /// of `IOMMU_IOAS_IOVA_RANGES`: a power of two up to the host page size, 1
    /// for "any"): the granule, max(alignment, 4 KiB), and 2 MiB and 1 GiB
    /// when they are at least the granule. Only the lowest bit binds the guest
    /// (every map is a multiple of it); the others tell its driver how to
    /// split big maps, and offering exactly the sizes a hardware IOMMU has
    /// (VT-d and AMD-Vi: 4K, 2M, 1G) makes the guest's maps line up with the
    /// host's huge pages, which iommufd maps as large IOPTEs. Every size
    /// >= granule (QEMU's choice) would be as correct.
    public static func pageSizeMask(alignment: UInt64) throws -> UInt64 {
        let a = max(alignment, 1)
        guard a.nonzeroBitCount == 1, a <= 1 << 30 else {
            throw VFIOError.malformedReply("IOMMU_IOAS_IOVA_RANGES: IOVA alignment \(hex(a)) is not a power of two up to 1 GiB")
        }
        let granule = max(a, 1 << 12)
        return (commonPageSizes | granule) & ~(granule - 1)
    }

    /// The parts of 0...2^64-1 outside every range of `allowed`, in order.
    public static func complement(of allowed: [ClosedRange<UInt64>]) -> [ClosedRange<UInt64>] {
        var out = [ClosedRange<UInt64>]()
        var cursor: UInt64? = 0 // nil: past 2^64 - 1
        for a in IOMMUContext.merge(allowed) {
            guard let c = cursor else { break }
            if a.lowerBound > c { out.append(c...(a.lowerBound - 1)) }
            cursor = a.upperBound == .max ? nil : max(c, a.upperBound + 1)
        }
        if let c = cursor { out.append(c...UInt64.max) }
        return out
    }

    // MARK: - Checks

    /// Open, and `device` is bound (and not closed) through the identity context's iommufd.
    private func check(_ device: AssignedVFIODevice, _ s: State) throws {
        guard !s.isClosed else { throw VFIOError.guestDomainsClosed }
        guard !device.isClosed, device.deviceID != nil else {
            throw VFIOError.deviceNotReady(bdf: device.bdf, "it must be bound to the VM's iommufd (bindAndAttach) before a vIOMMU moves it")
        }
        guard device.boundContext?.iommufd === identity.iommufd else {
            throw VFIOError.deviceNotReady(bdf: device.bdf, "it is bound to another iommufd than the VM's")
        }
    }

    /// The bytes `mappings` would pin, or the first rule one breaks (empty,
    /// wraps, overlaps another, too many, not guest RAM). No ioctl.
    private func checkMappings(_ mappings: [DMAMappingTable.Entry]) throws -> UInt64 {
        var table = DMAMappingTable(limit: limits.maxMappingsPerDomain)
        var bytes: UInt64 = 0
        for m in mappings {
            let e = try table.map(iova: m.iova, size: m.size, guestAddress: m.guestAddress, permissions: m.permissions)
            guard IOMMUContext.hostPieces(guest: e.guestAddress, size: e.size, ram: guestRAM) != nil else {
                throw DMAMappingError.notGuestRAM(guestAddress: e.guestAddress, size: e.size)
            }
            let (sum, o) = bytes.addingReportingOverflow(e.size)
            bytes = o ? .max : sum // all of 2^64: past any pin limit
        }
        return bytes
    }

    /// Pinning `size` more bytes stays within `maxPinnedBytes`.
    private func checkPin(domain: UInt32, size: UInt64, _ s: State) throws {
        let (total, o) = s.counters.pinnedBytes.addingReportingOverflow(size)
        guard !o, total <= maxPinnedBytes else {
            throw VFIOError.pinLimitExceeded(domain: domain, size: size, pinned: s.counters.pinnedBytes, limit: maxPinnedBytes)
        }
    }

    private func pin(_ bytes: UInt64, _ s: inout State) {
        s.counters.pinnedBytes += bytes // checked by checkPin
        s.counters.peakPinnedBytes = max(s.counters.peakPinnedBytes, s.counters.pinnedBytes)
    }

    private func remember(_ device: AssignedVFIODevice, _ s: inout State) {
        s.devices.removeAll { $0.device == nil }
        if !s.devices.contains(where: { $0.device === device }) { s.devices.append(WeakDevice(device: device)) }
    }

    /// The devices moved so far that are still open.
    private func liveDevices(_ s: inout State) -> [AssignedVFIODevice] {
        s.devices.removeAll { $0.device == nil }
        return s.devices.compactMap(\.device).filter { !$0.isClosed }
    }
}
