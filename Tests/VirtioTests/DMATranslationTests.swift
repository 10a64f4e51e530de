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
        let dma = DMATranslator(memory: ram)
        try dma.map(iova: Self.iova, size: Self.window, guestAddress: GuestAddress(Self.guest))
        try dma.attach()
        let faults = Mutex<[DMAFault]>([])
        dma.setFaultHandler { f in faults.withLock { $0.append(f) } }
        let view = DMAGuestMemory(translator: dma)
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
        XCTAssertEqual(faults.withLock { $0 }, [DMAFault(iova: unmapped, length: 512, access: .write, reason: .unmapped)])
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
}
