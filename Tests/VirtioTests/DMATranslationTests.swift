import GuestMemory
import Synchronization
import TestFakes
import Virtio
import XCTest

/// A device whose guest memory is a `DMAGuestMemory`: what a vIOMMU will
/// give it. The rings and buffers are at IOVAs that a translator maps
/// somewhere else in guest memory, and a revoked mapping stops the device.
final class DMATranslationTests: XCTestCase {
    /// IOVA window [0x100_0000, 0x101_0000) -> guest physical [0x4_0000, 0x5_0000).
    static let iova: UInt64 = 0x100_0000, guest: UInt64 = 0x4_0000, window: UInt64 = 0x1_0000

    func testRNGFillsBuffersAtTheirTranslatedAddressesUntilTheMappingIsRevoked() throws {
        let ram = ArrayGuestMemory(size: 0x10_0000)
        let dma = DMATranslator(memory: ram)
        try dma.map(iova: Self.iova, size: Self.window, guestAddress: GuestAddress(Self.guest))
        try dma.attach()
        let view = DMAGuestMemory(translator: dma)
        // The driver, like the guest's DMA API, hands the device IOVAs.
        let d = FakeDriver(memory: view, size: 8, base: Self.iova + 0x1000)
        let irq = RecordingInterrupt()
        let rng = VirtioRNG(source: CountingEntropy())
        try rng.activate(memory: view, features: VirtioSpec.Feature.version1, queues: [d.makeQueue()], interrupt: irq)

        d.post([(Self.iova + 0x8000, 4, true)])
        rng.queueNotified(0)
        XCTAssertEqual(d.takeUsed().map(\.len), [4])
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(Self.guest + 0x8000), count: 4), [0, 1, 2, 3], "written at the guest physical address")
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(0x8000), count: 4), [0, 0, 0, 0], "not at the IOVA's low bits")
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(Self.iova & 0xF_FFFF), count: 4), [0, 0, 0, 0])
        XCTAssertTrue(irq.errors.isEmpty)

        // The vIOMMU revokes the mapping: the next request faults, the device needs a reset.
        try dma.unmap(iova: Self.iova, size: Self.window)
        rng.queueNotified(0)
        XCTAssertEqual(irq.errors.count, 1, "\(irq.errors)")
    }

    /// Behind a vIOMMU (the translator reports faults): a data buffer the
    /// domain does not map fails that request with IOERR and a fault, the
    /// device goes on, and the next request is served; an unreachable status
    /// byte returns the request with used length 0.
    func testBlockRequestWithAnUnmappedBufferFailsAloneBehindAVIOMMU() throws {
        let ram = ArrayGuestMemory(size: 0x10_0000)
        let faults = FaultLog()
        let view = try viommuView(ram, faults: faults)
        XCTAssertTrue(view.checksBuffersOnAccess)
        let d = FakeDriver(memory: view, size: 8, base: Self.iova + 0x1000)
        let irq = RecordingInterrupt()
        let disk = MemoryDisk(size: 8192)
        let block = VirtioBlock(backend: disk)
        try block.activate(memory: view, features: VirtioSpec.Feature.version1, queues: [d.makeQueue()], interrupt: irq)
        func request(data: UInt64, status: UInt64) throws {
            let header = Self.iova + 0x6000
            var h = [UInt8](repeating: 0, count: 16) // type IN (0), sector 1
            h[8] = 1
            try view.writeBytes(h, at: GuestAddress(header))
            d.post([(header, 16, false), (data, 512, true), (status, 1, true)])
            block.queueNotified(VirtioBlock.requestQueue)
        }
        let unmapped = Self.iova + Self.window + 0x1000
        try request(data: unmapped, status: Self.iova + 0x7000)
        XCTAssertEqual(d.takeUsed().map(\.len), [1], "answered: the status byte only")
        XCTAssertEqual(try view.readBytes(at: GuestAddress(Self.iova + 0x7000), count: 1), [1], "VIRTIO_BLK_S_IOERR")
        XCTAssertEqual(faults.all, [DMAFault(iova: unmapped, length: 512, access: .write, reason: .unmapped)])
        XCTAssertTrue(irq.errors.isEmpty, "the device goes on")

        try request(data: Self.iova + 0x8000, status: Self.iova + 0x7000)
        XCTAssertEqual(d.takeUsed().map(\.len), [513])
        XCTAssertEqual(try view.readBytes(at: GuestAddress(Self.iova + 0x7000), count: 1), [0], "OK")
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(Self.guest + 0x8000), count: 512), Array(disk.bytes[512..<1024]))

        try request(data: Self.iova + 0x8000, status: unmapped)
        XCTAssertEqual(d.takeUsed().map(\.len), [0], "no status byte to write: used length 0")
        XCTAssertTrue(irq.errors.isEmpty)
        XCTAssertEqual(block.statistics.dmaFailures, 2)
    }

    /// A translator behind a vIOMMU over [iova, iova + window), reporting
    /// its faults into `faults`.
    private func viommuView(_ ram: ArrayGuestMemory, faults: FaultLog) throws -> DMAGuestMemory {
        let dma = DMATranslator(memory: ram)
        try dma.map(iova: Self.iova, size: Self.window, guestAddress: GuestAddress(Self.guest))
        try dma.attach()
        dma.setFaultHandler { f in faults.list.withLock { $0.append(f) } }
        return DMAGuestMemory(translator: dma)
    }

    final class FaultLog: Sendable {
        let list = Mutex<[DMAFault]>([])
        var all: [DMAFault] { list.withLock { $0 } }
    }

    /// Activates a two-queue device (receive queue 0, transmit queue 1, as
    /// virtio-net and virtio-console number them) on rings at IOVAs of `view`.
    private func activateTwoQueues(_ device: VirtioDevice, on view: DMAGuestMemory) throws
        -> (rx: FakeDriver, tx: FakeDriver, irq: RecordingInterrupt) {
        let rx = FakeDriver(memory: view, size: 8, base: Self.iova + 0x1000)
        let tx = FakeDriver(memory: view, size: 8, base: Self.iova + 0x3000)
        let irq = RecordingInterrupt()
        try device.activate(memory: view, features: VirtioSpec.Feature.version1, queues: [rx.makeQueue(), tx.makeQueue()],
                            interrupt: irq)
        return (rx, tx, irq)
    }

    /// Behind a vIOMMU, an entropy buffer the domain does not map comes back
    /// with length 0 and a fault; the device goes on.
    func testRNGReturnsAnUnmappedBufferEmptyAndGoesOnBehindAVIOMMU() throws {
        let ram = ArrayGuestMemory(size: 0x10_0000)
        let faults = FaultLog()
        let view = try viommuView(ram, faults: faults)
        let d = FakeDriver(memory: view, size: 8, base: Self.iova + 0x1000)
        let irq = RecordingInterrupt()
        let rng = VirtioRNG(source: CountingEntropy())
        try rng.activate(memory: view, features: VirtioSpec.Feature.version1, queues: [d.makeQueue()], interrupt: irq)
        let unmapped = Self.iova + Self.window + 0x1000
        d.post([(unmapped, 4, true)])
        d.post([(Self.iova + 0x8000, 4, true)])
        rng.queueNotified(0)
        XCTAssertEqual(d.takeUsed().map(\.len), [0, 4], "the unreachable buffer empty, the next one filled")
        XCTAssertEqual(faults.all, [DMAFault(iova: unmapped, length: 4, access: .write, reason: .unmapped)])
        XCTAssertTrue(irq.errors.isEmpty, "no DEVICE_NEEDS_RESET: \(irq.errors)")
        XCTAssertEqual(rng.dmaFailures, 1)
        XCTAssertEqual(rng.bytesProvided, 4)
    }

    /// Behind a vIOMMU, virtio-net drops a frame whose transmit buffer or
    /// receive buffer is out of reach (returned with length 0, counted) and
    /// goes on with the next.
    func testNetDropsFramesWithUnreachableBuffersAndGoesOnBehindAVIOMMU() throws {
        let ram = ArrayGuestMemory(size: 0x10_0000)
        let faults = FaultLog()
        let view = try viommuView(ram, faults: faults)
        let backend = RecordingNetBackend()
        let net = VirtioNet(backend: backend, mac: MACAddress([0x52, 0x54, 0, 0, 0, 1])!)
        let (rx, tx, irq) = try activateTwoQueues(net, on: view)
        let unmapped = Self.iova + Self.window + 0x2000
        let frame = (0..<60).map { UInt8($0) }
        // Transmit: header + frame, first from an unmapped IOVA, then a mapped one.
        try view.writeBytes([UInt8](repeating: 0, count: 12) + frame, at: GuestAddress(Self.iova + 0x8000))
        tx.post([(unmapped, 72, false)])
        tx.post([(Self.iova + 0x8000, 72, false)])
        net.queueNotified(VirtioNet.transmitQueue)
        XCTAssertEqual(tx.takeUsed().map(\.len), [0, 0])
        XCTAssertEqual(backend.frames, [frame], "only the reachable frame went out")

        // Receive: the first buffer is out of reach, so that frame is dropped;
        // the next frame lands in the next buffer.
        rx.post([(unmapped, 1526, true)])
        rx.post([(Self.iova + 0x9000, 1526, true)])
        XCTAssertTrue(net.receive(frame: frame))
        XCTAssertTrue(net.receive(frame: frame.reversed()))
        XCTAssertEqual(rx.takeUsed().map(\.len), [0, 72])
        XCTAssertEqual(try view.readBytes(at: GuestAddress(Self.iova + 0x9000 + 12), count: 60), frame.reversed())
        XCTAssertEqual(net.statistics.dmaFailures, 2)
        XCTAssertEqual(faults.all.map { $0.access }, [.read, .write])
        XCTAssertTrue(irq.errors.isEmpty, "no DEVICE_NEEDS_RESET: \(irq.errors)")
    }

    /// Behind a vIOMMU, virtio-console drops the bytes of a transmit buffer
    /// out of reach, returns an unreachable receive buffer empty, and keeps
    /// the input for the next buffer.
    func testConsoleSkipsUnreachableBuffersAndKeepsItsInputBehindAVIOMMU() throws {
        let ram = ArrayGuestMemory(size: 0x10_0000)
        let faults = FaultLog()
        let view = try viommuView(ram, faults: faults)
        let out = RecordingConsole()
        let console = VirtioConsole(output: out)
        let (rx, tx, irq) = try activateTwoQueues(console, on: view)
        let unmapped = Self.iova + Self.window + 0x2000
        try view.writeBytes(Array("ok".utf8), at: GuestAddress(Self.iova + 0x8000))
        tx.post([(unmapped, 5, false)])
        tx.post([(Self.iova + 0x8000, 2, false)])
        console.queueNotified(VirtioConsole.transmitQueue)
        XCTAssertEqual(tx.takeUsed().count, 2)
        XCTAssertEqual(out.text, "ok")

        rx.post([(unmapped, 16, true)])
        rx.post([(Self.iova + 0x9000, 16, true)])
        XCTAssertEqual(console.enqueueInput(Array("hi".utf8)), 2)
        XCTAssertEqual(rx.takeUsed().map(\.len), [0, 2])
        XCTAssertEqual(try view.readBytes(at: GuestAddress(Self.iova + 0x9000), count: 2), Array("hi".utf8))
        XCTAssertEqual(console.dmaFailures, 2)
        XCTAssertEqual(faults.all.count, 2)
        XCTAssertTrue(irq.errors.isEmpty, "no DEVICE_NEEDS_RESET: \(irq.errors)")
    }
}
