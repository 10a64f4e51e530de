import Glibc
import Foundation
import GuestMemory
import HostSys
import PCI
import Synchronization
import Virtio
import XCTest
@testable import VMM

// MARK: - Fakes

/// Just enough of a virtio-pci driver to bring a transport to DRIVER_OK and
/// post chains, with the spec's numbers written out (virtio 1.2 §3.1.1
/// init sequence, §4.1.4.3 common config offsets, §2.7 split ring layout).
/// Queue q's ring is at 0x1000 * (q + 1): table, avail ring at +0x200, used
/// ring at +0x400; buffers go above 0x10000. "vCPU" threads share one.
final class MiniDriver: Sendable {
    let transport: VirtioPCIDevice
    /// Each access holds the memory's lock, so the device's I/O thread and
    /// the test touch it at once, each access whole, as in real RAM.
    let memory = ArrayGuestMemory(size: 0x4_0000)
    let queueSize: UInt16 = 16
    /// Per queue: the driver's avail.idx and its next free descriptor.
    private let rings: Mutex<(availIndex: [UInt16], nextDescriptor: [UInt16])>
    private let queueCount: Int

    init(_ device: VirtioDevice) throws {
        transport = try VirtioPCIDevice(device: device, memory: memory)
        queueCount = device.queueMaxSizes.count
        let zeros = [UInt16](repeating: 0, count: queueCount)
        rings = Mutex((zeros, zeros))
    }

    static func ring(_ q: Int) -> (desc: UInt64, avail: UInt64, used: UInt64) {
        let base = 0x1000 * UInt64(q + 1)
        return (base, base + 0x200, base + 0x400)
    }

    /// A BAR 0 write, as a vCPU's MMIO exit makes it.
    func write(_ offset: UInt64, _ value: UInt64, _ width: Int) {
        let b = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        b.withUnsafeBytes { transport.writeBar(0, offset: offset, data: $0) }
    }

    /// Reset, ACKNOWLEDGE | DRIVER, VERSION_1 (feature bit 32) only,
    /// FEATURES_OK, every queue at size 16, DRIVER_OK.
    func start() {
        for status: UInt64 in [0, 1, 3] { write(0x14, status, 1) } // device_status
        write(0x08, 0, 4); write(0x0C, 0, 4)                        // driver_feature_select, driver_feature
        write(0x08, 1, 4); write(0x0C, 1, 4)
        write(0x14, 11, 1)
        for q in 0..<queueCount {
            let r = Self.ring(q)
            write(0x16, UInt64(q), 2)                                // queue_select
            write(0x18, UInt64(queueSize), 2)                        // queue_size
            for (offset, address) in [(UInt64(0x20), r.desc), (0x28, r.avail), (0x30, r.used)] {
                write(offset, address & 0xFFFF_FFFF, 4)
                write(offset + 4, address >> 32, 4)
            }
            write(0x1C, 1, 2)                                        // queue_enable
        }
        write(0x14, 15, 1)
    }

    /// Chains `buffers` (address, length, device-writable) and publishes the head.
    func post(queue q: Int, _ buffers: [(UInt64, UInt32, Bool)]) throws {
        let r = Self.ring(q)
        try rings.withLock { rings in
            let head = rings.nextDescriptor[q]
            for (i, (address, length, writable)) in buffers.enumerated() {
                let d = rings.nextDescriptor[q]
                rings.nextDescriptor[q] = (d + 1) % queueSize
                let last = i == buffers.count - 1
                let at = r.desc + 16 * UInt64(d)
                try memory.writeInteger(address, at: GuestAddress(at))
                try memory.writeInteger(length, at: GuestAddress(at + 8))
                try memory.writeInteger(UInt16((writable ? 2 : 0) | (last ? 0 : 1)), at: GuestAddress(at + 12)) // WRITE, NEXT
                try memory.writeInteger(last ? 0 : rings.nextDescriptor[q], at: GuestAddress(at + 14))
            }
            try memory.writeInteger(head, at: GuestAddress(r.avail + 4 + 2 * UInt64(rings.availIndex[q] % queueSize)))
            rings.availIndex[q] &+= 1
            try memory.writeInteger(rings.availIndex[q], at: GuestAddress(r.avail + 2))
        }
    }

