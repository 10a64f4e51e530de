import Synchronization

/// An emulated device's `DMAMapping`: the IOVA -> guest physical table its
/// DMA goes through (`translate`, or `DMAGuestMemory` for reads and writes).
/// Starts detached and empty: the VMM installs the identity mapping
/// (`IdentityDMA`) and attaches it; a vIOMMU would install its own mappings
/// and revoke them. A map's guest range must be RAM of `memory`.
///
/// Thread-safe: the device's queue threads translate while the vIOMMU maps.
public final class DMATranslator: DMAMapping, Sendable {
    private struct State {
        var table: DMAMappingTable
        var attached = false
    }

    /// The guest RAM mappings may point into.
    public let memory: GuestMemoryAccess
    private let state: Mutex<State>

    public init(memory: GuestMemoryAccess, limit: Int = DMAMappingTable.defaultLimit) {
        self.memory = memory
        state = Mutex(State(table: DMAMappingTable(limit: limit)))
    }

    public func map(iova: UInt64, size: UInt64, guestAddress: GuestAddress) throws {
        try state.withLock { s in
            let e = try s.table.checkMap(iova: iova, size: size, guestAddress: guestAddress.raw)
            guard memory.contains(guestAddress, length: size) else {
                throw DMAMappingError.notGuestRAM(guestAddress: guestAddress.raw, size: size)
            }
            try s.table.map(iova: e.iova, size: e.size, guestAddress: e.guestAddress)
        }
    }

    public func unmap(iova: UInt64, size: UInt64) throws {
        try state.withLock { s in _ = try s.table.unmap(iova: iova, size: size) }
    }

    public func attach() throws { state.withLock { $0.attached = true } }

    public func detach() throws { state.withLock { $0.attached = false } }

    /// Whether the endpoint's DMA goes through the table now.
    public var isAttached: Bool { state.withLock { $0.attached } }

    /// The mappings, in IOVA order.
    public var mappings: [DMAMappingTable.Entry] { state.withLock { $0.table.entries } }

    /// The guest physical address of `[iova, iova + length)`, or nil when the
    /// endpoint is detached or the range is not inside one mapping.
    public func translate(iova: UInt64, length: UInt64) -> GuestAddress? {
        state.withLock { s in s.attached ? s.table.translate(iova: iova, length: length).map(GuestAddress.init) : nil }
    }
}

/// Guest memory as one endpoint reaches it by DMA: the addresses it takes are
/// IOVAs (what the guest told the device), translated by a `DMATranslator`
/// into guest physical addresses of `memory`. A range that does not translate
/// fails as a range outside guest RAM does (`GuestMemoryError.outOfRange`
/// with the IOVA), so under the identity mapping a device sees exactly what
/// it saw with `memory` itself.
public final class DMAGuestMemory: GuestMemoryAccess, Sendable {
    public let translator: DMATranslator

    public init(translator: DMATranslator) {
        self.translator = translator
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws {
        let length = UInt64(buffer.count)
        guard let g = translator.translate(iova: address.raw, length: length) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: length)
        }
        try translator.memory.read(into: buffer, at: g)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws {
        let length = UInt64(bytes.count)
        guard let g = translator.translate(iova: address.raw, length: length) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: length)
        }
        try translator.memory.write(bytes, at: g)
    }

    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        guard let g = translator.translate(iova: address.raw, length: length) else { return false }
        return translator.memory.contains(g, length: length)
    }
}
