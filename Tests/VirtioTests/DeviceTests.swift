import GuestMemory
import TestFakes
import Virtio
import XCTest

/// Device models driven directly (no transport): activate with queues a fake
/// driver laid out, post buffers, notify, check guest memory and signals.
final class VirtioRNGTests: XCTestCase {
    let memory = ArrayGuestMemory(size: 0x10_0000)

    private func activated(_ rng: VirtioRNG, _ d: FakeDriver, _ irq: RecordingInterrupt) throws {
        try rng.activate(memory: memory, features: VirtioSpec.Feature.version1,
                         queues: [d.makeQueue()], interrupt: irq)
    }

    func testIdentity() {
        let rng = VirtioRNG(source: CountingEntropy())
        XCTAssertEqual(rng.deviceType, 4)
        XCTAssertEqual(rng.deviceFeatures, 0)
        XCTAssertEqual(rng.queueMaxSizes, [256])
        XCTAssertEqual(rng.configSize, 0)
    }

    func testFillsWritableBuffersAndSignals() throws {
        let source = CountingEntropy()
        let rng = VirtioRNG(source: source)
        let d = FakeDriver(memory: memory, size: 16)
        let irq = RecordingInterrupt()
        try activated(rng, d, irq)

        let a = d.post([(0x8000, 8, true)])
        let b = d.post([(0x9000, 3, true), (0x9100, 2, true)])
        rng.queueNotified(0)

        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x8000), count: 8), [0, 1, 2, 3, 4, 5, 6, 7])
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9000), count: 3), [8, 9, 10])
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9100), count: 2), [11, 12])
        let used = d.takeUsed()
        XCTAssertEqual(used.map(\.id), [UInt32(a), UInt32(b)])
        XCTAssertEqual(used.map(\.len), [8, 5])
        XCTAssertEqual(irq.usedQueues, [0], "one interrupt for the batch")
        XCTAssertEqual(rng.bytesProvided, 13)
        XCTAssertTrue(irq.errors.isEmpty)

        rng.queueNotified(0) // spurious: nothing new, no interrupt (§2.7.10.2 MUST handle)
        XCTAssertEqual(irq.usedQueues, [0])
        rng.queueNotified(7) // not a queue of this device
        XCTAssertEqual(irq.usedQueues, [0])
    }

    func testCapsEachRequest() throws {
        let source = CountingEntropy()
        let rng = VirtioRNG(source: source, maxBytesPerRequest: 4)
        let d = FakeDriver(memory: memory, size: 8)
        let irq = RecordingInterrupt()
        try activated(rng, d, irq)
        d.post([(0x8000, 0x1000, true)])
        rng.queueNotified(0)
        XCTAssertEqual(d.takeUsed().map(\.len), [4], "§5.4.6.2: MAY use less than the entire buffer")
        XCTAssertEqual(source.requests, [4])
    }

    func testRespectsUsedEventSuppression() throws {
        let rng = VirtioRNG(source: CountingEntropy())
        let d = FakeDriver(memory: memory, size: 8)
        let irq = RecordingInterrupt()
        try rng.activate(memory: memory, features: VirtioSpec.Feature.version1 | VirtioSpec.Feature.eventIndex,
                         queues: [d.makeQueue(features: VirtioSpec.Feature.eventIndex)], interrupt: irq)
        d.usedEvent = 1 // interrupt when the second buffer is used
        d.post([(0x8000, 4, true)])
        rng.queueNotified(0)
        XCTAssertEqual(irq.usedQueues, [])
        d.post([(0x8000, 4, true)])
        rng.queueNotified(0)
        XCTAssertEqual(irq.usedQueues, [0])
    }

    func testReadableBufferPutsTheDeviceInNeedsReset() throws {
        let rng = VirtioRNG(source: CountingEntropy())
        let d = FakeDriver(memory: memory, size: 8)
        let irq = RecordingInterrupt()
        try activated(rng, d, irq)
        let head = d.post([(0x8000, 4, false)])
        rng.queueNotified(0)
        XCTAssertEqual(irq.errors, [.wrongDirection(head: head, expectedWritable: true)])
        XCTAssertEqual(d.usedIndex, 0)

        // Broken until reset: later buffers are left alone.
        d.post([(0x9000, 4, true)])
        rng.queueNotified(0)
        XCTAssertEqual(d.usedIndex, 0)
        XCTAssertEqual(irq.errors.count, 1)
    }

    func testHostileRingIsReportedNotTrapped() throws {
        let rng = VirtioRNG(source: CountingEntropy())
        let d = FakeDriver(memory: memory, size: 8)
        let irq = RecordingInterrupt()
        try activated(rng, d, irq)
        d.setAvailIndex(100)
        rng.queueNotified(0)
        XCTAssertEqual(irq.errors, [.availIndexJump(availIndex: 100, nextAvail: 0, queueSize: 8)])
    }

    func testResetDropsTheQueue() throws {
        let rng = VirtioRNG(source: CountingEntropy())
        let d = FakeDriver(memory: memory, size: 8)
        let irq = RecordingInterrupt()
        try activated(rng, d, irq)
        rng.reset()
        d.post([(0x8000, 4, true)])
        rng.queueNotified(0)
        XCTAssertEqual(d.usedIndex, 0)
        XCTAssertEqual(irq.usedQueues, [])
    }

    func testSystemEntropySourceReturnsTheCountAsked() {
        let s = SystemEntropySource()
        XCTAssertEqual(s.randomBytes(count: 0).count, 0)
        XCTAssertEqual(s.randomBytes(count: 13).count, 13)
        XCTAssertNotEqual(s.randomBytes(count: 32), s.randomBytes(count: 32), "2^-256 chance of a false failure")
    }
}

