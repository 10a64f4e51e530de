import Devices
import GuestMemory
import Synchronization
import Virtio

/// A virtio driver for tests, in the manner of Firecracker's `VirtQueue`
/// test utilities: it lays out a descriptor table, available ring and used
/// ring in fake guest memory, writes descriptors and chains the way a guest
/// would, and reads back what the device put in the used ring. All layout
/// numbers are the §2.7 ones, written independently of the code under test.
/// Its indices are behind a Mutex, so a test may hand it to another thread.
public final class FakeDriver: Sendable {
    public let memory: GuestMemoryAccess
    public let size: UInt16
    public let descriptorTable: UInt64
    public let availRing: UInt64
    public let usedRing: UInt64
    private struct Indices {
        var availIndex: UInt16 = 0
        var lastUsedSeen: UInt16 = 0
        var nextDescriptor: UInt16 = 0
    }
    private let indices = Mutex(Indices())
    public var availIndex: UInt16 { indices.withLock { $0.availIndex } }
    /// Next descriptor `addChain` hands out (wraps at `size`).
    public var nextDescriptor: UInt16 {
        get { indices.withLock { $0.nextDescriptor } }
        set { indices.withLock { $0.nextDescriptor = newValue } }
    }

    public static let flagNext: UInt16 = 1, flagWrite: UInt16 = 2, flagIndirect: UInt16 = 4

    /// Rings at `base`: table (16*size), then the available ring (6+2*size),
    /// then the used ring (6+8*size) rounded up to 4.
    public init(memory: GuestMemoryAccess, size: UInt16, base: UInt64 = 0x1000) {
        self.memory = memory
        self.size = size
        descriptorTable = base
        availRing = base + 16 * UInt64(size)
        usedRing = (availRing + 6 + 2 * UInt64(size) + 3) & ~3
    }

    /// End of the used ring: the first free byte after the queue.
    public var end: UInt64 { usedRing + 6 + 8 * UInt64(size) }

    public func makeQueue(features: UInt64 = 0, maxSize: UInt16 = 32768) throws -> SplitVirtqueue {
        try SplitVirtqueue(size: size, maxSize: maxSize, descriptorTable: GuestAddress(descriptorTable),
                           availRing: GuestAddress(availRing), usedRing: GuestAddress(usedRing),
                           features: features, memory: memory)
    }

    // MARK: descriptors

    public static func descriptorBytes(addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) -> [UInt8] {
        var b: [UInt8] = []
        for k in 0..<8 { b.append(UInt8(truncatingIfNeeded: addr >> (8 * UInt64(k)))) }
        for k in 0..<4 { b.append(UInt8(truncatingIfNeeded: len >> (8 * UInt32(k)))) }
        b += [UInt8(truncatingIfNeeded: flags), UInt8(truncatingIfNeeded: flags >> 8)]
        b += [UInt8(truncatingIfNeeded: next), UInt8(truncatingIfNeeded: next >> 8)]
        return b
    }

    public func setDescriptor(_ index: UInt16, addr: UInt64, len: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        try! memory.writeBytes(Self.descriptorBytes(addr: addr, len: len, flags: flags, next: next),
                               at: GuestAddress(descriptorTable + 16 * UInt64(index)))
    }

    /// Writes an indirect table of `(addr, len, flags, next)` entries at `address`.
    public func writeIndirectTable(at address: UInt64, _ entries: [(UInt64, UInt32, UInt16, UInt16)]) {
        var b: [UInt8] = []
        for e in entries { b += Self.descriptorBytes(addr: e.0, len: e.1, flags: e.2, next: e.3) }
        try! memory.writeBytes(b, at: GuestAddress(address))
    }

    /// Chains `buffers` through consecutive descriptors and returns the head
    /// (not yet published).
    @discardableResult
    public func addChain(_ buffers: [(addr: UInt64, len: UInt32, writable: Bool)]) -> UInt16 {
        indices.withLock { ix in
            let head = ix.nextDescriptor
            for (i, b) in buffers.enumerated() {
                let index = ix.nextDescriptor
                ix.nextDescriptor = (ix.nextDescriptor + 1) % size
                let last = i == buffers.count - 1
                setDescriptor(index, addr: b.addr, len: b.len,
                              flags: (b.writable ? Self.flagWrite : 0) | (last ? 0 : Self.flagNext),
                              next: last ? 0 : ix.nextDescriptor)
            }
            return head
        }
    }

