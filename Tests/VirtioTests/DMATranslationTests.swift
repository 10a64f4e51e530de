import GuestMemory
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
}
