import GuestMemory
import Logging
import PCI
import Synchronization
import VFIO
import Virtio

/// The vIOMMU's host side (`VIOMMUHost`): what the guest's ATTACH, DETACH,
/// MAP and UNMAP requests become for each endpoint behind the virtio-iommu.
///
/// - An emulated (virtio) device reaches guest memory through its own
///   `DMATranslator`: it holds the identity mapping while the endpoint
///   bypasses, exactly its domain's mappings while it is in a translating
///   domain, and nothing (detached) while it is blocked.
/// - An assigned device is moved between iommufd IOASes by `GuestDomains`:
///   the identity IOAS (all guest RAM at IOVA == GPA, as without a vIOMMU),
///   one IOAS per guest domain, or an empty "blocked" IOAS.
///
/// The virtio-iommu device keeps the canonical state and has checked each
/// request before it calls here; this class keeps only which endpoints are in
/// which translating domain, to fan a MAP or UNMAP out to them. Every call is
/// all or nothing (a refusal leaves both views as they were).
///
/// Endpoint IDs are PCI requester IDs (`bus << 8 | devfn`), as the VIOT says.
final class VIOMMUEndpoints: VIOMMUHost {
    enum Kind: Sendable {
        case emulated(DMATranslator)
        case assigned(AssignedVFIODevice)
    }

    struct Endpoint: Sendable {
        let address: PCIAddress
        let name: String
        let kind: Kind
    }

    /// What the VMM logs at exit.
    struct Counters: Equatable, Sendable {
        var faults: UInt64 = 0
        var faultsLogged: UInt64 = 0
    }

    private struct State {
        var endpoints: [UInt32: Endpoint] = [:]
        /// Translating domain -> its endpoints.
        var members: [UInt32: Set<UInt32>] = [:]
        /// Endpoint -> the translating domain it is in (absent: bypass or none).
        var domainOf: [UInt32: UInt32] = [:]
        /// Endpoints in a bypass domain (identity, not "unattached").
        var inBypassDomain: Set<UInt32> = []
        var unattachedBypass: Bool
        var counters = Counters()
        /// Assigned endpoints already told about interrupt remapping.
        var warnedUnsafeInterrupts: Set<UInt32> = []
    }

    /// Guest RAM at IOVA == GPA: what a bypassing emulated endpoint sees.
    let identity: [DMAMappingTable.Entry]
    /// The assigned devices' guest domains; nil without assigned devices.
    let domains: GuestDomains?
    private let state: Mutex<State>
    private let logger: Logger
    /// Refused DMA accesses logged one by one; after that only counted.
    static let faultsLogged: UInt64 = 10

    init(ram: [(guest: UInt64, size: UInt64)], domains: GuestDomains?, initialBypass: Bool, logger: Logger) {
        identity = ram.filter { $0.size > 0 }.map { DMAMappingTable.Entry(iova: $0.guest, size: $0.size, guestAddress: $0.guest) }
        self.domains = domains
        self.logger = logger
        state = Mutex(State(unattachedBypass: initialBypass))
    }

    static func endpointID(_ a: PCIAddress) -> UInt32 {
        UInt32(a.bus) << 8 | UInt32(a.device) << 3 | UInt32(a.function)
    }

    /// Puts an emulated device behind the vIOMMU. Its translator must hold
    /// the identity mapping, attached (the state before the driver runs, with
    /// the global bypass on); faults it sees go to `report`.
    func addEmulated(at address: PCIAddress, name: String, translator: DMATranslator,
                     report: @escaping @Sendable (UInt32, DMAFault) -> Void) throws {
        let id = Self.endpointID(address)
        let unattachedBypass = state.withLock { s in
            s.endpoints[id] = Endpoint(address: address, name: name, kind: .emulated(translator))
            return s.unattachedBypass
        }
        try Self.setUnattached(translator, bypass: unattachedBypass, identity: identity)
        translator.setFaultHandler { [weak self] fault in
            self?.faulted(endpoint: id, name: name, fault)
            report(id, fault)
        }
    }

    /// Puts an assigned device behind the vIOMMU (it stays on the identity
    /// IOAS until the guest attaches it to a domain).
    func addAssigned(at address: PCIAddress, name: String, device: AssignedVFIODevice) {
        let id = Self.endpointID(address)
        state.withLock { $0.endpoints[id] = Endpoint(address: address, name: name, kind: .assigned(device)) }
    }

    /// The endpoints, by endpoint ID.
    var endpoints: [UInt32: Endpoint] { state.withLock { $0.endpoints } }

    var counters: Counters { state.withLock { $0.counters } }

    private func faulted(endpoint: UInt32, name: String, _ fault: DMAFault) {
        let log = state.withLock { s -> Bool in
            s.counters.faults += 1
            guard s.counters.faultsLogged < Self.faultsLogged else { return false }
            s.counters.faultsLogged += 1
            return true
        }
        if log {
            logger.warning("viommu: fault: \(name): \(fault) (reported on the event queue; the request fails)")
        }
    }

    // MARK: - VIOMMUHost

    func hasEndpoint(_ endpoint: UInt32) -> Bool {
        state.withLock { $0.endpoints[endpoint] != nil }
    }

    func reservedRegions(endpoint: UInt32) -> [ClosedRange<UInt64>] {
        guard case let .assigned(dev)? = state.withLock({ $0.endpoints[endpoint]?.kind }), let domains else { return [] }
        do { return try domains.reservedRegions(for: dev) } catch {
            logger.warning("viommu: reserved IOVA ranges of \(dev.bdf): \(error)")
            return []
        }
    }