    func usedIndex(queue q: Int) -> UInt16 {
        (try? memory.readInteger(UInt16.self, at: GuestAddress(Self.ring(q).used + 2))) ?? 0
    }

    /// The notify write for queue `q` (§4.1.4.4: notify region at 0x3000,
    /// multiplier 4), arriving as an MMIO exit.
    func notifyByMMIO(queue q: Int) { write(0x3000 + 4 * UInt64(q), UInt64(q), 2) }
}

/// A disk image whose writes wait until the test opens the gate: a host
/// file system that stopped answering.
final class GateBackend: BlockBackend {
    let capacity: UInt64 = 1 << 20
    let isReadOnly = false
    /// Signalled each time a write starts.
    let entered = DispatchSemaphore(value: 0)
    /// Signalled once, by the first `open`; each write waits for it and
    /// passes it on.
    private let gate = DispatchSemaphore(value: 0)
    private let state = Mutex<(opened: Bool, names: [String])>((false, []))

    var threads: [String] { state.withLock { $0.names } }

    func open() {
        let first = state.withLock { s in
            defer { s.opened = true }
            return !s.opened
        }
        if first { gate.signal() }
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {}
    func write(at offset: UInt64, from bytes: UnsafeRawBufferPointer) throws {
        state.withLock { $0.names.append(Thread.current.name ?? "?") }
        entered.signal()
        gate.wait()
        gate.signal()
    }
    func flush() throws {}
    func zero(at offset: UInt64, length: UInt64, deallocate: Bool) throws {}
}

/// Zero bytes, recording the thread that asked.
final class NamedEntropy: EntropySource {
    private let names = Mutex<[String]>([])
    var threads: [String] { names.withLock { $0 } }
    func randomBytes(count: Int) -> [UInt8] {
        names.withLock { $0.append(Thread.current.name ?? "?") }
        return [UInt8](repeating: 0, count: count)
    }
}

/// A device with two queues whose notification handler takes no lock and
/// counts the times it found itself already running, or running on
/// another thread than `thread`.
final class ReentrancyProbe: VirtioDevice {
    let thread: String
    let inside = Atomic<Int>(0)
    let overlaps = Atomic<Int>(0)
    let offThread = Atomic<Int>(0)
    let calls = Atomic<Int>(0)
    init(thread: String) { self.thread = thread }

    var deviceType: UInt16 { 0x1F }
    var deviceFeatures: UInt64 { 0 }
    var queueMaxSizes: [UInt16] { [16, 16] }
    var configSize: Int { 0 }
    func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {}
    func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {}
    func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue], interrupt: VirtioInterrupt) throws {}
    func reset() {}
    func queueNotified(_ index: Int) {
        if inside.add(1, ordering: .sequentiallyConsistent).newValue != 1 { overlaps.add(1, ordering: .relaxed) }
        if Thread.current.name != thread { offThread.add(1, ordering: .relaxed) }
        // Stay a while, so that a second caller would find us here.
        for _ in 0..<2000 where inside.load(ordering: .relaxed) > 0 {}
        calls.add(1, ordering: .relaxed)
        inside.subtract(1, ordering: .sequentiallyConsistent)
    }
}

/// True once `condition` holds, false if it did not within `seconds`.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let end = Date(timeIntervalSinceNow: seconds)
    while Date() < end {
        if condition() { return true }
        Thread.sleep(forTimeInterval: 0.001)
    }
    return condition()
}

/// The names of this process's threads (Linux: /proc/self/task/*/comm).
func threadNames() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8) }
        .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
}

// MARK: - Tests

/// Each virtio device's notifications are served on its own I/O thread
/// (`DeviceIOLoop`, wired by `VirtioNotifier`), with fakes for the guest
/// (`MiniDriver`), the VM (`RecordingVM`: the tests signal the queue
/// eventfds as KVM would) and the host (`GateBackend`, `NamedEntropy`).
final class DeviceIOThreadTests: XCTestCase {
    let logger = RecordingLog().logger

