import Synchronization

/// An emulated device's `DMAMapping`: the IOVA -> guest physical table its
/// DMA goes through (`translate`, or `DMAGuestMemory` for reads and writes).
/// Starts detached and empty: the VMM installs the identity mapping
/// (`IdentityDMA`) and attaches it; a vIOMMU installs the mappings of the
/// domain the endpoint is attached to (`replaceMappings`) and revokes them.
/// A map's guest range must be RAM of `memory`.
///
/// Accesses made through `access` (as `DMAGuestMemory` makes them) hold the
/// table's lock while they copy, so once `unmap`, `replaceMappings` or
/// `detach` returns no access can still use the old translation (virtio
/// 1.2 §5.13.6.6: "the device MUST NOT use the old mapping" once the UNMAP
/// request completes). An access the table does not allow is refused and
/// reported to the fault handler, if one is set.
///
/// Thread-safe: the device's queue threads translate while the vIOMMU maps.
public final class DMATranslator: DMAMapping, Sendable {
    private struct State {
        var table: DMAMappingTable
        var attached = false
        var faults: UInt64 = 0
    }

    /// The guest RAM mappings may point into.
    public let memory: GuestMemoryAccess
    private let state: Mutex<State>
    private let faultHandler = Mutex<(@Sendable (DMAFault) -> Void)?>(nil)

    public init(memory: GuestMemoryAccess, limit: Int = DMAMappingTable.defaultLimit) {
        self.memory = memory
        state = Mutex(State(table: DMAMappingTable(limit: limit)))
    }

    public func map(iova: UInt64, size: UInt64, guestAddress: GuestAddress, permissions: DMAPermissions) throws {
        try state.withLock { s in
            let e = try s.table.checkMap(iova: iova, size: size, guestAddress: guestAddress.raw, permissions: permissions)
            guard memory.contains(guestAddress, length: size) else {
                throw DMAMappingError.notGuestRAM(guestAddress: guestAddress.raw, size: size)
            }
            try s.table.map(iova: e.iova, size: e.size, guestAddress: e.guestAddress, permissions: e.permissions)
        }
    }

    public func unmap(iova: UInt64, size: UInt64) throws {
        try state.withLock { s in _ = try s.table.unmap(iova: iova, size: size) }
    }

    /// Removes exactly these mappings, under one lock (a vIOMMU's UNMAP, as
    /// its domain's table gave them: the translator of an endpoint in that
    /// domain holds the same ones); any it does not hold are ignored.
    public func remove(_ entries: [DMAMappingTable.Entry]) {
        state.withLock { $0.table.remove(entries) }
    }

    /// Replaces every mapping with `entries` at once (a vIOMMU attaching the
    /// endpoint to another domain): either all of them are installed or,
    /// when one breaks a rule or is not guest RAM, none is and the old
    /// table stays.
    public func replaceMappings(_ entries: [DMAMappingTable.Entry]) throws {
        try state.withLock { s in
            var t = DMAMappingTable(limit: s.table.limit)
            for e in entries {
                let c = try t.checkMap(iova: e.iova, size: e.size, guestAddress: e.guestAddress, permissions: e.permissions)
                guard memory.contains(GuestAddress(c.guestAddress), length: c.size) else {
                    throw DMAMappingError.notGuestRAM(guestAddress: c.guestAddress, size: c.size)
                }
                try t.map(iova: c.iova, size: c.size, guestAddress: c.guestAddress, permissions: c.permissions)
            }
            s.table = t
        }
    }

    public func attach() throws { state.withLock { $0.attached = true } }

    public func detach() throws { state.withLock { $0.attached = false } }

    /// Whether the endpoint's DMA goes through the table now.
    public var isAttached: Bool { state.withLock { $0.attached } }

    /// The mappings, in IOVA order.
    public var mappings: [DMAMappingTable.Entry] { state.withLock { $0.table.entries } }

    /// Accesses refused so far.
    public var faultCount: UInt64 { state.withLock { $0.faults } }

    /// Where refused accesses are reported (nil: only counted). Called on the
    /// device's thread, without the table's lock held.
    public func setFaultHandler(_ handler: (@Sendable (DMAFault) -> Void)?) {
        faultHandler.withLock { $0 = handler }
    }

    /// Whether refused accesses go somewhere (a vIOMMU's event queue): the
    /// endpoint is behind a vIOMMU, whose guest may revoke any mapping.
    public var reportsFaults: Bool { faultHandler.withLock { $0 != nil } }

    /// The guest physical address of `[iova, iova + length)`, or nil when the
    /// endpoint is detached or the range is not inside one mapping. Ignores
    /// permissions and reports nothing: a probe, not an access.
    public func translate(iova: UInt64, length: UInt64) -> GuestAddress? {
        state.withLock { s in s.attached ? s.table.translate(iova: iova, length: length).map(GuestAddress.init) : nil }
    }

    /// Runs `body` with the guest physical address of `[iova, iova + length)`
    /// when the mappings allow `access` there, holding the table's lock (so
    /// no unmap completes while `body` runs), and returns true; else counts
    /// and reports the fault and returns false without running `body`.
    public func access(iova: UInt64, length: UInt64, _ access: DMAPermissions,
                       _ body: (GuestAddress) throws -> Void) throws -> Bool {
        if case .success = try self.access([GuestRange(GuestAddress(iova), length)], access, { try body($0[0].address) }) {
            return true
        }
        return false
    }

