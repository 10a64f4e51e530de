import Devices
import Foundation
import GuestMemory
import PCI
import Synchronization
import TestFakes
@testable import Virtio
import XCTest

// MARK: - Fakes for the PCI side

final class RecordingMSIRouter: MSIRouter {
    private let recorded = Mutex<(configured: [Int: MSIMessage], signals: [Int])>(([:], []))
    var configured: [Int: MSIMessage] { recorded.withLock { $0.configured } }
    var signals: [Int] { recorded.withLock { $0.signals } }
    func configure(device: PCIAddress, vector: Int, message: MSIMessage?) {
        recorded.withLock { $0.configured[vector] = message }
    }
    func signal(device: PCIAddress, vector: Int) { recorded.withLock { $0.signals.append(vector) } }
}

/// A device that records what the transport asks of it.
final class RecordingDevice: VirtioDevice {
    let deviceType: UInt16 = 0x1F
    let deviceFeatures: UInt64 = 0b11
    let queueMaxSizes: [UInt16] = [16, 8]
    let configSize = 8
    private struct Recorded {
        var config: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        var activations: [(features: UInt64, queues: [SplitVirtqueue])] = []
        var interrupt: VirtioInterrupt?
        var resets = 0
        var notified: [Int] = []
        var failActivation = false
        /// Resets wait for `finishHeldReset()`, as a device with I/O in flight does.
        var holdResets = false
        var heldReset: (@Sendable () -> Void)?
    }
    private let recorded = Mutex(Recorded())

    var config: [UInt8] { recorded.withLock { $0.config } }
    var activations: [(features: UInt64, queues: [SplitVirtqueue])] { recorded.withLock { $0.activations } }
    var interrupt: VirtioInterrupt? { recorded.withLock { $0.interrupt } }
    var resets: Int { recorded.withLock { $0.resets } }
    var notified: [Int] { recorded.withLock { $0.notified } }
    var failActivation: Bool {
        get { recorded.withLock { $0.failActivation } }
        set { recorded.withLock { $0.failActivation = newValue } }
    }

    func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) { copyConfig(config, offset: offset, into: data) }
    func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {
        recorded.withLock { r in
            for i in 0..<data.count where offset + i < r.config.count { r.config[offset + i] = data[i] }
        }
    }
    func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue], interrupt: VirtioInterrupt) throws {
        try recorded.withLock { r in
            if r.failActivation { throw VirtqueueError.device("refused") }
            r.activations.append((features, queues))
            r.interrupt = interrupt
        }
    }
    var holdResets: Bool {
        get { recorded.withLock { $0.holdResets } }
        set { recorded.withLock { $0.holdResets = newValue } }
    }
    func reset() { recorded.withLock { $0.resets += 1; $0.interrupt = nil } }
    func reset(then done: @escaping @Sendable () -> Void) {
        let now = recorded.withLock { r -> Bool in
            r.resets += 1
            r.interrupt = nil
            if r.holdResets { r.heldReset = done }
            return !r.holdResets
        }
        if now { done() }
    }
    /// The held reset is done (its I/O ended).
    func finishHeldReset() {
        let done = recorded.withLock { r in
            defer { r.heldReset = nil }
            return r.heldReset
        }
        done?()
    }
    func queueNotified(_ index: Int) { recorded.withLock { $0.notified.append(index) } }
}

/// The guest side of virtio-pci: config space and BAR 0 accesses at the
/// widths Linux's virtio_pci_modern uses. Every access goes straight to the
/// transport, so test threads may share one, as vCPUs share a device.
final class PCIDriver: Sendable {
    let dev: VirtioPCIDevice
    let router = RecordingMSIRouter()
    let line = RecordingLine()

    typealias C = VirtioPCICommonConfig.Offset
    static let notifyBase: UInt64 = 0x3000

    init(_ device: VirtioDevice, memory: GuestMemoryAccess) throws {
        let box = ErrorBox()
        dev = try VirtioPCIDevice(device: device, memory: memory) { box.append($0) }
        self.box = box
        dev.attached(PCIAttachContext(address: PCIAddress(device: 3), msiRouter: router, intx: line, intxGSI: 19))
    }

    /// Guest errors may be reported from any thread.
    final class ErrorBox: Sendable {
        private let list = Mutex<[VirtqueueError]>([])
        var errors: [VirtqueueError] { list.withLock { $0 } }
        func append(_ e: VirtqueueError) { list.withLock { $0.append(e) } }
    }
    private let box: ErrorBox
    var guestErrors: [VirtqueueError] { box.errors }

