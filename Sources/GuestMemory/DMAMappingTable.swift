/// IOVA -> guest physical mappings with the rules every `DMAMapping` keeps
/// (see there): no overlapping maps, no unmap that splits a mapping, bounded
/// size. Sorted by IOVA, disjoint; lookups are a binary search. A value type:
/// implementations keep it under their own lock and may check a change
/// (`checkMap`, `checkUnmap`) before they make it in the kernel, then record it.
public struct DMAMappingTable: Equatable, Sendable {
    /// One mapping: DMA to `[iova, iova + size)` reaches guest physical
    /// `[guestAddress, guestAddress + size)`. Neither range wraps.
    public struct Entry: Equatable, Sendable, CustomStringConvertible {
        public let iova: UInt64
        public let size: UInt64
        public let guestAddress: UInt64
        /// What the endpoint may do through it.
        public let permissions: DMAPermissions

        public init(iova: UInt64, size: UInt64, guestAddress: UInt64, permissions: DMAPermissions = .readWrite) {
            self.iova = iova
            self.size = size
            self.guestAddress = guestAddress
            self.permissions = permissions
        }

        /// The IOVAs it covers, inclusive (size > 0, no wrap: checked by `checkMap`).
        public var iovaRange: ClosedRange<UInt64> { iova...(iova + (size - 1)) }

        public var description: String {
            "IOVA \(DMAMappingError.hex(iovaRange)) -> \(DMAMappingError.hex(guestAddress))\(permissions == .readWrite ? "" : " (\(permissions))")"
        }
    }

    /// A policy cap, so that a guest (through a vIOMMU) cannot grow the table
    /// without bound; STYLE.md asks for caps on mappings per domain.
    public static let defaultLimit = 1 << 16

    public private(set) var entries: [Entry] = []
    public let limit: Int

    public init(limit: Int = DMAMappingTable.defaultLimit) {
        self.limit = limit
    }

    /// `[start, start + size)` as an inclusive range, or why not.
    static func range(_ start: UInt64, _ size: UInt64) throws -> ClosedRange<UInt64> {
        guard size > 0 else { throw DMAMappingError.empty(iova: start) }
        let (last, wraps) = start.addingReportingOverflow(size - 1)
        guard !wraps else { throw DMAMappingError.wraps(address: start, size: size) }
        return start...last
    }

    /// The index of the last entry starting at or below `address`, or nil.
    private func lastIndex(startingAtOrBelow address: UInt64) -> Int? {
        var low = 0, high = entries.count // answer in [low - 1, high - 1]
        while low < high {
            let mid = low + (high - low) / 2
            if entries[mid].iova <= address { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : low - 1
    }

    /// The entry `map` would add, or the rule it breaks. Changes nothing.
    public func checkMap(iova: UInt64, size: UInt64, guestAddress: UInt64,
                         permissions: DMAPermissions = .readWrite) throws -> Entry {
        let r = try Self.range(iova, size)
        _ = try Self.range(guestAddress, size)
        // Disjoint and sorted: only the last entry starting at or below the new
        // range's end can reach into it.
        if let i = lastIndex(startingAtOrBelow: r.upperBound), entries[i].iovaRange.upperBound >= r.lowerBound {
            throw DMAMappingError.overlaps(iova: r, existing: entries[i].iovaRange)
        }
        guard entries.count < limit else { throw DMAMappingError.tooManyMappings(limit: limit) }
        return Entry(iova: iova, size: size, guestAddress: guestAddress, permissions: permissions)
    }

    /// Adds a mapping (see `checkMap`).
    @discardableResult
    public mutating func map(iova: UInt64, size: UInt64, guestAddress: UInt64,
                             permissions: DMAPermissions = .readWrite) throws -> Entry {
        let e = try checkMap(iova: iova, size: size, guestAddress: guestAddress, permissions: permissions)
        entries.insert(e, at: (lastIndex(startingAtOrBelow: e.iova) ?? -1) + 1)
        return e
    }

    /// The entries `unmap` would remove, in IOVA order (maybe none), or the
    /// mapping it would split. Changes nothing.
    public func checkUnmap(iova: UInt64, size: UInt64) throws -> [Entry] {
        Array(entries[try hits(iova: iova, size: size)])
    }

    /// The indices of the entries inside `[iova, iova + size)` (contiguous:
    /// the table is sorted and disjoint), or the mapping it would split.
    private func hits(iova: UInt64, size: UInt64) throws -> Range<Int> {
        let r = try Self.range(iova, size)
        guard let last = lastIndex(startingAtOrBelow: r.upperBound) else { return 0..<0 }
        var first = last + 1
        while first > 0, entries[first - 1].iovaRange.upperBound >= r.lowerBound { first -= 1 }
        for e in entries[first..<(last + 1)] where e.iova < r.lowerBound || e.iovaRange.upperBound > r.upperBound {
            throw DMAMappingError.splits(iova: r, existing: e.iovaRange)
        }
        return first..<(last + 1)
    }

    /// Removes every mapping inside `[iova, iova + size)` (see `checkUnmap`);
    /// returns them.
    @discardableResult
    public mutating func unmap(iova: UInt64, size: UInt64) throws -> [Entry] {
        let h = try hits(iova: iova, size: size)
        let gone = Array(entries[h])
        entries.removeSubrange(h)
        return gone
    }

    /// Removes the entries of `gone` the table holds (matched by IOVA; the
    /// table is disjoint, so an IOVA names one entry), as `checkUnmap` or
    /// `entries` gave them. One pass, without hashing: a vIOMMU removes
    /// hundreds of 4 KiB mappings per UNMAP from tables of thousands.
    public mutating func remove(_ gone: [Entry]) {
        guard let head = gone.first else { return }
        // Usually a run of consecutive entries (one UNMAP's range): one shift.
        if let i = lastIndex(startingAtOrBelow: head.iova), entries[i].iova == head.iova,
           gone.count <= entries.count - i,
           zip(entries[i..<(i + gone.count)], gone).allSatisfy({ $0.iova == $1.iova }) {
            entries.removeSubrange(i..<(i + gone.count))
            return
        }
        // Otherwise merge the two sorted lists.
        let drop = gone.map(\.iova).sorted()
        var j = 0
        var kept: [Entry] = []
        kept.reserveCapacity(entries.count)
        for e in entries {
            while j < drop.count, drop[j] < e.iova { j += 1 }
            if j < drop.count, drop[j] == e.iova { j += 1; continue }
            kept.append(e)
        }
        entries = kept
    }

    /// The guest physical address of `[iova, iova + length)` when it lies
    /// inside one mapping, else nil: a range across two mappings fails even
    /// when they are adjacent in both spaces (as an access across two guest
    /// RAM regions does). Length 0 is allowed up to a mapping's end, as
    /// `GuestRAM` allows it up to a region's end.
    public func translate(iova: UInt64, length: UInt64) -> UInt64? {
        lookup(iova: iova, length: length)?.guestAddress
    }

    /// Like `translate`, with the permissions of the mapping that covers the range.
    public func lookup(iova: UInt64, length: UInt64) -> (guestAddress: UInt64, permissions: DMAPermissions)? {
        guard let i = lastIndex(startingAtOrBelow: iova) else { return nil }
        let e = entries[i]
        let offset = iova - e.iova // iova >= e.iova
        guard offset <= e.size, length <= e.size - offset else { return nil }
        // Only a 0-byte range just past a mapping that ends at 2^64 - 1 can overflow.
        let (g, wraps) = e.guestAddress.addingReportingOverflow(offset)
        return wraps ? nil : (g, e.permissions)
    }
}
