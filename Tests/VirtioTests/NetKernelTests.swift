import GuestMemory
import Synchronization
import Virtio
import XCTest

/// A kernel data path that records what the device asks of it.
final class RecordingDataPath: NetKernelDataPath {
    private struct State {
        var starts: [(features: UInt64, rings: [NetKernelRing])] = []
        var stops = 0
        var kicks: [Int] = []
        var failStart = false
    }
    private let state = Mutex(State())
    struct Refused: Error {}
    let offeredFeatures: UInt64 = 1 << 15 | 1 << 0

    var starts: [(features: UInt64, rings: [NetKernelRing])] { state.withLock { $0.starts } }
    var stops: Int { state.withLock { $0.stops } }
    var kicks: [Int] { state.withLock { $0.kicks } }
    var failStart: Bool {
        get { state.withLock { $0.failStart } }
        set { state.withLock { $0.failStart = newValue } }
    }

    func start(features: UInt64, rings: [NetKernelRing]) throws {
        try state.withLock { s in
            if s.failStart { throw Refused() }
            s.starts.append((features, rings))
        }
    }

    func stop() { state.withLock { $0.stops += 1 } }
    func kick(queue index: Int) { state.withLock { $0.kicks.append(index) } }
}

/// virtio-net with its queues served by a kernel data path (vhost-net in the
/// VMM): the device hands over the rings' host addresses, passes kicks on
/// and turns the data path's calls into interrupts.
final class NetKernelTests: XCTestCase {
    let mac = MACAddress([0x52, 0x54, 0, 0xAA, 0xBB, 0x01])!

    func queues(_ memory: GuestMemoryAccess, features: UInt64 = VirtioSpec.Feature.version1) throws -> [SplitVirtqueue] {
        try [FakeDriver(memory: memory, size: 64, base: 0x1000).makeQueue(features: features),
             FakeDriver(memory: memory, size: 64, base: 0x3000).makeQueue(features: features)]
    }

    func testFeaturesAndConfigurationAreTheNICsPlusTheDataPaths() {
        let path = RecordingDataPath()
        let net = VirtioNetKernel(dataPath: path, mac: mac)
        XCTAssertEqual(net.deviceType, 1)
        XCTAssertEqual(net.deviceFeatures, 1 << 5 | 1 << 16 | path.offeredFeatures, "MAC, STATUS and the data path's")
        XCTAssertEqual(net.queueMaxSizes.count, 2)
        var b = [UInt8](repeating: 0xAA, count: 8)
        b.withUnsafeMutableBytes { net.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(b, [0x52, 0x54, 0, 0xAA, 0xBB, 0x01, 1, 0], "MAC, then le16 status LINK_UP (§5.1.4)")
    }

    func testActivationHandsTheRingsHostAddressesToTheDataPath() throws {
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        let base = ram.slots[0].hostAddress
        let path = RecordingDataPath()
        let net = VirtioNetKernel(dataPath: path, mac: mac)
        let features = VirtioSpec.Feature.version1 | VirtioSpec.Feature.eventIndex | 1 << 15
        try net.activate(memory: ram, features: features, queues: try queues(ram, features: features),
                         interrupt: RecordingInterrupt())
        XCTAssertEqual(path.starts.count, 1)
        XCTAssertEqual(path.starts[0].features, features)
        // FakeDriver: table at base, available ring 16 * 64 later, used ring
        // after it rounded up to 4 (§2.7 alignment).
        let avail0 = UInt64(0x1000 + 16 * 64), used0 = (avail0 + 6 + 2 * 64 + 3) & ~3
        XCTAssertEqual(path.starts[0].rings, [
            NetKernelRing(index: 0, size: 64, nextAvailable: 0, descriptors: base + 0x1000, available: base + avail0,
                          used: base + used0),
            NetKernelRing(index: 1, size: 64, nextAvailable: 0, descriptors: base + 0x3000,
                          available: base + avail0 + 0x2000, used: base + used0 + 0x2000),
        ])
        XCTAssertEqual(net.starts, 1)
    }

    func testKicksGoToTheDataPathAndCallsBecomeInterruptsOnlyWhileStarted() throws {
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        let path = RecordingDataPath()
        let net = VirtioNetKernel(dataPath: path, mac: mac)
        let irq = RecordingInterrupt()
        net.queueNotified(1)
        XCTAssertEqual(path.kicks, [], "not started: nothing to kick")
        try net.activate(memory: ram, features: VirtioSpec.Feature.version1, queues: try queues(ram), interrupt: irq)
        net.queueNotified(1)
        net.queueNotified(0)
        net.queueNotified(7)
        XCTAssertEqual(path.kicks, [1, 0], "queue 7 does not exist")
        net.usedBuffers(queue: 0)
        net.usedBuffers(queue: 1)
        net.usedBuffers(queue: 2)
        XCTAssertEqual(irq.usedQueues, [0, 1])

        net.reset()
        XCTAssertEqual(path.stops, 1)
        net.usedBuffers(queue: 0)
        net.queueNotified(0)
        XCTAssertEqual(irq.usedQueues, [0, 1], "no interrupt after the reset")
        XCTAssertEqual(path.kicks, [1, 0])

        // The driver sets it up again: a second start.
        try net.activate(memory: ram, features: VirtioSpec.Feature.version1, queues: try queues(ram), interrupt: irq)
        XCTAssertEqual(path.starts.count, 2)
    }

    func testRingsGuestMemoryCannotLendOrADisabledQueueAreRefused() throws {
        let path = RecordingDataPath()
        let net = VirtioNetKernel(dataPath: path, mac: mac)
        // ArrayGuestMemory only copies, as guest memory behind a vIOMMU would.
        let copying = ArrayGuestMemory(size: 2 << 20)
        XCTAssertThrowsError(try net.activate(memory: copying, features: VirtioSpec.Feature.version1,
                                              queues: try queues(copying), interrupt: RecordingInterrupt()))
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        XCTAssertThrowsError(try net.activate(memory: ram, features: VirtioSpec.Feature.version1,
                                              queues: [try queues(ram)[0], .disabled()], interrupt: RecordingInterrupt()))
        XCTAssertEqual(path.starts.count, 0)
        path.failStart = true
        XCTAssertThrowsError(try net.activate(memory: ram, features: VirtioSpec.Feature.version1,
                                              queues: try queues(ram), interrupt: RecordingInterrupt()))
        let irq = RecordingInterrupt()
        net.usedBuffers(queue: 0)
        XCTAssertEqual(irq.usedQueues, [])
        XCTAssertEqual(net.starts, 0)
    }
}
