/// One endpoint's (one device's) DMA address space: where its DMA to an I/O
/// virtual address (IOVA) lands in guest physical memory. The VMM gives each
/// DMA-capable device one; who implements it depends on the device:
///
/// - an assigned device: the iommufd IOAS it is attached to (`IOMMUContext`
///   in Sources/VFIO), where `map` pins the guest RAM behind the range and
///   programs the host IOMMU;
/// - an emulated device: a `DMATranslator`, a table the device's guest-memory
///   accesses go through (`DMAGuestMemory`).
///
/// Until there is a vIOMMU every endpoint gets the identity mapping (all guest
/// RAM at IOVA == guest physical address, `IdentityDMA`), the first client of
/// this protocol. A vIOMMU (virtio-iommu) will be a client too, and nothing
/// more: its MAP and UNMAP requests become `map` and `unmap`, ATTACH and DETACH
/// become `attach` and `detach`. The model is Cloud Hypervisor's
/// `ExternalDmaMapping` (vm-device crate: `map(iova, gpa, size)`,
/// `unmap(iova, size)`), with attach and detach added.
///
/// Every implementation keeps the virtio-iommu rules (virtio 1.2 §5.13.6, MAP
/// and UNMAP requests), enforced by `DMAMappingTable`:
/// - a map may not overlap an existing mapping (the caller unmaps first);
/// - an unmap removes every mapping inside `[iova, iova + size)`, and is
///   rejected, removing nothing, when it would split one; a range with no
///   mapping in it is not an error;
/// - sizes are positive, ranges do not wrap past 2^64, and a mapping's guest
///   range must be guest RAM, checked before anything is mapped.
///
/// The arguments may come from the guest (through a vIOMMU): a bad one gets a
/// `DMAMappingError`, never a trap.
///
/// Sendable: a vIOMMU maps and unmaps from its own thread while the endpoint's
/// DMA goes through the mappings on others.
public protocol DMAMapping: AnyObject, Sendable {
    /// Makes the endpoint's DMA to `[iova, iova + size)` reach guest physical
    /// `[guestAddress, guestAddress + size)`.
    func map(iova: UInt64, size: UInt64, guestAddress: GuestAddress) throws
    /// Revokes the mappings inside `[iova, iova + size)`.
    func unmap(iova: UInt64, size: UInt64) throws
    /// The endpoint's DMA goes through these mappings from now on.
    func attach() throws
    /// The endpoint's DMA no longer reaches guest memory through these
    /// mappings (they stay, for a later `attach`, until unmapped).
    func detach() throws
}

/// Why a DMA map, unmap or translation was refused.
public enum DMAMappingError: Error, Equatable, CustomStringConvertible {
    /// A map or unmap of 0 bytes.
    case empty(iova: UInt64)
    /// `[address, address + size)` wraps past 2^64 (an IOVA or a guest address).
    case wraps(address: UInt64, size: UInt64)
    /// The new mapping overlaps `existing` (IOVAs, inclusive).
    case overlaps(iova: ClosedRange<UInt64>, existing: ClosedRange<UInt64>)
    /// The unmap would split `existing`, which it covers only in part.
    case splits(iova: ClosedRange<UInt64>, existing: ClosedRange<UInt64>)
    /// The guest range is not all guest RAM.
    case notGuestRAM(guestAddress: UInt64, size: UInt64)
    /// The table already holds `limit` mappings.
    case tooManyMappings(limit: Int)

    public var description: String {
        switch self {
        case let .empty(iova):
            return "DMA map or unmap of 0 bytes at IOVA \(Self.hex(iova))"
        case let .wraps(a, s):
            return "DMA range \(Self.hex(a))+\(Self.hex(s)) wraps past the end of the address space"
        case let .overlaps(iova, existing):
            return "DMA map of IOVA \(Self.hex(iova)) overlaps the mapping at \(Self.hex(existing)); unmap it first"
        case let .splits(iova, existing):
            return "DMA unmap of IOVA \(Self.hex(iova)) would split the mapping at \(Self.hex(existing)); unmap whole mappings"
        case let .notGuestRAM(a, s):
            return "DMA map target \(Self.hex(a))+\(Self.hex(s)) is not guest RAM"
        case let .tooManyMappings(limit):
            return "DMA map refused: the endpoint already has \(limit) mappings"
        }
    }

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
    static func hex(_ r: ClosedRange<UInt64>) -> String { hex(r.lowerBound) + "-" + hex(r.upperBound) }
}