    func attach(endpoint: UInt32, domain: UInt32, bypass: Bool, mappings: [DMAMappingTable.Entry]) throws {
        try state.withLock { s in
            guard let e = s.endpoints[endpoint] else { throw VIOMMUHostError.invalid("no endpoint \(endpoint)") }
            switch e.kind {
            case let .emulated(t):
                try t.replaceMappings(bypass ? identity : mappings)
                try t.attach()
            case let .assigned(dev):
                guard let domains else { throw VIOMMUHostError.failed("no iommufd for \(dev.bdf)") }
                try Self.hostError {
                    if bypass { try domains.attachIdentity(device: dev) } else {
                        try domains.attach(device: dev, domain: domain, mappings: mappings)
                    }
                }
                if !bypass {
                    if s.warnedUnsafeInterrupts.insert(endpoint).inserted {
                        logger.notice("viommu: \(e.name) (host \(dev.bdf)) is in guest domain \(domain): its DMA now goes through the guest's mappings. virtio-iommu has no interrupt remapping, so a guest that drives it with VFIO needs vfio_iommu_type1.allow_unsafe_interrupts=1; its MSIs still reach the guest through the VMM's routes")
                    }
                }
            }
            if let old = s.domainOf.removeValue(forKey: endpoint) { s.members[old]?.remove(endpoint) }
            s.inBypassDomain.remove(endpoint)
            if bypass {
                s.inBypassDomain.insert(endpoint)
            } else {
                s.domainOf[endpoint] = domain
                s.members[domain, default: []].insert(endpoint)
            }
        }
    }

    func detach(endpoint: UInt32, bypass: Bool) throws {
        try state.withLock { s in
            guard let e = s.endpoints[endpoint] else { throw VIOMMUHostError.invalid("no endpoint \(endpoint)") }
            try setUnattached(e, bypass: bypass)
            if let old = s.domainOf.removeValue(forKey: endpoint) { s.members[old]?.remove(endpoint) }
            s.inBypassDomain.remove(endpoint)
        }
    }

    func map(domain: UInt32, entry: DMAMappingTable.Entry) throws {
        try state.withLock { s in
            var done: [DMATranslator] = []
            var assigned = false
            do {
                for id in (s.members[domain] ?? []).sorted() {
                    switch s.endpoints[id]?.kind {
                    case let .emulated(t)?:
                        try t.map(iova: entry.iova, size: entry.size, guestAddress: GuestAddress(entry.guestAddress),
                                  permissions: entry.permissions)
                        done.append(t)
                    case .assigned?: assigned = true
                    case nil: break
                    }
                }
                if assigned, let domains { try Self.hostError { try domains.map(domain: domain, entry: entry) } }
            } catch {
                for t in done { try? t.unmap(iova: entry.iova, size: entry.size) }
                throw error
            }
        }
    }

    func unmap(domain: UInt32, entries: [DMAMappingTable.Entry]) throws {
        try state.withLock { s in
            var assigned = false
            var firstError: Error?
            // Every endpoint loses the mappings even when one refuses: a
            // translation must not outlive the UNMAP (§5.13.6.6).
            for id in (s.members[domain] ?? []).sorted() {
                switch s.endpoints[id]?.kind {
                case let .emulated(t)?:
                    t.remove(entries)
                case .assigned?: assigned = true
                case nil: break
                }
            }
            if assigned, let domains {
                do { try Self.hostError { try domains.unmap(domain: domain, entries: entries) } } catch { firstError = firstError ?? error }
            }
            if let firstError { throw firstError }
        }
    }

    func domainFreed(_ domain: UInt32) {
        state.withLock { s in _ = s.members.removeValue(forKey: domain) }
        guard let domains, domains.ioasID(domain: domain) != nil else { return }
        do { try domains.free(domain: domain) } catch {
            logger.warning("viommu: freeing guest domain \(domain): \(error)")
        }
    }

    func setUnattachedBypass(_ bypass: Bool) throws {
        try state.withLock { s in
            let unattached = s.endpoints.keys.filter { s.domainOf[$0] == nil && !s.inBypassDomain.contains($0) }.sorted()
            for id in unattached {
                if let e = s.endpoints[id] { try setUnattached(e, bypass: bypass) }
            }
            s.unattachedBypass = bypass
        }
    }

    // MARK: - Helpers

    /// An endpoint in no domain: identity DMA with `bypass`, none without.
    private func setUnattached(_ e: Endpoint, bypass: Bool) throws {
        switch e.kind {
        case let .emulated(t):
            try Self.setUnattached(t, bypass: bypass, identity: identity)
        case let .assigned(dev):
            guard let domains else { throw VIOMMUHostError.failed("no iommufd for \(dev.bdf)") }
            try Self.hostError { bypass ? try domains.attachIdentity(device: dev) : try domains.detach(device: dev) }
        }
    }

    private static func setUnattached(_ t: DMATranslator, bypass: Bool, identity: [DMAMappingTable.Entry]) throws {
        if bypass {
            try t.replaceMappings(identity)
            try t.attach()
        } else {
            try t.detach()
            try t.replaceMappings([])
        }
    }

    /// VFIO's refusals as the statuses the guest gets (`VIOMMUHostError`);
    /// `DMAMappingError`s pass through (the device maps them itself).
    private static func hostError(_ body: () throws -> Void) throws {
        do { try body() } catch let e as DMAMappingError {
            throw e
        } catch let e as VFIOError {
            switch e {
            case .pinLimitExceeded, .tooManyGuestDomains: throw VIOMMUHostError.noResources("\(e)")
            default: throw VIOMMUHostError.failed("\(e)")
            }
        } catch let e as VIOMMUHostError {
            throw e
        } catch {
            throw VIOMMUHostError.failed("\(error)")
        }
    }
}