final class VirtioConsoleTests: XCTestCase {
    let memory = ArrayGuestMemory(size: 0x10_0000)

    private struct Rig {
        let console: VirtioConsole
        let out: RecordingConsole
        let rx: FakeDriver
        let tx: FakeDriver
        let irq: RecordingInterrupt
    }

    private func rig(features: UInt64 = VirtioSpec.Feature.version1, inputCapacity: Int = 64) throws -> Rig {
        try memory.zero(at: GuestAddress(0x1000), length: 0x8000) // fresh rings
        let out = RecordingConsole()
        let console = VirtioConsole(output: out, cols: 80, rows: 25, inputCapacity: inputCapacity)
        let rx = FakeDriver(memory: memory, size: 8, base: 0x1000)
        let tx = FakeDriver(memory: memory, size: 8, base: 0x4000)
        let irq = RecordingInterrupt()
        try console.activate(memory: memory, features: features,
                             queues: [rx.makeQueue(), tx.makeQueue()], interrupt: irq)
        return Rig(console: console, out: out, rx: rx, tx: tx, irq: irq)
    }

    func testIdentityAndConfigLayout() {
        let c = VirtioConsole(output: RecordingConsole(), cols: 132, rows: 43)
        XCTAssertEqual(c.deviceType, 3)
        XCTAssertEqual(c.deviceFeatures, 0b101, "F_SIZE | F_EMERG_WRITE, no MULTIPORT")
        XCTAssertEqual(c.queueMaxSizes.count, 2)
        XCTAssertEqual(c.configSize, 12)
        var b = [UInt8](repeating: 0xEE, count: 16)
        b.withUnsafeMutableBytes { c.readConfig(offset: 0, data: $0) }
        // le16 cols 132, le16 rows 43, le32 max_nr_ports 1, le32 emerg_wr 0, then zero fill.
        XCTAssertEqual(b, [132, 0, 43, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        var two = [UInt8](repeating: 0, count: 2)
        two.withUnsafeMutableBytes { c.readConfig(offset: 2, data: $0) }
        XCTAssertEqual(two, [43, 0])
        two.withUnsafeMutableBytes { c.readConfig(offset: Int.max, data: $0) }
        XCTAssertEqual(two, [0, 0], "no overflow past Int.max")
    }

    func testTransmitWritesGuestOutputInOrder() throws {
        let r = try rig()
        try memory.writeBytes(Array("hel".utf8), at: GuestAddress(0x8000))
        try memory.writeBytes(Array("lo\n".utf8), at: GuestAddress(0x8100))
        try memory.writeBytes(Array("bye".utf8), at: GuestAddress(0x8200))
        let a = r.tx.post([(0x8000, 3, false), (0x8100, 3, false)])
        let b = r.tx.post([(0x8200, 3, false)])
        r.console.queueNotified(VirtioConsole.transmitQueue)
        XCTAssertEqual(r.out.text, "hello\nbye")
        let used = r.tx.takeUsed()
        XCTAssertEqual(used.map(\.id), [UInt32(a), UInt32(b)])
        XCTAssertEqual(used.map(\.len), [0, 0], "nothing written into transmit buffers")
        XCTAssertEqual(r.irq.usedQueues, [VirtioConsole.transmitQueue])
    }

    func testLargeTransmitBufferIsStreamedInChunks() throws {
        let r = try rig()
        let big = (0..<40000).map { UInt8(truncatingIfNeeded: $0) }
        try memory.writeBytes(big, at: GuestAddress(0x20000))
        r.tx.post([(0x20000, 40000, false)])
        r.console.queueNotified(VirtioConsole.transmitQueue)
        XCTAssertEqual(r.out.bytes, big)
    }

    func testReceiveDeliversInputIntoPostedBuffers() throws {
        let r = try rig()
        XCTAssertEqual(r.console.enqueueInput(Array("abcdef".utf8)), 6, "buffered until the driver posts")
        XCTAssertEqual(r.irq.usedQueues, [])
        let a = r.rx.post([(0x9000, 4, true)])
        r.console.queueNotified(VirtioConsole.receiveQueue)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9000), count: 4), Array("abcd".utf8))
        XCTAssertEqual(r.rx.takeUsed().map { [$0.id, $0.len] }, [[UInt32(a), 4]])
        XCTAssertEqual(r.irq.usedQueues, [VirtioConsole.receiveQueue])

