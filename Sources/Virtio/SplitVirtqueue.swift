import GuestMemory

/// The device side of a split virtqueue (virtio 1.2 §2.7).
///
/// Built by the transport when the driver sets DRIVER_OK, from the size and
/// ring addresses the driver wrote; the constructor checks them. Every value
/// read from the rings afterwards is treated as hostile: `popAvailable`
/// checks the available index, every descriptor index, every chain's length
/// (which also catches loops), every buffer's range and the indirect table
/// rules, and throws a `VirtqueueError` that names what the driver did wrong.
///
/// A value type: the device keeps its queues in its own locked state. Guest
/// memory is passed to every call rather than stored.
public struct SplitVirtqueue: Sendable {
    public let size: UInt16
    public let descriptorTable: GuestAddress
    public let availRing: GuestAddress
    public let usedRing: GuestAddress
    /// VIRTIO_F_EVENT_IDX was negotiated (§2.7.7, §2.7.10).
    public let eventIndex: Bool
    /// VIRTIO_F_INDIRECT_DESC was negotiated (§2.7.5.3).
    public let indirectDescriptors: Bool
    /// False for a queue the driver did not enable: it never yields a chain.
    public let isEnabled: Bool

    /// Index (free-running, mod 2^16) of the next available-ring entry to take.
    public private(set) var nextAvail: UInt16 = 0
    /// Index (free-running, mod 2^16) of the next used-ring entry to write.
    public private(set) var nextUsed: UInt16 = 0
    /// `nextUsed` when `needsNotification` last decided.
    private var lastCheckedUsed: UInt16 = 0
    /// Whether the device wants available buffer notifications (§2.7.10).
    public private(set) var notificationsEnabled = true

    /// A queue the driver did not enable.
    public static func disabled() -> SplitVirtqueue {
        SplitVirtqueue(size: 0, descriptorTable: GuestAddress(0), availRing: GuestAddress(0),
                       usedRing: GuestAddress(0), eventIndex: false, indirectDescriptors: false, isEnabled: false)
    }

    private init(size: UInt16, descriptorTable: GuestAddress, availRing: GuestAddress, usedRing: GuestAddress,
                 eventIndex: Bool, indirectDescriptors: Bool, isEnabled: Bool) {
        self.size = size
        self.descriptorTable = descriptorTable
        self.availRing = availRing
        self.usedRing = usedRing
        self.eventIndex = eventIndex
        self.indirectDescriptors = indirectDescriptors
        self.isEnabled = isEnabled
    }

    /// Checks the driver's configuration: `size` a power of 2 no larger than
    /// `maxSize` (itself at most 32768, §2.7); each part aligned (§2.7.1) and
    /// wholly inside guest RAM, its end computed with checked arithmetic.
    /// `features` are the negotiated feature bits.
    public init(size: UInt16, maxSize: UInt16 = VirtioSpec.SplitRing.maxQueueSize,
                descriptorTable: GuestAddress, availRing: GuestAddress, usedRing: GuestAddress,
                features: UInt64, memory: GuestMemoryAccess) throws {
        let limit = min(maxSize, VirtioSpec.SplitRing.maxQueueSize)
        guard size > 0, size <= limit, size & (size &- 1) == 0 else {
            throw VirtqueueError.invalidQueueSize(size)
        }
        typealias R = VirtioSpec.SplitRing
        let parts: [(VirtqueueError.RingPart, GuestAddress, UInt64, UInt64)] = [
            (.descriptorTable, descriptorTable, R.descriptorTableAlignment, R.descriptorTableBytes(size: size)),
            (.availRing, availRing, R.availRingAlignment, R.availRingBytes(size: size)),
            (.usedRing, usedRing, R.usedRingAlignment, R.usedRingBytes(size: size)),
        ]
        for (part, address, alignment, length) in parts {
            guard address.raw % alignment == 0 else {
                throw VirtqueueError.misalignedRing(part: part, address: address.raw)
            }
            guard address.adding(length) != nil, memory.contains(address, length: length) else {
                throw VirtqueueError.ringOutsideMemory(part: part, address: address.raw, length: length)
            }
        }
        self.init(size: size, descriptorTable: descriptorTable, availRing: availRing, usedRing: usedRing,
                  eventIndex: features & VirtioSpec.Feature.eventIndex != 0,
                  indirectDescriptors: features & VirtioSpec.Feature.indirectDescriptors != 0,
                  isEnabled: true)
    }

    // MARK: - Ring field addresses. All are inside the ranges checked at init
    // (offsets below the part's size), so plain arithmetic on them cannot
    // overflow; `slot` is always reduced mod `size` first.

