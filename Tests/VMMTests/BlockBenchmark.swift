import Foundation
import GuestMemory
import HostSys
import TestFakes
import Virtio
import XCTest
@testable import VMM

/// What virtio-blk costs the VMM per request: a benchmark, not a test. It
/// prints figures and ratios measured in the same run and asserts nothing
/// about speed. Run by scripts/bench-devices (SWIFTVMM_BENCH=blk); skipped
/// otherwise.
///
/// A driver keeps 32 random 4 KiB requests (header, data, status: three
/// descriptors, as Linux's virtio-blk posts them) in flight on one queue of
/// 256 in guest RAM (a memfd, as in a run). Only the device's calls are
/// timed (the notification's `queueNotified` and the completion's
/// `completionsReady`), not the driver's ring writes nor any wait.
/// - In memory: the asynchronous backend copies to and from a buffer when
///   the batch is committed. The peer: the same copies with no device. The
///   difference is what the device itself costs, free of the kernel's noise.
/// - io_uring: `BlockFileRing` on an image in /dev/shm, as in a run. The
///   peer: the same reads and writes on the same ring with no device.
final class BlockBenchmark: XCTestCase {
    static let ramBytes: UInt64 = 64 << 20
    static let queueSize: UInt16 = 256
    static let headersAt: UInt64 = 0x10_0000 // 32 bytes per request: header, then status
    static let dataAt: UInt64 = 0x20_0000 // 4 KiB per request slot
    static let imageBytes: UInt64 = 64 << 20

    static func image() throws -> String {
        let path = "/dev/shm/swiftvmm-blkbench-\(getpid()).img"
        let fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0o600)
        guard fd >= 0 else { throw XCTSkip("no /dev/shm here") }
        // Written, not sparse: reads copy real pages.
        let chunk = [UInt8](repeating: 0x5A, count: 1 << 20)
        for _ in 0..<(imageBytes >> 20) { _ = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
        close(fd)
        return path
    }

    /// Asynchronous I/O on a buffer: a committed batch is done at once.
    // @unchecked Sendable: used by one thread, the benchmark's.
    final class MemoryIO: BlockAsyncIO, BlockBackend, @unchecked Sendable {
        let disk = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(BlockBenchmark.imageBytes), alignment: 4096)
        var queued: [(tag: UInt64, offset: Int, buffers: [UnsafeMutableRawBufferPointer], write: Bool)] = []
        var done: [UInt64] = []
        let maxInFlight = 128
        let maxSegments = 1024
        var capacity: UInt64 { BlockBenchmark.imageBytes }
        var isReadOnly: Bool { false }

        init() {
            disk.initializeMemory(as: UInt8.self, repeating: 0x5A)
            queued.reserveCapacity(maxInFlight)
            done.reserveCapacity(maxInFlight)
        }
        deinit { disk.deallocate() }

