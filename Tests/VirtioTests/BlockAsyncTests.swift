import Foundation
import GuestMemory
@testable import HostSys
import Synchronization
import TestFakes
import Virtio
import XCTest

/// Asynchronous I/O that finishes only when a test says so, on a
/// `MemoryDisk`, recording every submission and batch.
final class FakeAsyncIO: BlockAsyncIO {
    // @unchecked Sendable: the buffers are the test's guest RAM, valid for
    // the whole test; the op is only used under the fake's lock.
    struct Op: @unchecked Sendable {
        enum Kind: Equatable { case read, write, flush }
        let kind: Kind
        let offset: UInt64
        let buffers: [UnsafeMutableRawBufferPointer]
        var length: Int { buffers.reduce(0) { $0 + $1.count } }
    }
    private struct State {
        var queued: [(tag: UInt64, op: Op)] = []
        var committed: [(tag: UInt64, op: Op)] = []
        var done: [(tag: UInt64, failed: Bool)] = []
        var commits = 0
        var waits = 0
        var submissions: [Op.Kind] = []
    }
    struct Failure: Error {}
    private let state = Mutex(State())
    let disk: MemoryDisk
    let maxInFlight: Int
    let maxSegments: Int

    init(disk: MemoryDisk, maxInFlight: Int = 64, maxSegments: Int = 1024) {
        self.disk = disk
        self.maxInFlight = maxInFlight
        self.maxSegments = maxSegments
    }

    var commits: Int { state.withLock { $0.commits } }
    var waits: Int { state.withLock { $0.waits } }
    var submissions: [Op.Kind] { state.withLock { $0.submissions } }
    /// Tags handed to the host (committed) and not finished, oldest first.
    var inFlightTags: [UInt64] { state.withLock { $0.committed.map(\.tag) } }
    var queuedCount: Int { state.withLock { $0.queued.count } }

    private func submit(_ op: Op, _ tag: UInt64) -> Bool {
        state.withLock { s in
            guard s.queued.count + s.committed.count < maxInFlight, op.buffers.count <= maxSegments else { return false }
            s.queued.append((tag, op))
            s.submissions.append(op.kind)
            return true
        }
    }

    func submitRead(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer], tag: UInt64) -> Bool {
        submit(Op(kind: .read, offset: offset, buffers: buffers), tag)
    }

    func submitWrite(at offset: UInt64, from buffers: [UnsafeRawBufferPointer], tag: UInt64) -> Bool {
        submit(Op(kind: .write, offset: offset, buffers: buffers.map { UnsafeMutableRawBufferPointer(mutating: $0) }), tag)
    }

    func submitFlush(tag: UInt64) -> Bool { submit(Op(kind: .flush, offset: 0, buffers: []), tag) }

    func commit() {
        state.withLock { s in
            guard !s.queued.isEmpty else { return }
            s.commits += 1
            s.committed += s.queued
            s.queued = []
        }
    }

    /// Does the committed requests `tags` (all of them when nil), in that
    /// order, on the disk; `failing` ones end with an error instead.
    func finish(_ tags: [UInt64]? = nil, failing: Set<UInt64> = []) throws {
        try state.withLock { s in
            for tag in tags ?? s.committed.map(\.tag) {
                guard let i = s.committed.firstIndex(where: { $0.tag == tag }) else { continue }
                let op = s.committed.remove(at: i).op
                if failing.contains(tag) {
                    s.done.append((tag, true))
                    continue
                }
                var at = op.offset
                for b in op.buffers {
                    switch op.kind {
                    case .read: try disk.read(at: at, into: b)
                    case .write: try disk.write(at: at, from: UnsafeRawBufferPointer(b))
                    case .flush: break
                    }
                    at += UInt64(b.count)
                }
                if op.kind == .flush { try disk.flush() }
                s.done.append((tag, false))
            }
        }
    }

    func reap(_ body: (UInt64, (any Error)?) -> Void) {
        let done = state.withLock { s in
            defer { s.done = [] }
            return s.done
        }
        for d in done { body(d.tag, d.failed ? Failure() : nil) }
    }

    func waitForAll() {
        state.withLock { s in
            s.waits += 1
            s.queued = []
            s.committed = []
            s.done = []
        }
    }
}