    /// While a disk's write is stuck in the host, the entropy device is still
    /// served, through its ioeventfd and through an MMIO exit, on its own
    /// thread; and a vCPU's notify write to the busy disk does not wait.
    func testABlockedDiskDoesNotHoldUpAnotherDevice() throws {
        let n = VirtioNotifier(vm: RecordingVM(), logger: logger)
        let backend = GateBackend()
        let entropy = NamedEntropy()
        let blk = try MiniDriver(VirtioBlock(backend: backend))
        let rng = try MiniDriver(VirtioRNG(source: entropy))
        try n.register(blk.transport, at: PCIAddress(device: 1), bar0: 0xE000_0000, thread: "io-blk0")
        try n.register(rng.transport, at: PCIAddress(device: 2), bar0: 0xE100_0000, thread: "io-rng")
        blk.start()
        rng.start()
        XCTAssertTrue(blk.transport.isActive && rng.transport.isActive)
        n.start()
        defer {
            backend.open()
            XCTAssertEqual(n.stop(), [])
        }

        // An OUT request (§5.2.6): header (type 1, sector 0), 512 bytes, status.
        try blk.memory.writeInteger(UInt32(1), at: GuestAddress(0x10000))
        try blk.post(queue: 0, [(0x10000, 16, false), (0x10200, 512, false), (0x10400, 1, true)])
        n.event(device: PCIAddress(device: 1), queue: 0)?.signal()
        XCTAssertEqual(backend.entered.wait(timeout: .now() + 5), .success, "the disk's write reached the backend")

        let vcpu = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            blk.notifyByMMIO(queue: 0)
            vcpu.signal()
        }
        XCTAssertEqual(vcpu.wait(timeout: .now() + 2), .success, "a notify write to the busy disk waited for its I/O")

        try rng.post(queue: 0, [(0x10000, 8, true)])
        n.event(device: PCIAddress(device: 2), queue: 0)?.signal()
        XCTAssertTrue(eventually { rng.usedIndex(queue: 0) == 1 }, "rng not served through its ioeventfd while the disk is busy")
        try rng.post(queue: 0, [(0x10100, 8, true)])
        rng.notifyByMMIO(queue: 0)
        XCTAssertTrue(eventually { rng.usedIndex(queue: 0) == 2 }, "rng not served through an MMIO exit while the disk is busy")
        XCTAssertEqual(blk.usedIndex(queue: 0), 0, "the disk request is still in the backend")
        XCTAssertEqual(entropy.threads, ["io-rng", "io-rng"])
        XCTAssertEqual(backend.threads, ["io-blk0"])