        func submitRead(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer], tag: UInt64) -> Bool {
            queued.append((tag, Int(offset), buffers, false))
            return true
        }
        func submitWrite(at offset: UInt64, from buffers: [UnsafeRawBufferPointer], tag: UInt64) -> Bool {
            queued.append((tag, Int(offset), buffers.map { UnsafeMutableRawBufferPointer(mutating: $0) }, true))
            return true
        }
        func submitFlush(tag: UInt64) -> Bool { done.append(tag); return true }
        func commit() {
            for q in queued {
                copy(at: q.offset, q.buffers, write: q.write)
                done.append(q.tag)
            }
            queued.removeAll(keepingCapacity: true)
        }
        func copy(at offset: Int, _ buffers: [UnsafeMutableRawBufferPointer], write: Bool) {
            var at = offset
            for b in buffers {
                if write { (disk.baseAddress! + at).copyMemory(from: b.baseAddress!, byteCount: b.count) }
                else { b.baseAddress!.copyMemory(from: disk.baseAddress! + at, byteCount: b.count) }
                at += b.count
            }
        }
        func reap(_ body: (UInt64, (any Error)?) -> Void) {
            for t in done { body(t, nil) }
            done.removeAll(keepingCapacity: true)
        }
        func waitForAll() { queued = []; done = [] }
        func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws { copy(at: Int(offset), [buffer], write: false) }
        func write(at offset: UInt64, from bytes: UnsafeRawBufferPointer) throws {
            copy(at: Int(offset), [UnsafeMutableRawBufferPointer(mutating: bytes)], write: true)
        }
        func flush() throws {}
        func zero(at offset: UInt64, length: UInt64, deallocate: Bool) throws {}
    }

    /// The device behind a driver, on `io` (with `ring`'s completion event to wait for, if any).
    final class Rig {
        let ram: GuestRAM
        let driver: FakeDriver
        let device: VirtioBlock
        let ring: BlockFileRing?
        var rng = SplitMix64(seed: 11)
        var nanos: UInt64 = 0
        var served = 0

        init(backend: BlockBackend, io: BlockAsyncIO, ring: BlockFileRing?) throws {
            ram = try GuestRAM(map: GuestMemoryMap(ramBytes: BlockBenchmark.ramBytes))
            driver = FakeDriver(memory: ram, size: BlockBenchmark.queueSize, base: 0x1000)
            self.ring = ring
            device = VirtioBlock(backend: backend, queueSize: BlockBenchmark.queueSize, async: io)
            try device.activate(memory: ram, features: VirtioSpec.Feature.version1 | VirtioSpec.Feature.eventIndex,
                                queues: [driver.makeQueue(features: VirtioSpec.Feature.eventIndex)],
                                interrupt: RecordingInterrupt())
        }

        /// Posts a 4 KiB read or write of a random block, in request slot `slot`.
        func post(slot: Int, write: Bool) {
            let header = BlockBenchmark.headersAt + UInt64(slot) * 32
            let sector = (rng.next() % (BlockBenchmark.imageBytes >> 12)) << 3
            try! ram.writeBytes([write ? 1 : 0, 0, 0, 0, 0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: sector >> (8 * $0)) },
                                at: GuestAddress(header))
            // Slot k owns descriptors 3k to 3k + 2 (the driver's free list keeps a chain's descriptors).
            let head = UInt16(3 * slot)
            driver.setDescriptor(head, addr: header, len: 16, flags: FakeDriver.flagNext, next: head + 1)
            driver.setDescriptor(head + 1, addr: BlockBenchmark.dataAt + UInt64(slot) << 12, len: 4096,
                                 flags: (write ? 0 : FakeDriver.flagWrite) | FakeDriver.flagNext, next: head + 2)
            driver.setDescriptor(head + 2, addr: header + 16, len: 1, flags: FakeDriver.flagWrite)
            driver.publish(head)
        }

        func timed(_ body: () -> Void) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            nanos += DispatchTime.now().uptimeNanoseconds - t0
        }

        /// `count` requests, `depth` in flight, `write`s or reads; checks every status.
        func run(count: Int, depth: Int, write: Bool) {
            var free = Array(0..<depth)
            var posted = 0
            var inFlight = 0
            while served < count {
                var any = false
                while inFlight < depth, posted < count, let slot = free.popLast() {
                    post(slot: slot, write: write)
                    posted += 1
                    inFlight += 1
                    any = true
                }
                if any { timed { device.queueNotified(VirtioBlock.requestQueue) } }
                if let ring {
                    var p = pollfd(fd: ring.completionEvent.fd.raw, events: Int16(POLLIN), revents: 0)
                    _ = poll(&p, 1, 1000)
                }
                timed { device.completionsReady() }
                for u in driver.takeUsed() {
                    let slot = Int(u.id) / 3
                    let status = try! ram.readBytes(at: GuestAddress(BlockBenchmark.headersAt + UInt64(slot) * 32 + 16),
                                                    count: 1)[0]
                    precondition(status == 0 && u.len == (write ? 1 : 4097), "request in slot \(slot) failed: status \(status)")
                    free.append(slot)
                    served += 1
                    inFlight -= 1
                }
            }
        }
    }

    /// The peer: the same I/O on the ring, with no device.
    func raw(path: String, count: Int, depth: Int, write: Bool) throws -> Double {
        let file = try BlockFile(path: path)
        let ring = try BlockFileRing(file: file, entries: 128)
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: depth << 12, alignment: 4096)
        defer { buffers.deallocate() }
        var rng = SplitMix64(seed: 11)
        var nanos: UInt64 = 0
        var free = Array(0..<depth)
        var posted = 0, done = 0
        func timed(_ body: () -> Void) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            nanos += DispatchTime.now().uptimeNanoseconds - t0
        }
        while done < count {
            timed {
                while posted < count, let slot = free.popLast() {
                    let offset = (rng.next() % (Self.imageBytes >> 12)) << 12
                    let b = UnsafeMutableRawBufferPointer(rebasing: buffers[(slot << 12)..<((slot + 1) << 12)])
                    let ok = write ? ring.submitWrite(at: offset, from: [UnsafeRawBufferPointer(b)], tag: UInt64(slot))
                        : ring.submitRead(at: offset, into: [b], tag: UInt64(slot))
                    precondition(ok)
                    posted += 1
                }
                ring.commit()
            }
            var p = pollfd(fd: ring.completionEvent.fd.raw, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 1000)
            timed {
                ring.reap { tag, error in
                    precondition(error == nil)
                    free.append(Int(tag))
                    done += 1
                }
            }
        }
        return Double(nanos) / Double(count)
    }

    /// The in-memory peer: the same copies, no device.
    func copiesAlone(count: Int, depth: Int, write: Bool) -> Double {
        let io = MemoryIO()
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: depth << 12, alignment: 4096)
        defer { buffers.deallocate() }
        var rng = SplitMix64(seed: 11)
        let t0 = DispatchTime.now().uptimeNanoseconds
        for i in 0..<count {
            let slot = i % depth
            let offset = Int((rng.next() % (Self.imageBytes >> 12)) << 12)
            io.copy(at: offset, [UnsafeMutableRawBufferPointer(rebasing: buffers[(slot << 12)..<((slot + 1) << 12)])], write: write)
        }
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / Double(count)
    }

    func device(_ make: () throws -> Rig, count: Int, write: Bool) rethrows -> Double {
        let rig = try make()
        rig.run(count: count, depth: 32, write: write)
        return Double(rig.nanos) / Double(rig.served)
    }

    func testBenchmark() throws {
        guard ProcessInfo.processInfo.environment["SWIFTVMM_BENCH"] == "blk" else {
            throw XCTSkip("a benchmark: scripts/bench-devices runs it")
        }
        let count = Int(ProcessInfo.processInfo.environment["BENCH_REQUESTS"] ?? "") ?? 200_000
        let path = try Self.image()
        defer { unlink(path) }
        print("virtio-blk request serving, natively (\(count) random 4 KiB requests, 32 in flight; ns per request, best of 5)")
        print("| backend | requests | backend alone ns/req | device + backend ns/req | device's own ns/req | ratio |")
        print("| --- | --- | --- | --- | --- | --- |")
        for write in [false, true] {
            var alone = Double.infinity, both = Double.infinity
            for _ in 0..<5 {
                alone = min(alone, copiesAlone(count: count, depth: 32, write: write))
                both = min(both, try device({ let io = MemoryIO(); return try Rig(backend: io, io: io, ring: nil) }, count: count, write: write))
            }
            print(String(format: "| memory | %@ | %.0f | %.0f | %.0f | %.2fx |", write ? "write" : "read", alone, both,
                         both - alone, both / alone))
        }
        for write in [false, true] {
            var alone = Double.infinity, both = Double.infinity
            for _ in 0..<5 {
                alone = min(alone, try raw(path: path, count: count, depth: 32, write: write))
                both = min(both, try device({
                    let file = try BlockFile(path: path)
                    let ring = try BlockFileRing(file: file, entries: 128)
                    return try Rig(backend: file, io: ring, ring: ring)
                }, count: count, write: write))
            }
            print(String(format: "| io_uring, /dev/shm | %@ | %.0f | %.0f | %.0f | %.2fx |", write ? "write" : "read", alone, both,
                         both - alone, both / alone))
        }
        print("(the io_uring rows carry the kernel's own variation, tens of percent from run to run on a busy or "
              + "paravirtual host, which can exceed the device's share; the memory rows are the device's cost)")
    }
}