/// virtio-blk with asynchronous I/O and several request queues: requests
/// handed to the backend, answered when it finishes them, in batches.
final class BlockAsyncTests: XCTestCase {
    let sOK: UInt8 = 0, sIOErr: UInt8 = 1
    let tIn: UInt32 = 0, tOut: UInt32 = 1, tFlush: UInt32 = 4, tGetID: UInt32 = 8

    struct Rig {
        let memory: GuestMemoryAccess
        let block: VirtioBlock
        let drivers: [FakeDriver]
        let irq: RecordingInterrupt
        let io: FakeAsyncIO
        let disk: MemoryDisk
    }

    /// `queues` request queues, rings of 64 at 0x1000 + 0x1000 * q, in
    /// guest RAM (which lends lasting buffers) unless `memory` is given.
    func rig(queues: Int = 1, maxInFlight: Int = 64, maxSegments: Int = 1024, eventIndex: Bool = false,
             memory: GuestMemoryAccess? = nil) throws -> Rig {
        let mem = try memory ?? GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        let disk = MemoryDisk(size: 1 << 20)
        let io = FakeAsyncIO(disk: disk, maxInFlight: maxInFlight, maxSegments: maxSegments)
        let block = VirtioBlock(backend: disk, queues: queues, async: io)
        let drivers = (0..<queues).map { FakeDriver(memory: mem, size: 64, base: 0x1000 * UInt64($0 + 1)) }
        let irq = RecordingInterrupt()
        let features = VirtioSpec.Feature.version1 | (eventIndex ? VirtioSpec.Feature.eventIndex : 0)
        try block.activate(memory: mem, features: features,
                           queues: drivers.map { try $0.makeQueue(features: features) }, interrupt: irq)
        return Rig(memory: mem, block: block, drivers: drivers, irq: irq, io: io, disk: disk)
    }

    func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

    /// Request `i`'s header at 0x80000 + 0x100 i, status byte at 0x90000 + i,
    /// data (4 KiB a sector run, `pieces` descriptors) at 0x100000 + 0x2000 i.
    func post(_ r: Rig, queue: Int = 0, _ i: Int, type: UInt32, sector: UInt64, length: UInt32 = 4096,
              pieces: Int = 1) throws -> UInt16 {
        let header = UInt64(0x80000 + 0x100 * i), status = UInt64(0x90000 + i), data = UInt64(0x100000 + 0x2000 * i)
        try r.memory.writeBytes(le(type) + le(UInt32(0)) + le(sector), at: GuestAddress(header))
        try r.memory.writeBytes([0xEE], at: GuestAddress(status))
        var chain: [(addr: UInt64, len: UInt32, writable: Bool)] = [(header, 16, false)]
        if length > 0 {
            let piece = length / UInt32(pieces)
            for p in 0..<pieces { chain.append((data + UInt64(p) * UInt64(piece), piece, type != tOut)) }
        }
        chain.append((status, 1, true))
        return r.drivers[queue].post(chain)
    }

    func status(_ r: Rig, _ i: Int) throws -> UInt8 { try r.memory.readBytes(at: GuestAddress(UInt64(0x90000 + i)), count: 1)[0] }
    func data(_ r: Rig, _ i: Int, count: Int = 4096) throws -> [UInt8] {
        try r.memory.readBytes(at: GuestAddress(UInt64(0x100000 + 0x2000 * i)), count: count)
    }

    // MARK: batching