        let b = r.rx.post([(0x9100, 16, true)])
        r.console.queueNotified(VirtioConsole.receiveQueue)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9100), count: 2), Array("ef".utf8))
        XCTAssertEqual(r.rx.takeUsed().map { [$0.id, $0.len] }, [[UInt32(b), 2]])

        // With a buffer already waiting, input goes straight in.
        let c = r.rx.post([(0x9200, 16, true)])
        r.console.queueNotified(VirtioConsole.receiveQueue) // nothing to deliver: buffer stays posted
        XCTAssertEqual(r.rx.usedIndex, 2)
        r.console.enqueueInput(Array("xyz".utf8))
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9200), count: 3), Array("xyz".utf8))
        XCTAssertEqual(r.rx.takeUsed().map { [$0.id, $0.len] }, [[UInt32(c), 3]])
    }

    func testInputBufferIsBounded() throws {
        let r = try rig(inputCapacity: 8)
        XCTAssertEqual(r.console.enqueueInput([UInt8](repeating: 0x41, count: 5)), 5)
        XCTAssertEqual(r.console.inputSpace, 3)
        XCTAssertEqual(r.console.enqueueInput([UInt8](repeating: 0x42, count: 5)), 3, "the caller keeps the rest")
        XCTAssertEqual(r.console.enqueueInput([0x43]), 0)
        r.rx.post([(0x9000, 6, true)])
        r.console.queueNotified(VirtioConsole.receiveQueue)
        XCTAssertEqual(r.console.inputSpace, 6)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9000), count: 6), Array("AAAAAB".utf8))
    }

    func testWrongDirectionOnEitherQueueIsAGuestError() throws {
        let r = try rig()
        let head = r.tx.post([(0x8000, 4, true)])
        r.console.queueNotified(VirtioConsole.transmitQueue)
        XCTAssertEqual(r.irq.errors, [.wrongDirection(head: head, expectedWritable: false)])

        let r2 = try rig()
        let head2 = r2.rx.post([(0x9000, 4, false)])
        r2.console.enqueueInput([1])
        XCTAssertEqual(r2.irq.errors, [.wrongDirection(head: head2, expectedWritable: true)])
        XCTAssertEqual(r2.rx.usedIndex, 0)
    }

    func testEmergencyWriteWorksWithoutQueues() {
        let out = RecordingConsole()
        let c = VirtioConsole(output: out)
        var v: UInt32 = 0x1234_5621 // only the low byte counts (§5.3.5.1)
        withUnsafeBytes(of: &v) { c.writeConfig(offset: VirtioConsole.ConfigOffset.emergencyWrite, data: $0) }
        var cols: UInt16 = 1
        withUnsafeBytes(of: &cols) { c.writeConfig(offset: 0, data: $0) } // read-only: ignored
        XCTAssertEqual(out.bytes, [0x21])
        var b = [UInt8](repeating: 0, count: 2)
        b.withUnsafeMutableBytes { c.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(b, [80, 0])
    }

    func testResizeSignalsAConfigChangeOnlyWhenSizeWasNegotiated() throws {
        let r = try rig(features: VirtioSpec.Feature.version1 | VirtioConsole.featureSize)
        r.console.setSize(cols: 100, rows: 30)
        XCTAssertEqual(r.irq.configChanges, 1)
        r.console.setSize(cols: 100, rows: 30)
        XCTAssertEqual(r.irq.configChanges, 1, "no change, no notification")
        var b = [UInt8](repeating: 0, count: 4)
        b.withUnsafeMutableBytes { r.console.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(b, [100, 0, 30, 0])

        let plain = try rig()
        plain.console.setSize(cols: 1, rows: 1)
        XCTAssertEqual(plain.irq.configChanges, 0)
    }

    func testResetKeepsPendingInputForTheNextDriver() throws {
        let r = try rig()
        r.console.enqueueInput([7, 8])
        r.console.reset()
        let rx = FakeDriver(memory: memory, size: 8, base: 0x30000)
        let tx = FakeDriver(memory: memory, size: 8, base: 0x34000)
        rx.post([(0x9000, 4, true)])
        let irq = RecordingInterrupt()
        try r.console.activate(memory: memory, features: VirtioSpec.Feature.version1,
                               queues: [rx.makeQueue(), tx.makeQueue()], interrupt: irq)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9000), count: 2), [7, 8])
        XCTAssertEqual(irq.usedQueues, [VirtioConsole.receiveQueue])
    }
}