        backend.open()
        XCTAssertTrue(eventually { blk.usedIndex(queue: 0) == 1 }, "the disk finishes once the host answers")
    }

    /// Idle I/O threads end at once when stopped: `stop` joins them well
    /// inside its bound and no thread of theirs is left.
    func testStopJoinsIdleThreadsPromptly() throws {
        let n = VirtioNotifier(vm: RecordingVM(), logger: logger)
        let names = ["iot-idle0", "iot-idle1", "iot-idle2"]
        for (i, name) in names.enumerated() {
            try n.register(try MiniDriver(VirtioRNG()).transport, at: PCIAddress(device: UInt8(i + 1)),
                           bar0: 0xE000_0000 + UInt64(i) * 0x10_0000, thread: name)
        }
        n.start()
        XCTAssertTrue(eventually { Set(names).isSubset(of: threadNames()) }, "threads \(names) not running: \(threadNames())")
        Thread.sleep(forTimeInterval: 0.1) // all of them blocked in epoll_wait

        let start = Date()
        XCTAssertEqual(n.stop(timeout: 5), [], "idle threads did not stop")
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
        XCTAssertTrue(eventually(2) { Set(threadNames()).isDisjoint(with: names) }, "left running: \(threadNames())")
        XCTAssertEqual(n.stop(timeout: 0), [], "stopping again is harmless")
    }

    /// A thread stuck in its device's host I/O cannot be interrupted: `stop`
    /// gives up on it after its bound, names it, and still joins the others.
    func testStopIsBoundedWhenADeviceIsStuck() throws {
        let n = VirtioNotifier(vm: RecordingVM(), logger: logger)
        let backend = GateBackend()
        let blk = try MiniDriver(VirtioBlock(backend: backend))
        try n.register(blk.transport, at: PCIAddress(device: 1), bar0: 0xE000_0000, thread: "iot-stuck")
        try n.register(try MiniDriver(VirtioRNG()).transport, at: PCIAddress(device: 2), bar0: 0xE100_0000, thread: "iot-free")
        blk.start()
        n.start()
        try blk.memory.writeInteger(UInt32(1), at: GuestAddress(0x10000))
        try blk.post(queue: 0, [(0x10000, 16, false), (0x10200, 512, false), (0x10400, 1, true)])
        defer { backend.open() }
        n.event(device: PCIAddress(device: 1), queue: 0)?.signal()
        XCTAssertEqual(backend.entered.wait(timeout: .now() + 5), .success)

        let start = Date()
        XCTAssertEqual(n.stop(timeout: 0.3), ["iot-stuck"])
        let waited = Date().timeIntervalSince(start)
        XCTAssertGreaterThanOrEqual(waited, 0.25)
        XCTAssertLessThan(waited, 2)
        XCTAssertTrue(eventually(2) { !threadNames().contains("iot-free") })

        // Once the host answers, the stuck thread finishes its request and ends.
        backend.open()
        XCTAssertEqual(n.stop(timeout: 5), [])
        XCTAssertEqual(blk.usedIndex(queue: 0), 1)
    }

    /// "vCPUs" making notify writes (MMIO exits) and "KVM" signalling the
    /// queue eventfds, all at once: the device's handler, which takes no
    /// lock, never runs twice at the same time, and only on its I/O thread.
    func testMMIOAndIOEventFDNotificationsNeverOverlap() throws {
        let n = VirtioNotifier(vm: RecordingVM(), logger: logger)
        let probe = ReentrancyProbe(thread: "iot-probe")
        let d = try MiniDriver(probe)
        let at = PCIAddress(device: 3)
        try n.register(d.transport, at: at, bar0: 0xE000_0000, thread: "iot-probe")
        d.start()
        n.start()
        defer { XCTAssertEqual(n.stop(), []) }

        let events = try [0, 1].map { q in try XCTUnwrap(n.event(device: at, queue: q)) }
        let rounds = 3000
        let group = DispatchGroup()
        for v in 0..<3 {
            DispatchQueue.global().async(group: group) {
                for i in 0..<rounds { d.notifyByMMIO(queue: (i + v) % 2) }
            }
        }
        for k in 0..<2 {
            DispatchQueue.global().async(group: group) {
                for i in 0..<rounds { events[(i + k) % 2].signal() }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        // Let the loop catch up: the count stops moving.
        var last = -1
        XCTAssertTrue(eventually(10) {
            let now = probe.calls.load(ordering: .relaxed)
            defer { last = now }
            return now == last && n.deliveredCount > 0
        })
        XCTAssertGreaterThan(probe.calls.load(ordering: .relaxed), 2)
        XCTAssertGreaterThan(n.deliveredCount, 0, "no notification came through an eventfd")
        XCTAssertEqual(probe.overlaps.load(ordering: .relaxed), 0, "the handler ran on two threads at once")
        XCTAssertEqual(probe.offThread.load(ordering: .relaxed), 0, "the handler ran off its I/O thread")
    }

    /// The log line's count ("N queue notifications arrived through
    /// ioeventfds") counts eventfd wake-ups only, summed over devices; MMIO
    /// notifications are delivered but not counted.
    func testDeliveredCountIsIOEventFDsOnlySummedOverDevices() throws {
        let n = VirtioNotifier(vm: RecordingVM(), logger: logger)
        let probes = [ReentrancyProbe(thread: "iot-count0"), ReentrancyProbe(thread: "iot-count1")]
        let drivers = try probes.map { try MiniDriver($0) }
        for (i, d) in drivers.enumerated() {
            try n.register(d.transport, at: PCIAddress(device: UInt8(i + 1)), bar0: 0xE000_0000 + UInt64(i) * 0x10_0000,
                           thread: probes[i].thread)
            d.start()
        }
        n.start()
        defer { XCTAssertEqual(n.stop(), []) }

        n.event(device: PCIAddress(device: 1), queue: 0)?.signal()
        XCTAssertTrue(eventually { probes[0].calls.load(ordering: .relaxed) == 1 })
        n.event(device: PCIAddress(device: 2), queue: 1)?.signal()
        XCTAssertTrue(eventually { probes[1].calls.load(ordering: .relaxed) == 1 })
        drivers[1].notifyByMMIO(queue: 0)
        XCTAssertTrue(eventually { probes[1].calls.load(ordering: .relaxed) == 2 })
        XCTAssertEqual(n.deliveredCount, 2)
        XCTAssertEqual(probes.map { $0.offThread.load(ordering: .relaxed) }, [0, 0])
    }

    /// A readable descriptor (a NIC's TAP) is served on the loop's thread
    /// until its handler returns false.
    func testReadableSourceUntilItsHandlerGivesUp() throws {
        let delivered = Atomic<Int>(0)
        let loop = try DeviceIOLoop(name: "iot-tap") { _ in delivered.add(1, ordering: .relaxed) }
        let tap = try EventFD(nonBlocking: true)
        let queue = try EventFD(nonBlocking: true)
        let calls = Atomic<Int>(0)
        let offThread = Atomic<Int>(0)
        try loop.addQueue(0, event: queue)
        try loop.addReadable(tap.fd) {
            tap.drain()
            if Thread.current.name != "iot-tap" { offThread.add(1, ordering: .relaxed) }
            return calls.add(1, ordering: .relaxed).newValue < 2
        }
        loop.start()
        defer {
            loop.stop()
            XCTAssertTrue(loop.join(until: .now() + 5))
        }
        tap.signal()
        XCTAssertTrue(eventually { calls.load(ordering: .relaxed) == 1 })
        tap.signal()
        XCTAssertTrue(eventually { calls.load(ordering: .relaxed) == 2 })
        tap.signal() // no longer watched
        queue.signal()
        XCTAssertTrue(eventually { delivered.load(ordering: .relaxed) == 1 })
        XCTAssertEqual(calls.load(ordering: .relaxed), 2)
        XCTAssertEqual(offThread.load(ordering: .relaxed), 0)
        XCTAssertEqual(loop.ioeventfdNotifications, 1)
    }

    /// The periodic check a vhost-net NIC runs on its I/O thread: a timerfd
    /// wakes the loop every second; `hasFailed` sees a descriptor that hung
    /// up (a deleted TAP) and not one with input waiting.
    func testPeriodicCheckSeesAFailedDescriptor() throws {
        let loop = try DeviceIOLoop(name: "iot-check") { _ in }
        var ends: [Int32] = [0, 0]
        XCTAssertEqual(Glibc.pipe(&ends), 0)
        let readEnd = FileDescriptor(adopting: ends[0])
        let checks = Atomic<Int>(0), failedSeen = Atomic<Int>(0)
        let timer = try TimerFD(everySeconds: 1)
        try loop.addReadable(timer.fd) {
            timer.drain()
            checks.add(1, ordering: .relaxed)
            guard readEnd.hasFailed else { return true }
            failedSeen.add(1, ordering: .relaxed)
            return false
        }
        loop.start()
        defer {
            loop.stop()
            XCTAssertTrue(loop.join(until: .now() + 5))
        }
        var byte: UInt8 = 1
        XCTAssertEqual(Glibc.write(ends[1], &byte, 1), 1)
        XCTAssertTrue(eventually(5) { checks.load(ordering: .relaxed) >= 1 })
        XCTAssertEqual(failedSeen.load(ordering: .relaxed), 0, "input waiting is not a failure")
        Glibc.close(ends[1])
        XCTAssertTrue(eventually(5) { failedSeen.load(ordering: .relaxed) == 1 })
        let after = checks.load(ordering: .relaxed)
        Thread.sleep(forTimeInterval: 1.5)
        XCTAssertEqual(checks.load(ordering: .relaxed), after, "the check stops once it has seen the failure")
    }
}