    func testRequestsGoToTheBackendInOneBatchAndAreAnsweredWhenTheyFinish() throws {
        let r = try rig()
        let heads = try (0..<4).map { try post(r, $0, type: tIn, sector: UInt64($0) * 8) }
        r.block.queueNotified(0)
        XCTAssertEqual(r.io.commits, 1, "one batch for the four requests")
        XCTAssertEqual(r.io.inFlightTags.count, 4)
        XCTAssertEqual(r.block.requestsInFlight, 4)
        XCTAssertTrue(r.drivers[0].takeUsed().isEmpty, "nothing is answered before the backend finishes")
        XCTAssertEqual(r.irq.usedQueues, [])

        // The backend finishes them last first: the used ring follows it.
        let tags = r.io.inFlightTags
        try r.io.finish(Array(tags.reversed()))
        r.block.completionsReady()
        let used = r.drivers[0].takeUsed()
        XCTAssertEqual(used.map(\.id), heads.reversed().map(UInt32.init))
        XCTAssertEqual(used.map(\.len), [4097, 4097, 4097, 4097], "4 KiB of data and the status byte each")
        XCTAssertEqual(r.irq.usedQueues, [0], "one interrupt for the batch")
        for i in 0..<4 {
            XCTAssertEqual(try status(r, i), sOK)
            XCTAssertEqual(try data(r, i), Array(r.disk.bytes[(i * 4096)..<((i + 1) * 4096)]))
        }
        let s = r.block.statistics
        XCTAssertEqual(s.reads, 4)
        XCTAssertEqual(s.bytesRead, 4 * 4096)
        XCTAssertEqual(s.peakInFlight, 4)
        XCTAssertEqual(r.block.requestsInFlight, 0)
    }

    func testWritesLandWhenTheBackendFinishesAndAFlushFollowsThem() throws {
        let r = try rig()
        try r.memory.writeBytes([UInt8](repeating: 0x5A, count: 4096), at: GuestAddress(0x100000))
        _ = try post(r, 0, type: tOut, sector: 16)
        _ = try post(r, 1, type: tFlush, sector: 0, length: 0)
        r.block.queueNotified(0)
        XCTAssertEqual(r.io.submissions, [.write, .flush], "the flush goes to the backend after the write")
        XCTAssertNotEqual(Array(r.disk.bytes[8192..<12288]), [UInt8](repeating: 0x5A, count: 4096))
        try r.io.finish()
        r.block.completionsReady()
        XCTAssertEqual(Array(r.disk.bytes[8192..<12288]), [UInt8](repeating: 0x5A, count: 4096))
        XCTAssertEqual(r.disk.flushes, 1)
        XCTAssertEqual(r.drivers[0].takeUsed().map(\.len), [1, 1], "a write and a flush write only the status")
        XCTAssertEqual([try status(r, 0), try status(r, 1)], [sOK, sOK])
        XCTAssertEqual(r.block.statistics.writes, 1)
        XCTAssertEqual(r.block.statistics.flushes, 1)
    }

    func testEventIndexHoldsTheInterruptUntilTheDriverAsksForIt() throws {
        let r = try rig(eventIndex: true)
        // The driver wants an interrupt only once used.idx passes 2 (§2.7.10).
        r.drivers[0].usedEvent = 2
        for i in 0..<3 { _ = try post(r, i, type: tIn, sector: 0) }
        r.block.queueNotified(0)
        let tags = r.io.inFlightTags
        try r.io.finish([tags[0]])
        r.block.completionsReady()
        XCTAssertEqual(r.irq.usedQueues, [], "used.idx 1: not yet")
        try r.io.finish([tags[1], tags[2]])
        r.block.completionsReady()
        XCTAssertEqual(r.irq.usedQueues, [0], "used.idx 3 passed used_event 2")
        XCTAssertEqual(r.drivers[0].takeUsed().count, 3)
    }

    func testAFullBackendStallsTheQueueUntilRequestsFinish() throws {
        let r = try rig(maxInFlight: 2)
        for i in 0..<5 { _ = try post(r, i, type: tIn, sector: UInt64(i) * 8) }
        r.block.queueNotified(0)
        XCTAssertEqual(r.io.inFlightTags.count, 2, "no more than the backend holds")
        // Nothing else notifies: the finished requests make room and the
        // queue goes on by itself.
        try r.io.finish()
        r.block.completionsReady()
        XCTAssertEqual(r.io.inFlightTags.count, 2)
        try r.io.finish()
        r.block.completionsReady()
        try r.io.finish()
        r.block.completionsReady()
        XCTAssertEqual(r.drivers[0].takeUsed().count, 5)
        XCTAssertEqual((0..<5).map { try? status(r, $0) }, Array(repeating: sOK, count: 5))
        XCTAssertEqual(r.block.statistics.peakInFlight, 2)
    }