    /// Puts `head` in the next available slot and moves `avail.idx`.
    public func publish(_ head: UInt16) {
        indices.withLock { ix in
            try! memory.writeInteger(head, at: GuestAddress(availRing + 4 + 2 * UInt64(ix.availIndex % size)))
            ix.availIndex &+= 1
            try! memory.writeInteger(ix.availIndex, at: GuestAddress(availRing + 2))
        }
    }

    /// Adds and publishes a chain; returns its head.
    @discardableResult
    public func post(_ buffers: [(addr: UInt64, len: UInt32, writable: Bool)]) -> UInt16 {
        let head = addChain(buffers)
        publish(head)
        return head
    }

    /// Writes a raw head into the next slot without checking it.
    public func publishRaw(head: UInt16) { publish(head) }

    /// Sets `avail.idx` to anything (hostile drivers).
    public func setAvailIndex(_ v: UInt16) {
        indices.withLock { ix in
            ix.availIndex = v
            try! memory.writeInteger(v, at: GuestAddress(availRing + 2))
        }
    }

    public var availFlags: UInt16 {
        get { try! memory.readInteger(UInt16.self, at: GuestAddress(availRing)) }
        set { try! memory.writeInteger(newValue, at: GuestAddress(availRing)) }
    }

    /// `used_event`, after the available ring entries (§2.7.6).
    public var usedEvent: UInt16 {
        get { try! memory.readInteger(UInt16.self, at: GuestAddress(availRing + 4 + 2 * UInt64(size))) }
        set { try! memory.writeInteger(newValue, at: GuestAddress(availRing + 4 + 2 * UInt64(size))) }
    }

    // MARK: used ring

    public var usedFlags: UInt16 { try! memory.readInteger(UInt16.self, at: GuestAddress(usedRing)) }
    public var usedIndex: UInt16 { try! memory.readInteger(UInt16.self, at: GuestAddress(usedRing + 2)) }
    /// `avail_event`, after the used ring entries (§2.7.8).
    public var availEvent: UInt16 { try! memory.readInteger(UInt16.self, at: GuestAddress(usedRing + 4 + 8 * UInt64(size))) }

    public func usedElement(_ slot: UInt16) -> (id: UInt32, len: UInt32) {
        let a = usedRing + 4 + 8 * UInt64(slot % size)
        return (try! memory.readInteger(UInt32.self, at: GuestAddress(a)),
                try! memory.readInteger(UInt32.self, at: GuestAddress(a + 4)))
    }

    /// Everything the device returned since the last call.
    public func takeUsed() -> [(id: UInt32, len: UInt32)] {
        let idx = usedIndex
        return indices.withLock { i in
            var out: [(id: UInt32, len: UInt32)] = []
            while i.lastUsedSeen != idx {
                out.append(usedElement(i.lastUsedSeen))
                i.lastUsedSeen &+= 1
            }
            return out
        }
    }

    /// The driver's side of §2.7.10 with VIRTIO_F_EVENT_IDX: after moving
    /// `avail.idx` from `old` to `new`, must it notify? (`vring_need_event`.)
    public func mustNotify(old: UInt16, new: UInt16) -> Bool {
        new &- availEvent &- 1 < new &- old
    }
}

/// Records what a device signalled.
public final class RecordingInterrupt: VirtioInterrupt {
    private struct Recorded {
        var usedQueues: [Int] = []
        var configChanges = 0
        var errors: [VirtqueueError] = []
    }
    private let recorded = Mutex(Recorded())

    public init() {}

    public var usedQueues: [Int] {
        get { recorded.withLock { $0.usedQueues } }
        set { recorded.withLock { $0.usedQueues = newValue } }
    }
    public var configChanges: Int { recorded.withLock { $0.configChanges } }
    public var errors: [VirtqueueError] { recorded.withLock { $0.errors } }

    public func signalUsedQueue(_ index: Int) { recorded.withLock { $0.usedQueues.append(index) } }
    public func signalConfigChange() { recorded.withLock { $0.configChanges += 1 } }
    public func deviceNeedsReset(_ error: VirtqueueError) { recorded.withLock { $0.errors.append(error) } }
}
