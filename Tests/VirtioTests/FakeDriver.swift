import Devices
import GuestMemory
import Synchronization
import Virtio
import XCTest

/// A virtio driver for tests, in the manner of Firecracker's `VirtQueue`
/// test utilities: it lays out a descriptor table, available ring and used
/// ring in fake guest memory, writes descriptors and chains the way a guest
/// would, and reads back what the device put in the used ring. All layout
/// numbers are the §2.7 ones, written independently of the code under test.
/// Its indices are behind a Mutex, so a test may hand it to another thread.
final class FakeDriver: Sendable {
    let memory: GuestMemoryAccess
    let size: UInt16
    let descriptorTable: UInt64
    let availRing: UInt64
    let usedRing: UInt64
    private struct Indices {
        var availIndex: UInt16 = 0
        var lastUsedSeen: UInt16 = 0
        var nextDescriptor: UInt16 = 0
    }
    private let indices = Mutex(Indices())
    var availIndex: UInt16 { indices.withLock { $0.availIndex } }
    /// Next descriptor `addChain` hands out (wraps at `size`).
    var nextDescriptor: UInt16 {
        get { indices.withLock { $0.nextDescriptor } }
        set { indices.withLock { $0.nextDescriptor = newValue } }
    }

    static let flagNext: UInt16 = 1, flagWrite: UInt16 = 2, flagIndirect: UInt16 = 4

    /// Rings at `base`: table (16*size), then the available ring (6+2*size),
    /// then the used ring (6+8*size) rounded up to 4.
    init(memory: GuestMemoryAccess, size: UInt16, base: UInt64 = 0x1000) {
        self.memory = memory
        self.size = size
        descriptorTable = base
        availRing = base + 16 * UInt64(size)
        usedRing = (availRing + 6 + 2 * UInt64(size) + 3) & ~3
    }

    /// End of the used ring: the first free byte after the queue.
    var end: UInt64 { usedRing + 6 + 8 * UInt64(size) }

    func makeQueue(features: UInt64 = 0, maxSize: UInt16 = 32768) throws -> SplitVirtqueue {
        try SplitVirtqueue(size: size, maxSize: maxSize, descriptorTable: GuestAddress(descriptorTable),
                           availRing: GuestAddress(availRing), usedRing: GuestAddress(usedRing),
                           features: features, memory: memory)
    }

    // MARK: descriptors

    static func descriptorBytes(addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) -> [UInt8] {
        var b: [UInt8] = []
        for k in 0..<8 { b.append(UInt8(truncatingIfNeeded: addr >> (8 * UInt64(k)))) }
        for k in 0..<4 { b.append(UInt8(truncatingIfNeeded: len >> (8 * UInt32(k)))) }
        b += [UInt8(truncatingIfNeeded: flags), UInt8(truncatingIfNeeded: flags >> 8)]
        b += [UInt8(truncatingIfNeeded: next), UInt8(truncatingIfNeeded: next >> 8)]
        return b
    }

    func setDescriptor(_ index: UInt16, addr: UInt64, len: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
        try! memory.writeBytes(Self.descriptorBytes(addr: addr, len: len, flags: flags, next: next),
                               at: GuestAddress(descriptorTable + 16 * UInt64(index)))
    }

    /// Writes an indirect table of `(addr, len, flags, next)` entries at `address`.
    func writeIndirectTable(at address: UInt64, _ entries: [(UInt64, UInt32, UInt16, UInt16)]) {
        var b: [UInt8] = []
        for e in entries { b += Self.descriptorBytes(addr: e.0, len: e.1, flags: e.2, next: e.3) }
        try! memory.writeBytes(b, at: GuestAddress(address))
    }