    func testAFailedRequestIsAnIOErrorWithNoDataAndTheOthersGoOn() throws {
        let r = try rig()
        for i in 0..<3 { _ = try post(r, i, type: tIn, sector: 0) }
        r.block.queueNotified(0)
        let tags = r.io.inFlightTags
        try r.io.finish(failing: [tags[1]])
        r.block.completionsReady()
        XCTAssertEqual(r.drivers[0].takeUsed().map(\.len), [4097, 1, 4097], "the failed read wrote only its status")
        XCTAssertEqual([try status(r, 0), try status(r, 1), try status(r, 2)], [sOK, sIOErr, sOK])
        XCTAssertEqual(r.block.statistics.backendErrors, 1)
        XCTAssertEqual(r.irq.errors.count, 0)
        // The device takes more.
        _ = try post(r, 3, type: tIn, sector: 0)
        r.block.queueNotified(0)
        try r.io.finish()
        r.block.completionsReady()
        XCTAssertEqual(try status(r, 3), sOK)
    }

    func testRequestsWithNothingToTransferAreAnsweredAtOnce() throws {
        let r = try rig()
        _ = try post(r, 0, type: tGetID, sector: 0, length: 20)
        _ = try post(r, 1, type: tIn, sector: 2048, length: 4096) // past the 1 MiB capacity
        _ = try post(r, 2, type: 99, sector: 0, length: 0)
        r.block.queueNotified(0)
        XCTAssertEqual(r.io.submissions, [], "nothing for the backend")
        XCTAssertEqual(r.drivers[0].takeUsed().count, 3)
        XCTAssertEqual(r.irq.usedQueues, [0])
        XCTAssertEqual([try status(r, 0), try status(r, 1), try status(r, 2)], [sOK, sIOErr, 2])
    }

    func testResetWaitsForRequestsInFlightAndAnswersNone() throws {
        let r = try rig()
        for i in 0..<2 { _ = try post(r, i, type: tIn, sector: 0) }
        r.block.queueNotified(0)
        XCTAssertEqual(r.block.requestsInFlight, 2)
        r.block.reset()
        XCTAssertEqual(r.io.waits, 1, "the reset waited for the backend")
        XCTAssertEqual(r.block.requestsInFlight, 0)
        r.block.completionsReady()
        XCTAssertTrue(r.drivers[0].takeUsed().isEmpty, "nothing is answered after the reset")
        XCTAssertEqual([try status(r, 0), try status(r, 1)], [0xEE, 0xEE])
    }

    /// The transport's reset: the device stops at once and says it is done
    /// when the last request in flight ends, without waiting on the
    /// caller's thread; the results are dropped.
    func testResetThenIsDoneWhenTheLastRequestInFlightEnds() throws {
        let r = try rig()
        for i in 0..<2 { _ = try post(r, i, type: tIn, sector: 0) }
        r.block.queueNotified(0)
        let done = LockedList()
        r.block.reset { done.append(1) }
        XCTAssertEqual(r.io.waits, 0, "nothing waited on the resetting thread")
        XCTAssertEqual(done.items.count, 0)
        XCTAssertEqual(r.block.requestsInFlight, 2)
        _ = try post(r, 2, type: tIn, sector: 0)
        r.block.queueNotified(0)
        XCTAssertEqual(r.io.inFlightTags.count, 2, "a stopped device takes no request")

        try r.io.finish([r.io.inFlightTags[0]])
        r.block.completionsReady()
        XCTAssertEqual(done.items.count, 0, "one request still in flight")
        try r.io.finish()
        r.block.completionsReady()
        XCTAssertEqual(done.items.count, 1)
        r.block.completionsReady()
        XCTAssertEqual(done.items.count, 1, "done once")
        XCTAssertTrue(r.drivers[0].takeUsed().isEmpty, "nothing is answered after the reset")
        XCTAssertEqual([try status(r, 0), try status(r, 1), try status(r, 2)], [0xEE, 0xEE, 0xEE])
        XCTAssertEqual(r.irq.usedQueues, [])

        // Nothing in flight: done at once.
        r.block.reset { done.append(1) }
        XCTAssertEqual(done.items.count, 2)
    }

