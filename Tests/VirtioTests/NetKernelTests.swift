import GuestMemory
import Synchronization
import TestFakes
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

    // MARK: several queue pairs

    /// Queues for 2 pairs and the control queue, 64 entries each, 0x2000 apart.
    func mqQueues(_ memory: GuestMemoryAccess) throws -> (queues: [SplitVirtqueue], control: FakeDriver) {
        let drivers = (0..<5).map { FakeDriver(memory: memory, size: 64, base: 0x1000 + 0x2000 * UInt64($0)) }
        return (try drivers.map { try $0.makeQueue(features: VirtioSpec.Feature.version1) }, drivers[4])
    }

    /// Posts a control command (§5.1.6.5): header + data readable, ack writable.
    func command(_ d: FakeDriver, _ memory: GuestMemoryAccess, _ bytes: [UInt8], ackAt: UInt64 = 0x20000) throws {
        try memory.writeBytes(bytes, at: GuestAddress(0x18000))
        try memory.writeBytes([0xEE], at: GuestAddress(ackAt))
        d.post([(0x18000, UInt32(bytes.count), false), (ackAt, 1, true)])
    }

    func testQueuePairsOfferMultiqueueWithAControlQueue() throws {
        let path = RecordingDataPath()
        let net = VirtioNetKernel(dataPath: path, mac: mac, queuePairs: 2)
        XCTAssertEqual(net.deviceFeatures & (1 << 22 | 1 << 17), 1 << 22 | 1 << 17, "VIRTIO_NET_F_MQ and _CTRL_VQ")
        XCTAssertEqual(net.queueMaxSizes.count, 5, "rx1, tx1, rx2, tx2, control (§5.1.2)")
        XCTAssertEqual(net.controlQueue, 4)
        XCTAssertEqual(net.configSize, 10)
        var b = [UInt8](repeating: 0xAA, count: 10)
        b.withUnsafeMutableBytes { net.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(Array(b[8..<10]), [2, 0], "le16 max_virtqueue_pairs (§5.1.4)")
        XCTAssertEqual(VirtioNetKernel(dataPath: path, mac: mac).deviceFeatures & (1 << 22 | 1 << 17), 0,
                       "one pair: no MQ, no control queue")

        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        let (queues, control) = try mqQueues(ram)
        let irq = RecordingInterrupt()
        try net.activate(memory: ram, features: VirtioSpec.Feature.version1, queues: queues, interrupt: irq)
        XCTAssertEqual(path.starts.last?.rings.map(\.index), [0, 1, 2, 3], "the data rings go to the data path")
        net.queueNotified(3)
        XCTAssertEqual(path.kicks, [3])

        // VQ_PAIRS_SET 2 (class 4, command 0, le16 2): OK.
        try command(control, ram, [4, 0, 2, 0])
        net.queueNotified(4)
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(0x20000), count: 1), [0], "VIRTIO_NET_OK")
        XCTAssertEqual(net.pairsInUse, 2)
        XCTAssertEqual(irq.usedQueues, [4])
        XCTAssertEqual(control.takeUsed().map(\.len), [1])
        // 3 pairs, 0 pairs, an unknown class, a command without its data: ERR each.
        for bytes: [UInt8] in [[4, 0, 3, 0], [4, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [4, 0]] {
            try command(control, ram, bytes)
            net.queueNotified(4)
            XCTAssertEqual(try ram.readBytes(at: GuestAddress(0x20000), count: 1), [1], "VIRTIO_NET_ERR for \(bytes)")
        }
        XCTAssertEqual(net.pairsInUse, 2)
        XCTAssertEqual(path.kicks, [3], "control commands are the device's, not the data path's")
        XCTAssertEqual(irq.errors.count, 0)
    }

    func testAControlCommandWithoutHeaderOrAckBreaksOnlyTheControlQueue() throws {
        let path = RecordingDataPath()
        let net = VirtioNetKernel(dataPath: path, mac: mac, queuePairs: 2)
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        let (queues, control) = try mqQueues(ram)
        let irq = RecordingInterrupt()
        try net.activate(memory: ram, features: VirtioSpec.Feature.version1, queues: queues, interrupt: irq)
        control.post([(0x18000, 1, false), (0x20000, 1, true)]) // a 1-byte header
        net.queueNotified(4)
        XCTAssertEqual(irq.errors.count, 1, "DEVICE_NEEDS_RESET")
        net.usedBuffers(queue: 2)
        XCTAssertEqual(irq.usedQueues, [2], "the data path goes on until the driver resets")
    }
}
