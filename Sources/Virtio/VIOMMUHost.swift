import GuestMemory

/// What the virtio-iommu device (`VirtioIOMMU`) asks of the VMM: the
/// endpoints behind it and, for each change the guest makes, the DMA
/// translation that backs it. The VMM implements it; devices never call
/// `ioctl`. For an emulated endpoint the translation is a `DMATranslator`
/// per endpoint (a domain's mappings are installed in the translator of
/// every endpoint attached to it); for an assigned device it is an iommufd
/// IOAS per domain (attaching the device attaches it to that IOAS).
///
/// Domain-centred: the device owns the canonical state (the domains, each
/// with its `DMAMappingTable`, its bypass flag and its endpoints; which
/// domain each endpoint is in) and has already checked every request against
/// it and against the virtio-iommu rules (virtio 1.2 §5.13.6) before it
/// calls the host. The host only applies the change, or refuses it by
/// throwing; then the device answers the guest with an error status (see
/// `VIOMMUHostError` for which) and its canonical state stays as it was. A
/// host that throws must leave its own state as it was too (all or
/// nothing), so that both views agree.
///
/// The endpoint states the host keeps are, for each endpoint:
/// - in no domain: identity DMA when the device's global bypass is on (the
///   config's `bypass` byte, initially `VirtioIOMMU`'s `initialBypass`),
///   no DMA at all otherwise;
/// - in a bypass domain (ATTACH with VIRTIO_IOMMU_ATTACH_F_BYPASS): identity;
/// - in a translating domain: exactly that domain's mappings.
/// Before the device's first call every endpoint is in no domain, with
/// the global bypass at `initialBypass`; the VMM sets the host up that way.
///
/// Threading: the device calls the host with its own request lock held, from
/// the thread that notified the request queue (the VMM's I/O thread for the
/// vIOMMU) or from a vCPU thread (configuration writes, reset). An
/// implementation must not call back into the device (a fault handler that
/// calls `VirtioIOMMU.reportFault` is fine: it takes only the event lock).
public protocol VIOMMUHost: AnyObject, Sendable {
    /// Whether `endpoint` is behind this vIOMMU. The endpoint ID is the PCI
    /// requester ID, `bus << 8 | devfn` (as the guest learns it from the
    /// ACPI VIOT table). The set is fixed when the VM is built.
    func hasEndpoint(_ endpoint: UInt32) -> Bool

    /// IOVA ranges the guest must not map for `endpoint`, reported by PROBE
    /// as RESV_MEM properties of subtype RESERVED (e.g. the ranges the host
    /// IOMMU cannot translate, from the IOAS's IOVA ranges). The x86 MSI
    /// window, which the device always reports (subtype MSI), need not be
    /// included. Asked once per endpoint; the answer is cached.
    func reservedRegions(endpoint: UInt32) -> [ClosedRange<UInt64>]

    /// `endpoint` now translates through `domain`: identity when `bypass`,
    /// else exactly `mappings` (the domain's whole table, in IOVA order; empty
    /// for a new domain), installed at once. The endpoint leaves the domain
    /// it was in, if any, in the same step (ATTACH moves an endpoint, §5.13.6.2);
    /// if that domain is now empty the device calls `domainFreed` next.
    func attach(endpoint: UInt32, domain: UInt32, bypass: Bool, mappings: [DMAMappingTable.Entry]) throws

    /// `endpoint` is in no domain any more (DETACH, or the device's reset):
    /// once this returns it cannot use its old domain's mappings (§5.13.6.3);
    /// its DMA is identity when `bypass` (the global bypass), else blocked.
    func detach(endpoint: UInt32, bypass: Bool) throws

    /// A new mapping in `domain` (a translating domain with at least one
    /// endpoint), already checked against the domain's table: install it for
    /// every endpoint attached to the domain.
    func map(domain: UInt32, entry: DMAMappingTable.Entry) throws

    /// These mappings of `domain` (whole entries of its table, in IOVA order,
    /// at least one) are gone: when this returns no endpoint may use them
    /// (§5.13.6.6).
    func unmap(domain: UInt32, entries: [DMAMappingTable.Entry]) throws

    /// The last endpoint left `domain`: the domain and its mappings no longer
    /// exist (§5.13.6.3) and the host may free what backs it (an IOAS). The
    /// guest may reuse the ID for a new domain.
    func domainFreed(_ domain: UInt32)

    /// The global bypass changed (the driver wrote the config's `bypass`
    /// byte, or a system reset restored it): every endpoint in no domain now
    /// has identity DMA (`true`) or none (`false`). When this throws the
    /// byte keeps its old value.
    func setUnattachedBypass(_ bypass: Bool) throws
}

/// What a `VIOMMUHost` throws to refuse a change, and the status the guest
/// then gets (§5.13.6 status codes). A host may also throw a
/// `DMAMappingError` (what `DMATranslator` and `DMAMappingTable` throw): a
/// range that is not guest RAM gets VIRTIO_IOMMU_S_INVAL, too many mappings
/// VIRTIO_IOMMU_S_NOMEM, an overlap VIRTIO_IOMMU_S_INVAL, a split, an empty
/// or a wrapping range VIRTIO_IOMMU_S_RANGE. Any other error gets
/// VIRTIO_IOMMU_S_DEVERR.
public enum VIOMMUHostError: Error, Equatable, CustomStringConvertible {
    /// The host cannot do this (VIRTIO_IOMMU_S_UNSUPP), e.g. an assigned
    /// device whose host IOMMU refuses the domain.
    case unsupported(String)
    /// The host ran out of something (VIRTIO_IOMMU_S_NOMEM), e.g. pinned
    /// memory or host IOMMU domains.
    case noResources(String)
    /// The host IOMMU rejects these parameters (VIRTIO_IOMMU_S_INVAL), e.g.
    /// an IOVA outside the IOAS's ranges.
    case invalid(String)
    /// Anything else went wrong on the host (VIRTIO_IOMMU_S_DEVERR).
    case failed(String)

    public var description: String {
        switch self {
        case let .unsupported(why): return "vIOMMU host: unsupported: \(why)"
        case let .noResources(why): return "vIOMMU host: out of resources: \(why)"
        case let .invalid(why): return "vIOMMU host: invalid: \(why)"
        case let .failed(why): return "vIOMMU host: failed: \(why)"
        }
    }
}