    /// A synchronous reset while a deferred one waits finishes both.
    func testASynchronousResetFinishesAWaitingOne() throws {
        let r = try rig()
        _ = try post(r, 0, type: tIn, sector: 0)
        r.block.queueNotified(0)
        let done = LockedList()
        r.block.reset { done.append(1) }
        r.block.reset()
        XCTAssertEqual(r.io.waits, 1)
        XCTAssertEqual(done.items.count, 1)
        XCTAssertEqual(r.block.requestsInFlight, 0)
    }

    // MARK: when the request stays synchronous

    func testMemoryThatCannotLendItsBuffersIsServedSynchronously() throws {
        // ArrayGuestMemory only copies: as behind a vIOMMU, no lasting buffers.
        let r = try rig(memory: ArrayGuestMemory(size: 2 << 20))
        _ = try post(r, 0, type: tIn, sector: 8)
        r.block.queueNotified(0)
        XCTAssertEqual(r.io.submissions, [], "served without the backend's asynchronous path")
        XCTAssertEqual(r.drivers[0].takeUsed().map(\.len), [4097])
        XCTAssertEqual(try data(r, 0), Array(r.disk.bytes[4096..<8192]))
    }

    func testMoreBuffersThanTheBackendTakesAreServedSynchronously() throws {
        let r = try rig(maxSegments: 2)
        _ = try post(r, 0, type: tIn, sector: 0, length: 4096, pieces: 4)
        _ = try post(r, 1, type: tIn, sector: 0, length: 4096, pieces: 2)
        r.block.queueNotified(0)
        XCTAssertEqual(r.io.submissions, [.read], "only the 2-buffer read went to the backend")
        XCTAssertEqual(r.drivers[0].takeUsed().map(\.len), [4097], "the 4-buffer read is answered at once")
        XCTAssertEqual(try data(r, 0), Array(r.disk.bytes[0..<4096]))
    }

    // MARK: several queues

    func testEachQueueIsServedAndSignalledOnItsOwn() throws {
        let r = try rig(queues: 4)
        XCTAssertEqual(r.block.queueMaxSizes, Array(repeating: VirtioBlock.defaultQueueSize, count: 4))
        XCTAssertNotEqual(r.block.deviceFeatures & (1 << 12), 0, "VIRTIO_BLK_F_MQ (§5.2.3)")
        var cfg = [UInt8](repeating: 0, count: 2)
        cfg.withUnsafeMutableBytes { r.block.readConfig(offset: 34, data: $0) }
        XCTAssertEqual(cfg, [4, 0], "le16 num_queues at offset 34 (§5.2.4)")

        _ = try post(r, queue: 2, 0, type: tIn, sector: 0)
        _ = try post(r, queue: 3, 1, type: tIn, sector: 8)
        _ = try post(r, queue: 3, 2, type: tIn, sector: 16)
        r.block.queueNotified(2)
        r.block.queueNotified(3)
        try r.io.finish()
        r.block.completionsReady()
        XCTAssertEqual(r.irq.usedQueues.sorted(), [2, 3], "one interrupt per queue that got answers")
        XCTAssertEqual(r.drivers[2].takeUsed().count, 1)
        XCTAssertEqual(r.drivers[3].takeUsed().count, 2)
        XCTAssertEqual(r.block.statistics.requestsPerQueue, [0, 0, 1, 2])
        XCTAssertEqual(try data(r, 2), Array(r.disk.bytes[8192..<12288]))
    }