    func cfgRead(_ offset: Int, _ width: Int) -> UInt64 {
        var b = [UInt8](repeating: 0, count: width)
        b.withUnsafeMutableBytes { dev.readConfig(offset: offset, data: $0) }
        return b.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    func cfgWrite(_ offset: Int, _ value: UInt64, _ width: Int) {
        let b = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        b.withUnsafeBytes { dev.writeConfig(offset: offset, data: $0) }
    }

    func barRead(_ offset: UInt64, _ width: Int) -> UInt64 {
        var b = [UInt8](repeating: 0, count: width)
        b.withUnsafeMutableBytes { dev.readBar(0, offset: offset, data: $0) }
        return b.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    func barWrite(_ offset: UInt64, _ value: UInt64, _ width: Int) {
        let b = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        b.withUnsafeBytes { dev.writeBar(0, offset: offset, data: $0) }
    }

    var status: UInt64 {
        get { barRead(UInt64(C.deviceStatus), 1) }
        set { barWrite(UInt64(C.deviceStatus), newValue, 1) }
    }

    var deviceFeatures: UInt64 {
        barWrite(UInt64(C.deviceFeatureSelect), 0, 4)
        let lo = barRead(UInt64(C.deviceFeature), 4)
        barWrite(UInt64(C.deviceFeatureSelect), 1, 4)
        return barRead(UInt64(C.deviceFeature), 4) << 32 | lo
    }

    func writeDriverFeatures(_ f: UInt64) {
        barWrite(UInt64(C.driverFeatureSelect), 0, 4)
        barWrite(UInt64(C.driverFeature), f & 0xFFFF_FFFF, 4)
        barWrite(UInt64(C.driverFeatureSelect), 1, 4)
        barWrite(UInt64(C.driverFeature), f >> 32, 4)
    }

    /// Sets up queue `index` like `vp_modern_setup_queue`: select, size,
    /// vector, addresses in 32-bit halves (`vp_iowrite64_twopart`), enable.
    func setupQueue(_ index: Int, _ fake: FakeDriver, vector: UInt16 = 0xFFFF) {
        barWrite(UInt64(C.queueSelect), UInt64(index), 2)
        barWrite(UInt64(C.queueSize), UInt64(fake.size), 2)
        barWrite(UInt64(C.queueMSIXVector), UInt64(vector), 2)
        for (off, a) in [(C.queueDesc, fake.descriptorTable), (C.queueDriver, fake.availRing), (C.queueDevice, fake.usedRing)] {
            barWrite(UInt64(off), a & 0xFFFF_FFFF, 4)
            barWrite(UInt64(off + 4), a >> 32, 4)
        }
        barWrite(UInt64(C.queueEnable), 1, 2)
    }

    /// §3.1.1 up to and including DRIVER_OK; returns whether FEATURES_OK stuck.
    @discardableResult
    func initialize(features: UInt64, queues: [(Int, FakeDriver, UInt16)], driverOK: Bool = true) -> Bool {
        status = 0
        status = 1
        status = 1 | 2
        writeDriverFeatures(features)
        status = 1 | 2 | 8
        guard status & 8 != 0 else { return false }
        for (i, f, v) in queues { setupQueue(i, f, vector: v) }
        if driverOK { status = 1 | 2 | 8 | 4 }
        return true
    }

    func notify(_ queue: Int) {
        barWrite(Self.notifyBase + 4 * UInt64(queue), UInt64(queue), 2)
    }

    /// Turns MSI-X on and programs + unmasks `vectors` entries.
    func enableMSIX(vectors: Int) {
        guard let cap = dev.msixCapabilityOffset else { return XCTFail("no MSI-X") }
        cfgWrite(cap + 2, 0x8000, 2)
        for v in 0..<vectors {
            let e = 0x4000 + 16 * UInt64(v)
            barWrite(e, 0xFEE0_0000, 4)
            barWrite(e + 4, 0, 4)
            barWrite(e + 8, 0x30 + UInt64(v), 4)
            barWrite(e + 12, 0, 4) // unmask
        }
    }
}

/// Integers appended from any thread.
final class LockedList: Sendable {
    private let list = Mutex<[Int]>([])
    var items: [Int] { list.withLock { $0 } }
    func append(_ i: Int) { list.withLock { $0.append(i) } }
}

// MARK: - Tests

final class VirtioPCIDeviceTests: XCTestCase {
    let memory = ArrayGuestMemory(size: 0x10_0000)
    let v1 = VirtioSpec.Feature.version1
    typealias C = VirtioPCICommonConfig.Offset

    // MARK: identity and capabilities

    func testPCIIdentity() throws {
        let d = try PCIDriver(VirtioRNG(source: CountingEntropy()), memory: memory)
        XCTAssertEqual(d.cfgRead(0x00, 2), 0x1AF4)
        XCTAssertEqual(d.cfgRead(0x02, 2), 0x1044, "0x1040 + 4 (§4.1.2)")
        XCTAssertEqual(d.cfgRead(0x08, 1), 1, "revision 1 for non-transitional devices (§4.1.2.1)")
        XCTAssertEqual(d.cfgRead(0x09, 3), 0xFF_00_00)
        XCTAssertEqual(d.cfgRead(0x2C, 2), 0x1AF4)
        XCTAssertGreaterThanOrEqual(d.cfgRead(0x2E, 2), 0x40, "subsystem ID >= 0x40 (§4.1.2.1)")
        XCTAssertEqual(d.cfgRead(0x3D, 1), 1, "INTA")
        // BAR 0: 64-bit prefetchable memory, 32 KiB.
        XCTAssertEqual(d.cfgRead(0x10, 4) & 0xF, 0b1100)
        d.cfgWrite(0x10, 0xFFFF_FFFF, 4)
        d.cfgWrite(0x14, 0xFFFF_FFFF, 4)
        XCTAssertEqual(d.cfgRead(0x10, 4), 0xFFFF_800C)
        XCTAssertEqual(d.cfgRead(0x14, 4), 0xFFFF_FFFF)

        let c = try PCIDriver(VirtioConsole(output: RecordingConsole()), memory: memory)
        XCTAssertEqual(c.cfgRead(0x02, 2), 0x1043)
        XCTAssertEqual(c.cfgRead(0x09, 3), 0x07_80_00)
    }

    /// Walks the capability list and returns (offset, bytes) per capability.
    private func capabilities(_ d: PCIDriver) -> [(Int, [UInt8])] {
        var out: [(Int, [UInt8])] = []
        var p = Int(d.cfgRead(0x34, 1))
        while p != 0, out.count < 20 {
            let len = d.cfgRead(p, 1) == 0x09 ? Int(d.cfgRead(p + 2, 1)) : 12
            out.append((p, (0..<len).map { UInt8(d.cfgRead(p + $0, 1)) }))
            p = Int(d.cfgRead(p + 1, 1))
        }
        return out
    }

    func testCapabilityBytes() throws {
        let d = try PCIDriver(VirtioConsole(output: RecordingConsole()), memory: memory)
        XCTAssertEqual(d.cfgRead(0x06, 2) & 0x10, 0x10, "Status.CAP_LIST")
        let caps = capabilities(d)
        XCTAssertEqual(caps.count, 6)
        func body(_ c: (Int, [UInt8])) -> [UInt8] { [c.1[0]] + Array(c.1[2...]) } // skip the next pointer
        // virtio_pci_cap: vndr 9, len, cfg_type, bar 0, id 0, pad, le32 offset, le32 length.
        XCTAssertEqual(body(caps[0]), [9, 16, 1, 0, 0, 0, 0, /* 0x0000 */ 0, 0, 0, 0, /* 0x3C */ 0x3C, 0, 0, 0])
        XCTAssertEqual(body(caps[1]), [9, 20, 2, 0, 0, 0, 0, 0, 0x30, 0, 0, /* 2 queues * 4 */ 8, 0, 0, 0,
                                       /* notify_off_multiplier */ 4, 0, 0, 0])
        XCTAssertEqual(body(caps[2]), [9, 16, 3, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 0, 0, 0])
        XCTAssertEqual(body(caps[3]), [9, 16, 4, 0, 0, 0, 0, 0, 0x20, 0, 0, 12, 0, 0, 0])
        XCTAssertEqual(body(caps[4]), [9, 20, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(caps[4].0, d.dev.pciConfigCapabilityOffset)
        // MSI-X: ID 0x11, Table Size N-1 = 2 (3 vectors), table at BAR 0 + 0x4000, PBA at 0x5000.
        XCTAssertEqual(body(caps[5]), [0x11, 2, 0, 0x00, 0x40, 0, 0, 0x00, 0x50, 0, 0])
        XCTAssertTrue(caps.allSatisfy { $0.0 % 4 == 0 })

        let rng = try PCIDriver(VirtioRNG(source: CountingEntropy()), memory: memory)
        let rngCaps = capabilities(rng)
        XCTAssertEqual(rngCaps.map { $0.1[0] == 9 ? $0.1[3] : $0.1[0] }, [1, 2, 3, 5, 0x11], "no DEVICE cap without config")
        XCTAssertEqual(rngCaps.last?.1[2], 1, "MSI-X Table Size N-1: 2 vectors")
    }

    func testNotifyAddresses() throws {
        let d = try PCIDriver(RecordingDevice(), memory: memory)
        XCTAssertEqual(d.dev.notifyAddress(forQueue: 0)?.offset, 0x3000)
        XCTAssertEqual(d.dev.notifyAddress(forQueue: 1)?.offset, 0x3004)
        XCTAssertEqual(d.dev.notifyAddress(forQueue: 1)?.bar, 0)
        XCTAssertNil(d.dev.notifyAddress(forQueue: 2))
        XCTAssertNil(d.dev.notifyAddress(forQueue: -1))
        // queue_notify_off * multiplier agrees (§4.1.4.4).
        d.barWrite(UInt64(C.queueSelect), 1, 2)
        XCTAssertEqual(0x3000 + d.barRead(UInt64(C.queueNotifyOff), 2) * 4, 0x3004)
    }

    func testOfferedFeaturesIncludeVersion1AndRingFeatures() throws {
        let d = try PCIDriver(RecordingDevice(), memory: memory)
        XCTAssertEqual(d.deviceFeatures, 0b11 | v1 | VirtioSpec.Feature.indirectDescriptors | VirtioSpec.Feature.eventIndex)
    }

    // MARK: common configuration through BAR 0

    func testFeatureNegotiationRefusesUnknownFeatures() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        XCTAssertFalse(d.initialize(features: v1 | 0b100, queues: []), "bit 2 was not offered")
        XCTAssertEqual(d.status, 3)
        XCTAssertFalse(d.initialize(features: 0b1, queues: []), "VERSION_1 missing")
        XCTAssertTrue(d.initialize(features: v1 | 0b1, queues: [], driverOK: false))
        XCTAssertEqual(d.dev.negotiatedFeatures, v1 | 0b1)
        XCTAssertEqual(d.status, 11)
    }

    func testDriverOKActivatesWithTheConfiguredQueues() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        let q0 = FakeDriver(memory: memory, size: 8, base: 0x1000)
        d.initialize(features: v1 | VirtioSpec.Feature.eventIndex, queues: [(0, q0, 0xFFFF)])
        XCTAssertEqual(d.status, 15)
        XCTAssertTrue(d.dev.isActive)
        XCTAssertEqual(dev.activations.count, 1)
        let a = try XCTUnwrap(dev.activations.first)
        XCTAssertEqual(a.features, v1 | VirtioSpec.Feature.eventIndex)
        XCTAssertEqual(a.queues.map(\.isEnabled), [true, false], "queue 1 was not enabled")
        XCTAssertEqual(a.queues[0].size, 8)
        XCTAssertEqual(a.queues[0].usedRing, GuestAddress(q0.usedRing))
        XCTAssertTrue(a.queues[0].eventIndex)

        d.notify(0)
        d.notify(1) // not enabled: dropped
        d.barWrite(0x3002, 0, 2) // not a queue's address
        XCTAssertEqual(dev.notified, [0])
        d.dev.notifyQueue(0) // the ioeventfd path
        d.dev.notifyQueue(99)
        XCTAssertEqual(dev.notified, [0, 0])
    }

    func testNotificationsBeforeDriverOKAreIgnored() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        d.initialize(features: v1, queues: [(0, FakeDriver(memory: memory, size: 8), 0xFFFF)], driverOK: false)
        d.notify(0)
        XCTAssertEqual(dev.notified, [])
    }

    /// With a sink (the VMM's I/O thread), notify writes to BAR 0 reach the
    /// sink with the queue index and not the device, whatever the width; the
    /// device hears of them when the sink calls `notifyQueue`.
    func testRoutedNotifyWritesGoToTheSinkNotTheDevice() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        d.initialize(features: v1, queues: [(0, FakeDriver(memory: memory, size: 8), 0xFFFF),
                                            (1, FakeDriver(memory: memory, size: 8, base: 0x2000), 0xFFFF)])
        d.notify(0)
        XCTAssertEqual(dev.notified, [0], "no sink: the writing thread notifies the device")

        let queues = LockedList()
        d.dev.routeNotifyWrites { queues.append($0) }
        d.notify(1)
        d.barWrite(PCIDriver.notifyBase, 0, 4)
        d.notify(2) // past the device's queues: dropped
        d.barWrite(PCIDriver.notifyBase + 0xFFC, 0x3FF, 2)
        XCTAssertEqual(queues.items, [1, 0])
        XCTAssertEqual(dev.notified, [0], "routed writes do not reach the device on the writing thread")
        for q in queues.items { d.dev.notifyQueue(q) }
        XCTAssertEqual(dev.notified, [0, 1, 0])
    }