    /// Chains `buffers` through consecutive descriptors and returns the head
    /// (not yet published).
    @discardableResult
    func addChain(_ buffers: [(addr: UInt64, len: UInt32, writable: Bool)]) -> UInt16 {
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
    func publish(_ head: UInt16) {
        indices.withLock { ix in
            try! memory.writeInteger(head, at: GuestAddress(availRing + 4 + 2 * UInt64(ix.availIndex % size)))
            ix.availIndex &+= 1
            try! memory.writeInteger(ix.availIndex, at: GuestAddress(availRing + 2))
        }
    }

    /// Adds and publishes a chain; returns its head.
    @discardableResult
    func post(_ buffers: [(addr: UInt64, len: UInt32, writable: Bool)]) -> UInt16 {
        let head = addChain(buffers)
        publish(head)
        return head
    }

    /// Writes a raw head into the next slot without checking it.
    func publishRaw(head: UInt16) { publish(head) }

    /// Sets `avail.idx` to anything (hostile drivers).
    func setAvailIndex(_ v: UInt16) {
        indices.withLock { ix in
            ix.availIndex = v
            try! memory.writeInteger(v, at: GuestAddress(availRing + 2))
        }
    }

    var availFlags: UInt16 {
        get { try! memory.readInteger(UInt16.self, at: GuestAddress(availRing)) }
        set { try! memory.writeInteger(newValue, at: GuestAddress(availRing)) }
    }

    /// `used_event`, after the available ring entries (§2.7.6).
    var usedEvent: UInt16 {
        get { try! memory.readInteger(UInt16.self, at: GuestAddress(availRing + 4 + 2 * UInt64(size))) }
        set { try! memory.writeInteger(newValue, at: GuestAddress(availRing + 4 + 2 * UInt64(size))) }
    }

    // MARK: used ring

    var usedFlags: UInt16 { try! memory.readInteger(UInt16.self, at: GuestAddress(usedRing)) }
    var usedIndex: UInt16 { try! memory.readInteger(UInt16.self, at: GuestAddress(usedRing + 2)) }
    /// `avail_event`, after the used ring entries (§2.7.8).
    var availEvent: UInt16 { try! memory.readInteger(UInt16.self, at: GuestAddress(usedRing + 4 + 8 * UInt64(size))) }

    func usedElement(_ slot: UInt16) -> (id: UInt32, len: UInt32) {
        let a = usedRing + 4 + 8 * UInt64(slot % size)
        return (try! memory.readInteger(UInt32.self, at: GuestAddress(a)),
                try! memory.readInteger(UInt32.self, at: GuestAddress(a + 4)))
    }

    /// Everything the device returned since the last call.
    func takeUsed() -> [(id: UInt32, len: UInt32)] {
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
    func mustNotify(old: UInt16, new: UInt16) -> Bool {
        new &- availEvent &- 1 < new &- old
    }
}

/// Records what a device signalled.
final class RecordingInterrupt: VirtioInterrupt {
    private struct Recorded {
        var usedQueues: [Int] = []
        var configChanges = 0
        var errors: [VirtqueueError] = []
    }
    private let recorded = Mutex(Recorded())

    var usedQueues: [Int] {
        get { recorded.withLock { $0.usedQueues } }
        set { recorded.withLock { $0.usedQueues = newValue } }
    }
    var configChanges: Int { recorded.withLock { $0.configChanges } }
    var errors: [VirtqueueError] { recorded.withLock { $0.errors } }

    func signalUsedQueue(_ index: Int) { recorded.withLock { $0.usedQueues.append(index) } }
    func signalConfigChange() { recorded.withLock { $0.configChanges += 1 } }
    func deviceNeedsReset(_ error: VirtqueueError) { recorded.withLock { $0.errors.append(error) } }
}

/// Bytes 0, 1, 2, ... (mod 256), continuing across calls.
final class CountingEntropy: EntropySource {
    private let state = Mutex<(next: UInt8, requests: [Int])>((0, []))

    var requests: [Int] { state.withLock { $0.requests } }

    func randomBytes(count: Int) -> [UInt8] {
        state.withLock { s in
            s.requests.append(count)
            return (0..<count).map { _ in defer { s.next &+= 1 }; return s.next }
        }
    }
}

/// Guest memory that claims an 8 GiB region but stores only what is written
/// (4 KiB pages in a dictionary): for chains larger than 4 GiB.
final class SparseMemory: GuestMemoryAccess {
    let size: UInt64
    private let pages = Mutex<[UInt64: [UInt8]]>([:])
    init(size: UInt64) { self.size = size }

    func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        address.raw <= size && length <= size - address.raw
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws {
        guard contains(address, length: UInt64(buffer.count)) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(buffer.count))
        }
        pages.withLock { pages in
            for i in 0..<buffer.count {
                let a = address.raw + UInt64(i)
                buffer[i] = pages[a >> 12]?[Int(a & 0xFFF)] ?? 0
            }
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws {
        guard contains(address, length: UInt64(bytes.count)) else {
            throw GuestMemoryError.outOfRange(address: address.raw, length: UInt64(bytes.count))
        }
        pages.withLock { pages in
            for i in 0..<bytes.count {
                let a = address.raw + UInt64(i)
                pages[a >> 12, default: [UInt8](repeating: 0, count: 4096)][Int(a & 0xFFF)] = bytes[i]
            }
        }
    }
}

/// Asserts that `body` throws exactly `expected`.
func XCTAssertVirtqueueError<T>(_ expected: VirtqueueError, _ body: @autoclosure () throws -> T,
                                _ message: @autoclosure () -> String = "",
                                file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), message(), file: file, line: line) { error in
        XCTAssertEqual(error as? VirtqueueError, expected, message(), file: file, line: line)
    }
}