    private var availFlagsAddress: GuestAddress { availRing }
    private var availIndexAddress: GuestAddress { GuestAddress(availRing.raw + 2) }
    private func availEntryAddress(_ slot: UInt16) -> GuestAddress {
        GuestAddress(availRing.raw + VirtioSpec.SplitRing.availHeaderSize + VirtioSpec.SplitRing.availEntrySize * UInt64(slot))
    }
    /// `used_event` follows the ring entries (§2.7.6).
    private var usedEventAddress: GuestAddress { availEntryAddress(size) }
    private var usedFlagsAddress: GuestAddress { usedRing }
    private var usedIndexAddress: GuestAddress { GuestAddress(usedRing.raw + 2) }
    private func usedElementAddress(_ slot: UInt16) -> GuestAddress {
        GuestAddress(usedRing.raw + VirtioSpec.SplitRing.usedHeaderSize + VirtioSpec.SplitRing.usedElementSize * UInt64(slot))
    }
    /// `avail_event` follows the used elements (§2.7.8).
    private var availEventAddress: GuestAddress { usedElementAddress(size) }

    private func read16(_ a: GuestAddress, _ memory: GuestMemoryAccess) throws -> UInt16 {
        do { return try memory.readInteger(UInt16.self, at: a) } catch { throw VirtqueueError.memory("\(error)") }
    }

    private func write16(_ v: UInt16, _ a: GuestAddress, _ memory: GuestMemoryAccess) throws {
        do { try memory.writeInteger(v, at: a) } catch { throw VirtqueueError.memory("\(error)") }
    }

    // MARK: - Available ring

    /// How many chains the driver has made available and the device has not
    /// taken. Throws `.availIndexJump` when that exceeds the queue size.
    public func availableCount(memory: GuestMemoryAccess) throws -> UInt16 {
        guard isEnabled else { return 0 }
        let availIndex = try read16(availIndexAddress, memory)
        let pending = availIndex &- nextAvail
        guard pending <= size else {
            throw VirtqueueError.availIndexJump(availIndex: availIndex, nextAvail: nextAvail, queueSize: size)
        }
        return pending
    }

    /// Takes the next available descriptor chain, or nil when there is none.
    /// Checks (each failure throws and leaves the queue where it was):
    /// - `avail.idx` is at most `size` ahead of the device (§2.7.6);
    /// - every descriptor index is below the table size;
    /// - a chain visits at most `size` descriptors, an indirect table's chain
    ///   at most its entry count (no loops, §2.7.5.2, §2.7.5.3.1);
    /// - every buffer's `addr + len` is computed with checked arithmetic and
    ///   lies inside one region of guest RAM; a chain is at most 2^32 bytes;
    /// - VIRTQ_DESC_F_INDIRECT only if negotiated, never with NEXT, never
    ///   nested, with a table length that is a non-zero multiple of 16
    ///   (§2.7.5.3).
    /// With VIRTIO_F_EVENT_IDX, also publishes `avail_event` (§2.7.10).
    public mutating func popAvailable(memory: GuestMemoryAccess) throws -> DescriptorChain? {
        guard try availableCount(memory: memory) > 0 else { return nil }
        MemoryOrdering.afterReadingAvailIndex()
        let slot = nextAvail & (size - 1)
        let head = try read16(availEntryAddress(slot), memory)
        let chain = try readChain(head: head, memory: memory)
        nextAvail &+= 1
        if eventIndex && notificationsEnabled {
            // "Notify me when you make entry nextAvail available" (§2.7.10.2).
            try write16(nextAvail, availEventAddress, memory)
            // The next pop reads avail.idx: a store then a load of another
            // field, the pattern the driver mirrors (idx store, avail_event
            // load). Without a full fence both could see stale values and the
            // driver's kick would be lost.
            MemoryOrdering.full()
        }
        return chain
    }

    /// A raw `struct virtq_desc` (§2.7.5).
    private struct RawDescriptor {
        let address: UInt64
        let length: UInt32
        let flags: UInt16
        let next: UInt16

        /// From the entry's two little-endian 64-bit words: `addr`, then
        /// `len`, `flags` and `next` packed.
        init(words lo: UInt64, _ hi: UInt64) {
            address = lo
            length = UInt32(truncatingIfNeeded: hi)
            flags = UInt16(truncatingIfNeeded: hi >> 32)
            next = UInt16(truncatingIfNeeded: hi >> 48)
        }