    func testOneQueueOffersNoMultiqueueAndTheQueueCountIsChecked() throws {
        let disk = MemoryDisk(size: 1 << 20)
        XCTAssertEqual(VirtioBlock(backend: disk).deviceFeatures & (1 << 12), 0)
        let block = VirtioBlock(backend: disk, queues: 2)
        let mem = ArrayGuestMemory(size: 1 << 20)
        XCTAssertThrowsError(try block.activate(memory: mem, features: VirtioSpec.Feature.version1,
                                                queues: [FakeDriver(memory: mem, size: 16).makeQueue()],
                                                interrupt: RecordingInterrupt()))
        XCTAssertEqual(VirtioBlock(backend: disk, queues: 1000).queueCount, VirtioBlock.maxQueues)
    }

    /// Random requests on random queues, finished in random order, some
    /// failing: every request is answered exactly once, with the status the
    /// backend's result says, and nothing is left in flight.
    func testRandomRequestsFinishedInAnyOrderAreEachAnsweredOnce() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<8 {
            let r = try rig(queues: 3, maxInFlight: Int.random(in: 1...8, using: &rng))
            var posted: [(queue: Int, head: UInt16, i: Int)] = []
            for i in 0..<12 {
                let q = Int.random(in: 0..<3, using: &rng)
                let type = [tIn, tOut, tFlush].randomElement(using: &rng)!
                let head = try post(r, queue: q, i, type: type, sector: UInt64.random(in: 0..<200, using: &rng) * 8,
                                    length: type == tFlush ? 0 : 4096)
                posted.append((q, head, i))
            }
            for q in 0..<3 { r.block.queueNotified(q) }
            var guardCount = 0
            while r.block.requestsInFlight > 0 || !r.io.inFlightTags.isEmpty {
                guardCount += 1
                XCTAssertLessThan(guardCount, 100, "requests never finish")
                if guardCount >= 100 { break }
                let tags = r.io.inFlightTags.shuffled(using: &rng)
                let fail = Set(tags.filter { _ in Int.random(in: 0..<5, using: &rng) == 0 })
                try r.io.finish(tags, failing: fail)
                r.block.completionsReady()
            }
            var answered = 0
            for q in 0..<3 {
                let used = r.drivers[q].takeUsed()
                let mine = posted.filter { $0.queue == q }
                XCTAssertEqual(Set(used.map(\.id)), Set(mine.map { UInt32($0.head) }), "queue \(q)")
                XCTAssertEqual(used.count, mine.count)
                answered += used.count
            }
            XCTAssertEqual(answered, 12)
            for p in posted { XCTAssertTrue([sOK, sIOErr].contains(try status(r, p.i)), "request \(p.i) has a status") }
            let s = r.block.statistics
            XCTAssertEqual(Int(s.reads + s.writes + s.flushes + s.backendErrors), 12)
            XCTAssertLessThanOrEqual(s.peakInFlight, r.io.maxInFlight)
        }
    }
}

