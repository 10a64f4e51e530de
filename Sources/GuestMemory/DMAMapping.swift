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
    /// `[guestAddress, guestAddress + size)`, for the accesses `permissions`
    /// allows (a vIOMMU's MAP flags READ and WRITE).
    func map(iova: UInt64, size: UInt64, guestAddress: GuestAddress, permissions: DMAPermissions) throws
    /// Revokes the mappings inside `[iova, iova + size)`.
    func unmap(iova: UInt64, size: UInt64) throws
    /// The endpoint's DMA goes through these mappings from now on.
    func attach() throws
    /// The endpoint's DMA no longer reaches guest memory through these
    /// mappings (they stay, for a later `attach`, until unmapped).
    func detach() throws
}

extension DMAMapping {
    /// A read-write mapping (what the identity mapping installs).
    public func map(iova: UInt64, size: UInt64, guestAddress: GuestAddress) throws {
        try map(iova: iova, size: size, guestAddress: guestAddress, permissions: .readWrite)
    }
}

/// What a mapping lets the endpoint do: read guest memory (the device reads,
/// e.g. a transmit buffer), write it (e.g. a receive buffer), or both.
/// virtio-iommu's VIRTIO_IOMMU_MAP_F_READ and _WRITE; iommufd's
/// IOMMU_IOAS_MAP_READABLE and _WRITEABLE.
public struct DMAPermissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let read = DMAPermissions(rawValue: 1)
    public static let write = DMAPermissions(rawValue: 2)
    public static let readWrite: DMAPermissions = [.read, .write]

    public var description: String {
        switch (contains(.read), contains(.write)) {
        case (true, true): return "read-write"
        case (true, false): return "read-only"
        case (false, true): return "write-only"
        case (false, false): return "no access"
        }
    }
}

/// An access an endpoint's DMA made that its mappings did not allow, as a
/// `DMATranslator` reports it (a vIOMMU turns it into a fault event).
public struct DMAFault: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable {
        /// No mapping covers the whole range.
        case unmapped
        /// A mapping covers it, without the permission the access needs.
        case denied
        /// The endpoint is detached: its DMA reaches nothing.
        case detached
    }

    public let iova: UInt64
    public let length: UInt64
    /// `.write` when the device wrote guest memory, `.read` when it read.
    public let access: DMAPermissions
    public let reason: Reason

    public init(iova: UInt64, length: UInt64, access: DMAPermissions, reason: Reason) {
        self.iova = iova
        self.length = length
        self.access = access
        self.reason = reason
    }

    public var description: String {
        let what = access.contains(.write) ? "write" : "read"
        let why: String
        switch reason {
        case .unmapped: why = "not mapped"
        case .denied: why = "mapped without \(what) permission"
        case .detached: why = "endpoint detached"
        }
        return "DMA \(what) of \(length) bytes at IOVA \(DMAMappingError.hex(iova)): \(why)"
    }
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