        init(_ b: ArraySlice<UInt8>) {
            let i = b.startIndex
            var a: UInt64 = 0
            for k in 0..<8 { a |= UInt64(b[i + k]) << (8 * UInt64(k)) }
            var l: UInt32 = 0
            for k in 0..<4 { l |= UInt32(b[i + 8 + k]) << (8 * UInt32(k)) }
            address = a
            length = l
            flags = UInt16(b[i + 12]) | UInt16(b[i + 13]) << 8
            next = UInt16(b[i + 14]) | UInt16(b[i + 15]) << 8
        }

        var hasNext: Bool { flags & VirtioSpec.SplitRing.descFlagNext != 0 }
        var isWritable: Bool { flags & VirtioSpec.SplitRing.descFlagWrite != 0 }
        var isIndirect: Bool { flags & VirtioSpec.SplitRing.descFlagIndirect != 0 }
    }

    /// Accumulates a chain's segments and its byte total.
    private struct Builder {
        let head: UInt16
        var segments: [DescriptorSegment] = []
        var total: UInt64 = 0

        mutating func append(_ d: RawDescriptor, memory: GuestMemoryAccess) throws {
            let address = GuestAddress(d.address)
            guard address.adding(UInt64(d.length)) != nil else {
                throw VirtqueueError.addressOverflow(address: d.address, length: d.length)
            }
            // Behind a vIOMMU a buffer is checked when the device uses it
            // (and only that request fails); the rings themselves still are
            // checked here and at activation.
            if d.length > 0, !memory.checksBuffersOnAccess {
                guard memory.contains(address, length: UInt64(d.length)) else {
                    throw VirtqueueError.bufferOutsideMemory(address: d.address, length: d.length)
                }
            }
            total += UInt64(d.length) // total <= 2^32 before, so no overflow
            guard total <= VirtioSpec.SplitRing.maxChainBytes else {
                throw VirtqueueError.chainTooLarge(head: head)
            }
            segments.append(DescriptorSegment(address: address, length: d.length, isWritable: d.isWritable))
        }
    }

    private func readDescriptor(at index: UInt16, memory: GuestMemoryAccess) throws -> RawDescriptor {
        // index < size, so the entry is inside the table checked at init.
        let a = GuestAddress(descriptorTable.raw + VirtioSpec.SplitRing.descriptorSize * UInt64(index))
        do {
            // Read into the stack, not an array: this runs for every descriptor.
            var words: (UInt64, UInt64) = (0, 0)
            try withUnsafeMutableBytes(of: &words) { try memory.read(into: $0, at: a) }
            return RawDescriptor(words: UInt64(littleEndian: words.0), UInt64(littleEndian: words.1))
        } catch {
            throw VirtqueueError.memory("\(error)")
        }
    }

    private func readChain(head: UInt16, memory: GuestMemoryAccess) throws -> DescriptorChain {
        var builder = Builder(head: head)
        // Most chains are short (virtio-blk's: header, data, status): one allocation.
        builder.segments.reserveCapacity(4)
        var index = head
        var visited: UInt32 = 0
        while true {
            guard index < size else {
                throw VirtqueueError.descriptorIndexOutOfRange(index: UInt32(index), tableSize: UInt32(size))
            }
            visited += 1
            guard visited <= UInt32(size) else {
                throw VirtqueueError.chainTooLong(head: head, limit: UInt32(size))
            }
            let d = try readDescriptor(at: index, memory: memory)
            if d.isIndirect {
                guard indirectDescriptors else { throw VirtqueueError.indirectNotNegotiated(head: head) }
                guard !d.hasNext else { throw VirtqueueError.indirectWithNext(head: head) }
                // "zero or more normal chained descriptors followed by a single
                // descriptor with VIRTQ_DESC_F_INDIRECT" (§2.7.5.3.2): it ends the chain.
                try readIndirectTable(d, into: &builder, memory: memory)
                break
            }
            try builder.append(d, memory: memory)
            guard d.hasNext else { break }
            index = d.next
        }
        return DescriptorChain(head: head, segments: builder.segments)
    }