/// `BlockFileRing`: io_uring on a real image file, behind the device.
final class BlockFileRingTests: XCTestCase {
    private func tempImage(size: Int) throws -> String {
        let path = NSTemporaryDirectory() + "swiftvmm-ring-\(UUID().uuidString).img"
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 12) }
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// A ring, or a skip that names why the kernel refused one.
    private func ring(_ file: BlockFile, entries: UInt32 = 8) throws -> BlockFileRing {
        do { return try BlockFileRing(file: file, entries: entries) } catch let e as SysError where e.errno == ENOSYS || e.errno == EPERM {
            throw XCTSkip("this kernel refuses io_uring: \(e)")
        }
    }

    /// Reaps until `count` results came back (the completion event says when).
    private func results(_ ring: BlockFileRing, count: Int) -> [UInt64: Bool] {
        var out: [UInt64: Bool] = [:]
        let deadline = Date().addingTimeInterval(10)
        while out.count < count, Date() < deadline {
            ring.reap { tag, error in out[tag] = error == nil }
            if out.count < count { usleep(1000) }
        }
        return out
    }

    func testReadsWritesAndAFlushThroughTheRing() throws {
        let path = try tempImage(size: 1 << 20)
        let file = try BlockFile(path: path)
        let r = try ring(file)
        XCTAssertGreaterThanOrEqual(r.maxInFlight, 8)
        let a = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { a.deallocate() }
        a.initializeMemory(as: UInt8.self, repeating: 0x77)
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 3 * 512, alignment: 16)
        defer { b.deallocate() }
        // A write of two pieces, a read of three odd-sized ones, a flush.
        XCTAssertTrue(r.submitWrite(at: 4096, from: [UnsafeRawBufferPointer(rebasing: a[0..<4096]),
                                                      UnsafeRawBufferPointer(rebasing: a[4096..<8192])], tag: 1))
        XCTAssertTrue(r.submitRead(at: 65536, into: [UnsafeMutableRawBufferPointer(rebasing: b[0..<512]),
                                                     UnsafeMutableRawBufferPointer(rebasing: b[512..<1536])], tag: 2))
        XCTAssertTrue(r.submitFlush(tag: 3))
        XCTAssertEqual(r.inFlight, 3)
        r.commit()
        XCTAssertEqual(results(r, count: 3), [1: true, 2: true, 3: true])
        XCTAssertEqual(r.inFlight, 0)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(Array(onDisk[4096..<12288]), [UInt8](repeating: 0x77, count: 8192))
        XCTAssertEqual(Array(b), Array(onDisk[65536..<(65536 + 1536)]))
    }

    func testTheRingHoldsAtMostMaxInFlightAndRefusesTooManyBuffers() throws {
        let path = try tempImage(size: 1 << 20)
        let file = try BlockFile(path: path)
        let r = try ring(file, entries: 4)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 16)
        defer { buf.deallocate() }
        for t in 0..<r.maxInFlight { XCTAssertTrue(r.submitRead(at: UInt64(t) * 512, into: [buf], tag: UInt64(t))) }
        XCTAssertFalse(r.submitRead(at: 0, into: [buf], tag: 99), "full")
        r.commit()
        XCTAssertEqual(results(r, count: r.maxInFlight).count, r.maxInFlight)
        let many = [UnsafeMutableRawBufferPointer](repeating: UnsafeMutableRawBufferPointer(rebasing: buf[0..<1]),
                                                   count: BlockFileRing.maxSegments + 1)
        XCTAssertFalse(r.submitRead(at: 0, into: many, tag: 100), "past IOV_MAX")
        XCTAssertFalse(r.submitRead(at: 0, into: [], tag: 101), "nothing to read")
    }

    func testAReadPastTheEndFailsAndAReadOnlyImageTakesNoWrites() throws {
        let path = try tempImage(size: 8192)
        let file = try BlockFile(path: path, readOnly: true)
        let r = try ring(file)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { buf.deallocate() }
        XCTAssertFalse(r.submitWrite(at: 0, from: [UnsafeRawBufferPointer(buf)], tag: 1))
        // Half of it is past the end: the short read is finished
        // synchronously, which reaches the end of the file: an error.
        XCTAssertTrue(r.submitRead(at: 6144, into: [buf], tag: 2))
        r.commit()
        XCTAssertEqual(results(r, count: 1), [2: false])
        XCTAssertEqual(r.retriedSynchronously, 1)
    }

    func testWaitForAllLeavesNothingInFlight() throws {
        let path = try tempImage(size: 1 << 20)
        let r = try ring(try BlockFile(path: path))
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { buf.deallocate() }
        for t in 0..<4 { XCTAssertTrue(r.submitRead(at: UInt64(t) * 4096, into: [buf], tag: UInt64(t))) }
        r.waitForAll()
        XCTAssertEqual(r.inFlight, 0)
        var reaped = 0
        r.reap { _, _ in reaped += 1 }
        XCTAssertEqual(reaped, 0, "the results were dropped")
    }
}