    /// Runs `body` with the table, holding its lock.
    fileprivate func withTable<R>(_ body: (_ attached: Bool, _ table: DMAMappingTable) throws -> R) throws -> R {
        try state.withLock { s in try body(s.attached, s.table) }
    }

    /// Counts a refused access and reports it to the handler, without the
    /// table's lock held.
    fileprivate func report(_ fault: DMAFault) {
        state.withLock { $0.faults &+= 1 }
        if let handler = faultHandler.withLock({ $0 }) { handler(fault) }
    }
}

extension DMATranslator {
    /// Like `access`, for several ranges at once: runs `body` with the guest
    /// physical range of each, holding the table's lock while `body` runs,
    /// when the mappings allow `access` on every one of them, and returns
    /// its result; else counts and reports the first refused range and
    /// returns that fault without running `body`. Each range must lie
    /// inside one mapping.
    public func access<R>(_ ranges: [GuestRange], _ access: DMAPermissions,
                          _ body: ([GuestRange]) throws -> R) throws -> Result<R, DMAFault> {
        let outcome = try withTable { attached, table -> Result<R, DMAFault> in
            var translated: [GuestRange] = []
            translated.reserveCapacity(ranges.count)
            for r in ranges {
                let reason: DMAFault.Reason
                if !attached {
                    reason = .detached
                } else if let hit = table.lookup(iova: r.address.raw, length: r.length) {
                    if hit.permissions.isSuperset(of: access) {
                        translated.append(GuestRange(GuestAddress(hit.guestAddress), r.length))
                        continue
                    }
                    reason = .denied
                } else {
                    reason = .unmapped
                }
                return .failure(DMAFault(iova: r.address.raw, length: r.length, access: access, reason: reason))
            }
            return .success(try body(translated))
        }
        if case let .failure(fault) = outcome { report(fault) }
        return outcome
    }
}

/// Guest memory as one endpoint reaches it by DMA: the addresses it takes are
/// IOVAs (what the guest told the device), translated by a `DMATranslator`
/// into guest physical addresses of `memory`. A range that does not
/// translate, or that the mapping does not allow the access to, fails as a
/// range outside guest RAM does (`GuestMemoryError.outOfRange` with the
/// IOVA) and is reported as a `DMAFault`; so under the identity mapping a
/// device sees exactly what it saw with `memory` itself.
public final class DMAGuestMemory: GuestMemoryAccess, Sendable {
    public let translator: DMATranslator

    public init(translator: DMATranslator) {
        self.translator = translator
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws {
        let length = UInt64(buffer.count)
        let done = try translator.access(iova: address.raw, length: length, .read) { g in
            try translator.memory.read(into: buffer, at: g)
        }
        guard done else { throw GuestMemoryError.outOfRange(address: address.raw, length: length) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws {
        let length = UInt64(bytes.count)
        let done = try translator.access(iova: address.raw, length: length, .write) { g in
            try translator.memory.write(bytes, at: g)
        }
        guard done else { throw GuestMemoryError.outOfRange(address: address.raw, length: length) }
    }

    /// Behind a vIOMMU (the translator reports faults), buffers are judged
    /// when they are used: the guest may unmap them at any time.
    public var checksBuffersOnAccess: Bool { translator.reportsFaults }

    /// Whether the range is mapped (with any permission) to guest RAM. A
    /// probe: reports no fault.
    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        guard let g = translator.translate(iova: address.raw, length: length) else { return false }
        return translator.memory.contains(g, length: length)
    }

    /// Under a table that never changes (the identity mapping, no vIOMMU:
    /// `checksBuffersOnAccess` false), the translated pages of the memory
    /// behind; behind a vIOMMU nil, since an UNMAP may revoke a buffer
    /// while the I/O on it is in flight.
    public func lastingHostBuffers(_ ranges: [GuestRange], for access: DMAPermissions) throws -> [UnsafeMutableRawBufferPointer]? {
        guard !checksBuffersOnAccess else { return nil }
        switch try translator.access(ranges, access, { try translator.memory.lastingHostBuffers($0, for: access) }) {
        case let .success(buffers):
            return buffers
        case let .failure(fault):
            throw GuestMemoryError.outOfRange(address: fault.iova, length: fault.length)
        }
    }

    /// The endpoint's buffers in place: translated, then handed out by the
    /// memory behind, with the table locked while `body` runs (so a vIOMMU
    /// UNMAP waits for a transfer into a buffer it revokes). A range that
    /// does not translate with `access` is reported as a fault and fails as
    /// `read` and `write` fail.
    public func withHostBuffers<R>(_ ranges: [GuestRange], for access: DMAPermissions,
                                   _ body: ([UnsafeMutableRawBufferPointer]) throws -> R) throws -> R {
        switch try translator.access(ranges, access, { try translator.memory.withHostBuffers($0, for: access, body) }) {
        case let .success(result):
            return result
        case let .failure(fault):
            throw GuestMemoryError.outOfRange(address: fault.iova, length: fault.length)
        }
    }
}