    /// Walks an indirect table (§2.7.5.3). Its descriptors are chained by
    /// `next` starting at entry 0; the WRITE flag of the descriptor that
    /// points at the table is ignored (§2.7.5.3.2). A table may hold at most
    /// 32768 entries, the largest queue size (§2.7), which bounds the copy.
    private func readIndirectTable(_ d: RawDescriptor, into builder: inout Builder, memory: GuestMemoryAccess) throws {
        let entrySize = VirtioSpec.SplitRing.descriptorSize
        let maxEntries = UInt64(VirtioSpec.SplitRing.maxQueueSize)
        let length = UInt64(d.length)
        guard length > 0, length % entrySize == 0, length / entrySize <= maxEntries else {
            throw VirtqueueError.badIndirectTableLength(head: builder.head, length: d.length)
        }
        let table = GuestAddress(d.address)
        guard table.adding(length) != nil else {
            throw VirtqueueError.addressOverflow(address: d.address, length: d.length)
        }
        guard memory.contains(table, length: length) else {
            throw VirtqueueError.bufferOutsideMemory(address: d.address, length: d.length)
        }
        let bytes: [UInt8]
        do {
            bytes = try memory.readBytes(at: table, count: Int(length)) // <= 512 KiB
        } catch {
            throw VirtqueueError.memory("\(error)")
        }
        let entries = UInt32(length / entrySize)
        var index: UInt32 = 0
        var visited: UInt32 = 0
        while true {
            guard index < entries else {
                throw VirtqueueError.descriptorIndexOutOfRange(index: index, tableSize: entries)
            }
            visited += 1
            guard visited <= entries else {
                throw VirtqueueError.chainTooLong(head: builder.head, limit: entries)
            }
            let start = Int(index) * Int(entrySize)
            let e = RawDescriptor(bytes[start..<(start + Int(entrySize))])
            guard !e.isIndirect else { throw VirtqueueError.nestedIndirect(head: builder.head) }
            try builder.append(e, memory: memory)
            guard e.hasNext else { break }
            index = UInt32(e.next)
        }
    }

    // MARK: - Used ring

    /// Returns a chain to the driver: writes `{id: head, len}` into the next
    /// used-ring slot, then (after a release fence) advances `used.idx`
    /// (§2.7.8, §2.7.8.2: `len` is set before `idx` moves).
    public mutating func addUsed(head: UInt16, len: UInt32, memory: GuestMemoryAccess) throws {
        guard isEnabled else { throw VirtqueueError.queueNotReady }
        guard head < size else { throw VirtqueueError.usedHeadOutOfRange(head: head, queueSize: size) }
        let slot = nextUsed & (size - 1)
        let element = usedElementAddress(slot)
        do {
            try memory.writeInteger(UInt32(head), at: element)
            try memory.writeInteger(len, at: GuestAddress(element.raw + 4))
        } catch {
            throw VirtqueueError.memory("\(error)")
        }
        nextUsed &+= 1
        MemoryOrdering.beforePublishingUsedIndex()
        try write16(nextUsed, usedIndexAddress, memory)
    }

    /// Whether the device should send a used buffer notification for the
    /// entries added since the last call (§2.7.7.2):
    /// - with VIRTIO_F_EVENT_IDX, when `used.idx` passed `used_event` in that
    ///   span (the `vring_need_event` test);
    /// - otherwise, unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT.
    /// False when nothing was added since the last call.
    public mutating func needsNotification(memory: GuestMemoryAccess) throws -> Bool {
        guard isEnabled else { return false }
        MemoryOrdering.full() // used.idx is written before used_event / flags are read
        let new = nextUsed
        let old = lastCheckedUsed
        lastCheckedUsed = new
        guard new != old else { return false }
        if eventIndex {
            let usedEvent = try read16(usedEventAddress, memory)
            return new &- usedEvent &- 1 < new &- old
        }
        let flags = try read16(availFlagsAddress, memory)
        return flags & VirtioSpec.SplitRing.availFlagNoInterrupt == 0
    }

    // MARK: - Available buffer notification suppression (§2.7.10)

    /// Asks the driver not to notify: VIRTQ_USED_F_NO_NOTIFY without
    /// VIRTIO_F_EVENT_IDX; with it, `avail_event` simply stops moving.
    public mutating func disableNotifications(memory: GuestMemoryAccess) throws {
        guard isEnabled else { return }
        notificationsEnabled = false
        if !eventIndex {
            try write16(VirtioSpec.SplitRing.usedFlagNoNotify, usedFlagsAddress, memory)
        }
    }

    /// Asks the driver to notify again and returns true when chains arrived
    /// meanwhile (the caller then pops them rather than wait for a
    /// notification that will not come).
    public mutating func enableNotifications(memory: GuestMemoryAccess) throws -> Bool {
        guard isEnabled else { return false }
        notificationsEnabled = true
        if eventIndex {
            try write16(nextAvail, availEventAddress, memory)
        } else {
            try write16(0, usedFlagsAddress, memory)
        }
        MemoryOrdering.full() // publish the request before re-reading avail.idx
        return try availableCount(memory: memory) > 0
    }
}