    func testResetOnStatusZero() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        d.initialize(features: v1, queues: [(0, FakeDriver(memory: memory, size: 8), 0xFFFF)])
        let resetsBefore = dev.resets
        d.status = 0
        XCTAssertEqual(d.status, 0)
        XCTAssertEqual(dev.resets, resetsBefore + 1)
        XCTAssertFalse(d.dev.isActive)
        XCTAssertEqual(d.barRead(UInt64(C.queueEnable), 2), 0)
        XCTAssertEqual(d.barRead(UInt64(C.queueSize), 2), 16, "back to the maximum")
        d.notify(0)
        XCTAssertEqual(dev.notified, [])
        XCTAssertNil(dev.interrupt, "the device dropped its interrupt")
    }

    /// A device whose reset waits for host I/O: the vCPU writing 0 returns
    /// at once, device_status reads the old value and the driver's other
    /// writes are ignored until the device is done; then status 0 and the
    /// power-on configuration.
    func testStatusReadsZeroOnlyOnceTheDeviceHasFinishedItsReset() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        d.initialize(features: v1, queues: [(0, FakeDriver(memory: memory, size: 8), 0xFFFF)])
        XCTAssertEqual(d.status, 15)
        dev.holdResets = true
        let resetsBefore = dev.resets
        d.status = 0
        XCTAssertEqual(dev.resets, resetsBefore + 1)
        XCTAssertFalse(d.dev.isActive, "stopped at once")
        XCTAssertEqual(d.status, 15, "not 0 before the device is done")
        d.notify(0)
        XCTAssertEqual(dev.notified, [], "no notification reaches a device being reset")
        // The driver's writes meanwhile change nothing (a hostile one: status bits, a queue).
        d.status = 15
        d.barWrite(UInt64(C.queueSelect), 1, 2)
        d.status = 0
        XCTAssertEqual(dev.resets, resetsBefore + 1, "a second 0 is the same reset")
        XCTAssertEqual(d.barRead(UInt64(C.queueSelect), 2), 0)
        XCTAssertEqual(dev.activations.count, 1)

        dev.finishHeldReset()
        XCTAssertEqual(d.status, 0)
        XCTAssertEqual(d.barRead(UInt64(C.queueEnable), 2), 0)
        XCTAssertEqual(d.barRead(UInt64(C.queueSize), 2), 16, "back to the maximum")
        // And the device can be brought up again.
        dev.holdResets = false
        d.initialize(features: v1, queues: [(0, FakeDriver(memory: memory, size: 8), 0xFFFF)])
        XCTAssertEqual(d.status, 15)
        XCTAssertEqual(dev.activations.count, 2)
    }

    func testStaleInterruptAfterResetIsDropped() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        d.initialize(features: v1, queues: [(0, FakeDriver(memory: memory, size: 8), 0xFFFF)])
        let stale = try XCTUnwrap(dev.interrupt)
        d.status = 0
        d.initialize(features: v1, queues: [(0, FakeDriver(memory: memory, size: 8), 0xFFFF)])
        stale.signalUsedQueue(0)
        stale.deviceNeedsReset(.device("late"))
        XCTAssertEqual(d.barRead(0x1000, 1), 0, "no ISR bit from the old activation")
        XCTAssertEqual(d.status, 15)
        XCTAssertTrue(d.guestErrors.isEmpty)
    }

    func testMisconfiguredRingAtDriverOKMeansNeedsReset() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        d.initialize(features: v1, queues: [], driverOK: false)
        d.barWrite(UInt64(C.queueSelect), 0, 2)
        d.barWrite(UInt64(C.queueDesc), 0x1008, 8) // not 16-aligned
        d.barWrite(UInt64(C.queueDriver), 0x2000, 8)
        d.barWrite(UInt64(C.queueDevice), 0x3000, 8)
        d.barWrite(UInt64(C.queueEnable), 1, 2)
        d.status = 15
        XCTAssertEqual(d.status, 15 | 64, "DEVICE_NEEDS_RESET")
        XCTAssertEqual(d.guestErrors, [.misalignedRing(part: .descriptorTable, address: 0x1008)])
        XCTAssertEqual(dev.activations.count, 0)
        XCTAssertEqual(d.barRead(0x1000, 1), 2, "a configuration change interrupt (ISR bit 1)")
        XCTAssertFalse(d.dev.isActive)
        // A reset recovers.
        d.initialize(features: v1, queues: [(0, FakeDriver(memory: memory, size: 8), 0xFFFF)])
        XCTAssertEqual(d.status, 15)
        XCTAssertEqual(dev.activations.count, 1)
    }

    func testDriverOKWithoutFeaturesOKIsAGuestError() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        d.status = 1 | 2 | 4
        XCTAssertEqual(d.status, 3 | 64)
        XCTAssertEqual(d.guestErrors, [.transport("DRIVER_OK set without FEATURES_OK")])
        XCTAssertEqual(dev.activations.count, 0)
    }

    func testActivationFailureMeansNeedsReset() throws {
        let dev = RecordingDevice()
        dev.failActivation = true
        let d = try PCIDriver(dev, memory: memory)
        d.initialize(features: v1, queues: [])
        XCTAssertEqual(d.status, 15 | 64)
        XCTAssertEqual(d.guestErrors, [.device("refused")])
        XCTAssertFalse(d.dev.isActive)
    }

    func testDeviceConfigRegion() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        XCTAssertEqual(d.barRead(0x2000, 4), 0x0403_0201)
        XCTAssertEqual(d.barRead(0x2004, 4), 0x0807_0605)
        XCTAssertEqual(d.barRead(0x2006, 4), 0, "runs past the 8 config bytes")
        XCTAssertEqual(d.barRead(0x2100, 1), 0)
        d.barWrite(0x2001, 0xAA, 1)
        d.barWrite(0x2007, 0xBBBB, 2) // past the end: ignored
        XCTAssertEqual(dev.config, [1, 0xAA, 3, 4, 5, 6, 7, 8])
    }

    func testUnusedBarSpaceReadsZeroAndIgnoresWrites() throws {
        let d = try PCIDriver(RecordingDevice(), memory: memory)
        XCTAssertEqual(d.barRead(0x3000, 2), 0, "notify region reads 0")
        XCTAssertEqual(d.barRead(0x6000, 4), 0)
        XCTAssertEqual(d.barRead(0x7FFC, 4), 0)
        d.barWrite(0x6000, 0xFFFF_FFFF, 4)
        d.barWrite(0x1000, 0xFF, 1) // ISR is read-only
        XCTAssertEqual(d.barRead(0x1000, 1), 0)
        var b = [UInt8](repeating: 0, count: 4)
        b.withUnsafeMutableBytes { d.dev.readBar(1, offset: 0, data: $0) }
        XCTAssertEqual(b, [0, 0, 0, 0], "no other BAR")
    }

    // MARK: interrupts

    func testINTxPathSetsISRAndReadClears() throws {
        let d = try PCIDriver(VirtioRNG(source: CountingEntropy()), memory: memory)
        let q = FakeDriver(memory: memory, size: 8)
        d.initialize(features: v1, queues: [(0, q, 0xFFFF)])
        q.post([(0x8000, 16, true)])
        d.notify(0)
        XCTAssertEqual(q.takeUsed().map(\.len), [16])
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x8000), count: 4), [0, 1, 2, 3])
        XCTAssertTrue(d.line.level, "INTx asserted")
        XCTAssertEqual(d.cfgRead(0x06, 2) & 0x08, 0x08, "Status.INTERRUPT")
        XCTAssertEqual(d.barRead(0x1000, 1), 1, "queue interrupt bit")
        XCTAssertFalse(d.line.level, "de-asserted by the read")
        XCTAssertEqual(d.barRead(0x1000, 1), 0, "read clears")
        XCTAssertEqual(d.line.levels, [true, false])
        XCTAssertTrue(d.router.signals.isEmpty)
    }

    func testMSIXPathUsesTheQueueVector() throws {
        let d = try PCIDriver(VirtioRNG(source: CountingEntropy()), memory: memory)
        let q = FakeDriver(memory: memory, size: 8)
        d.enableMSIX(vectors: 2)
        d.barWrite(UInt64(C.configMSIXVector), 1, 2)
        XCTAssertEqual(d.barRead(UInt64(C.configMSIXVector), 2), 1)
        d.initialize(features: v1, queues: [(0, q, 0)])
        d.barWrite(UInt64(C.queueSelect), 0, 2)
        XCTAssertEqual(d.barRead(UInt64(C.queueMSIXVector), 2), 0)
        q.post([(0x8000, 16, true)])
        d.notify(0)
        XCTAssertEqual(d.router.signals, [0])
        XCTAssertFalse(d.line.level, "no INTx with MSI-X")
        XCTAssertEqual(d.barRead(0x1000, 1), 0, "ISR unused for queues with MSI-X")
    }

    func testMSIXVectorOutOfRangeReadsNoVectorAndNoInterrupt() throws {
        let d = try PCIDriver(VirtioRNG(source: CountingEntropy()), memory: memory)
        let q = FakeDriver(memory: memory, size: 8)
        d.enableMSIX(vectors: 2)
        d.initialize(features: v1, queues: [(0, q, 2)]) // the RNG has vectors 0 and 1
        d.barWrite(UInt64(C.queueSelect), 0, 2)
        XCTAssertEqual(d.barRead(UInt64(C.queueMSIXVector), 2), 0xFFFF)
        q.post([(0x8000, 16, true)])
        d.notify(0)
        XCTAssertEqual(q.usedIndex, 1)
        XCTAssertEqual(d.router.signals, [], "NO_VECTOR: no interrupt (§4.1.5.3.1)")
        XCTAssertFalse(d.line.level)
    }

    func testGuestErrorSetsNeedsResetAndSignalsAConfigChange() throws {
        let d = try PCIDriver(VirtioRNG(source: CountingEntropy()), memory: memory)
        let q = FakeDriver(memory: memory, size: 8)
        d.enableMSIX(vectors: 2)
        d.initialize(features: v1, queues: [(0, q, 0)], driverOK: false)
        d.barWrite(UInt64(C.configMSIXVector), 1, 2) // after the reset, which unmaps vectors
        d.status = 15
        let generation = d.barRead(UInt64(C.configGeneration), 1)
        let head = q.post([(0x8000, 16, false)]) // device-readable: wrong for an entropy queue
        d.notify(0)
        XCTAssertEqual(d.status, 15 | 64)
        XCTAssertEqual(d.guestErrors, [.wrongDirection(head: head, expectedWritable: true)])
        XCTAssertEqual(d.router.signals, [1], "configuration vector")
        XCTAssertNotEqual(d.barRead(UInt64(C.configGeneration), 1), generation)
        XCTAssertEqual(d.barRead(0x1000, 1), 2, "ISR config bit is set even with MSI-X (§4.1.4.5.1)")

        // Further notifications are ignored until the driver resets.
        q.post([(0x9000, 16, true)])
        d.notify(0)
        XCTAssertEqual(q.usedIndex, 0)
        XCTAssertEqual(d.guestErrors.count, 1)

        let q2 = FakeDriver(memory: memory, size: 8, base: 0x20000)
        d.initialize(features: v1, queues: [(0, q2, 0)])
        XCTAssertEqual(d.barRead(UInt64(C.configMSIXVector), 2), 0xFFFF, "reset unmapped it (§4.1.5.1.2.1)")
        XCTAssertEqual(d.status, 15)
        q2.post([(0x9000, 16, true)])
        d.notify(0)
        XCTAssertEqual(q2.usedIndex, 1)
    }

    func testHostileAvailIndexViaTheTransport() throws {
        let d = try PCIDriver(VirtioRNG(source: CountingEntropy()), memory: memory)
        let q = FakeDriver(memory: memory, size: 8)
        d.initialize(features: v1, queues: [(0, q, 0xFFFF)])
        q.setAvailIndex(200)
        d.notify(0)
        XCTAssertEqual(d.guestErrors, [.availIndexJump(availIndex: 200, nextAvail: 0, queueSize: 8)])
        XCTAssertEqual(d.status & 64, 64)
        XCTAssertTrue(d.line.level, "INTx config change")
        XCTAssertEqual(d.barRead(0x1000, 1), 2)
    }

    func testConsoleEndToEndThroughTheTransport() throws {
        let out = RecordingConsole()
        let console = VirtioConsole(output: out, cols: 120, rows: 40)
        let d = try PCIDriver(console, memory: memory)
        XCTAssertEqual(d.barRead(0x2000, 2), 120)
        XCTAssertEqual(d.barRead(0x2002, 2), 40)
        let rx = FakeDriver(memory: memory, size: 8, base: 0x1000)
        let tx = FakeDriver(memory: memory, size: 8, base: 0x4000)
        d.initialize(features: v1 | VirtioConsole.featureSize, queues: [(0, rx, 0xFFFF), (1, tx, 0xFFFF)])
        XCTAssertEqual(d.status, 15)

        try memory.writeBytes(Array("login: ".utf8), at: GuestAddress(0x8000))
        tx.post([(0x8000, 7, false)])
        d.notify(1)
        XCTAssertEqual(out.text, "login: ")
        XCTAssertEqual(tx.takeUsed().count, 1)
        XCTAssertEqual(d.barRead(0x1000, 1), 1)

        rx.post([(0x9000, 64, true)])
        d.notify(0)
        console.enqueueInput(Array("root\n".utf8))
        XCTAssertEqual(rx.takeUsed().map(\.len), [5])
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9000), count: 5), Array("root\n".utf8))
        XCTAssertTrue(d.line.level)
        XCTAssertEqual(d.barRead(0x1000, 1), 1)

        console.setSize(cols: 100, rows: 30)
        XCTAssertEqual(d.barRead(0x1000, 1), 2, "config change")
        XCTAssertEqual(d.barRead(0x2000, 4), 100 | 30 << 16)

        d.barWrite(0x2008, UInt64(UInt8(ascii: "!")), 4) // emerg_wr
        XCTAssertEqual(out.text, "login: !")
    }

    // MARK: PCI_CFG access window (§4.1.4.9)

    func testPCIConfigAccessWindow() throws {
        let dev = RecordingDevice()
        let d = try PCIDriver(dev, memory: memory)
        let cap = d.dev.pciConfigCapabilityOffset
        func window(offset: UInt32, length: UInt32) {
            d.cfgWrite(cap + 4, 0, 1)
            d.cfgWrite(cap + 8, UInt64(offset), 4)
            d.cfgWrite(cap + 12, UInt64(length), 4)
        }
        window(offset: UInt32(C.numQueues), length: 2)
        XCTAssertEqual(d.cfgRead(cap + 16, 4) & 0xFFFF, 2, "num_queues through config space")
        window(offset: 0x2004, length: 4)
        XCTAssertEqual(d.cfgRead(cap + 16, 4), 0x0807_0605, "device config")

        // Writes go through: device_status = ACKNOWLEDGE.
        window(offset: UInt32(C.deviceStatus), length: 1)
        d.cfgWrite(cap + 16, 1, 4)
        XCTAssertEqual(d.status, 1)

        // Misaligned or odd lengths are refused (§4.1.4.9.2).
        window(offset: UInt32(C.numQueues) + 1, length: 2)
        d.cfgWrite(cap + 16, 0, 4)
        XCTAssertEqual(d.cfgRead(cap + 16, 4), 0, "last value stays")
        window(offset: 0, length: 3)
        d.cfgWrite(cap + 16, 0, 4)
        window(offset: 0x7FFE, length: 4)
        d.cfgWrite(cap + 16, 0, 4)
        d.cfgWrite(cap + 4, 1, 1) // BAR 1 does not exist
        d.cfgWrite(cap + 8, UInt64(C.deviceStatus), 4)
        d.cfgWrite(cap + 12, 1, 4)
        d.cfgWrite(cap + 16, 0, 4)
        XCTAssertEqual(d.status, 1, "none of those reached the device")

        // The capability header stays read-only.
        d.cfgWrite(cap + 3, 0xFF, 1)
        XCTAssertEqual(d.cfgRead(cap + 3, 1), 5)
    }

    // MARK: fuzz

    func testRandomRegisterAccessesNeverTrap() throws {
        var rng = SplitMix64(seed: 0x5EED_0004)
        let console = VirtioConsole(output: RecordingConsole())
        let d = try PCIDriver(console, memory: memory)
        for i in 0..<40000 {
            let width = [1, 2, 4, 8, 3, 0][Int(rng.next() % 6)]
            let value = rng.next()
            switch rng.next() % 6 {
            case 0:
                // Mostly the common config, sometimes anywhere in the BAR.
                let off = rng.next() % 2 == 0 ? rng.next() % 0x40 : rng.next() % VirtioPCIDevice.Layout.barSize
                d.barWrite(min(off, VirtioPCIDevice.Layout.barSize - UInt64(width)), value, width)
            case 1:
                let off = rng.next() % VirtioPCIDevice.Layout.barSize
                _ = d.barRead(min(off, VirtioPCIDevice.Layout.barSize - UInt64(width)), width)
            case 2:
                d.cfgWrite(Int(rng.next() % 0x100), value, width)
            case 3:
                _ = d.cfgRead(Int(rng.next() % 0x110), width)
            case 4:
                d.notify(Int(rng.next() % 3))
            default:
                if i % 500 == 0 { d.initialize(features: value & d.deviceFeatures, queues: [
                    (0, FakeDriver(memory: memory, size: 8, base: 0x1000), UInt16(truncatingIfNeeded: value)),
                    (1, FakeDriver(memory: memory, size: 8, base: 0x4000), 0xFFFF)]) }
                console.enqueueInput([UInt8(truncatingIfNeeded: value)])
            }
        }
        XCTAssertEqual(d.cfgRead(0, 2), 0x1AF4, "still a virtio device")
    }
}

final class VirtioClassCodeTests: XCTestCase {
    func testClassCodesMatchWhatGuestsExpect() {
        XCTAssertEqual(VirtioPCIDevice.classCode(forDeviceType: 1), 0x02_00_00) // Ethernet
        XCTAssertEqual(VirtioPCIDevice.classCode(forDeviceType: 2), 0x01_00_00) // mass storage
        XCTAssertEqual(VirtioPCIDevice.classCode(forDeviceType: 3), 0x07_80_00) // communication, other
        XCTAssertEqual(VirtioPCIDevice.classCode(forDeviceType: 4), 0xFF_00_00) // unassigned
    }
}
