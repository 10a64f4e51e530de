import Dispatch
import Synchronization
import TestFakes
import XCTest
@testable import PCI

/// Counts router calls from any thread.
final class CountingRouter: MSIRouter {
    let configures = Atomic<Int>(0)
    let signals = Atomic<Int>(0)
    func configure(device: PCIAddress, vector: Int, message: MSIMessage?) { configures.add(1, ordering: .relaxed) }
    func signal(device: PCIAddress, vector: Int) { signals.add(1, ordering: .relaxed) }
}

final class ConcurrencyTests: XCTestCase {
    /// vCPU-like threads reprogram BARs and MSI-X through ECAM and the
    /// windows while "device" threads trigger vectors: no deadlock, no trap,
    /// and every trigger ends up either delivered or pending.
    func testConcurrentConfigBarAndTriggers() throws {
        let router = CountingRouter()
        let bus = PCIRootBus(windows: testWindows, msiRouter: router)
        var c = PCIConfigSpace.type0(vendorID: 1, deviceID: 2, classCode: 0, interruptPin: .intA)
        try c.setBar(0, size: 0x4000, kind: .memory32)
        let dev = try PCIFunction(config: c, msix: MSIXConfiguration(vectors: 4, tableBar: 0, tableOffset: 0x2000,
                                                                     pbaBar: 0, pbaOffset: 0x3000))
        let address = try bus.attach(dev)
        let cap = try XCTUnwrap(dev.msixCapabilityOffset)
        let moves = Atomic<Int>(0)
        bus.onBarMoved = { _, _, _, _ in moves.add(1, ordering: .relaxed) }
        let triggers = 2000

        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            var rng = SplitMix64(seed: UInt64(worker + 1))
            for i in 0..<triggers {
                switch worker {
                case 0:
                    // Toggle enable/function mask.
                    let v: UInt64 = [0x8000, 0xC000, 0x0000, 0x8000][i % 4]
                    write(bus.configMMIO, ecam(dev: UInt64(address.device), reg: UInt64(cap + 2)), v, 2)
                case 1:
                    // Program and (un)mask entries through the window.
                    let vector = rng.next() % 4
                    write(bus.mmio32Router, 0x2000 + 16 * vector, 0xFEE0_0000, 4)
                    write(bus.mmio32Router, 0x2000 + 16 * vector + 12, rng.next() % 2, 4)
                case 2:
                    // Move the BAR back and forth.
                    let base: UInt64 = i % 2 == 0 ? 0xC001_0000 : 0xC000_0000
                    write(bus.configMMIO, ecam(dev: UInt64(address.device), reg: 0x10), base, 4)
                    _ = read(bus.mmio32Router, 0x3000, 8)
                default:
                    dev.signalMSIX(vector: i % 4)
                }
            }
        }
        // Deliver everything left: enable, unmask all.
        for v: UInt64 in 0..<4 { barWrite(dev, 0, 0x2000 + 16 * v + 12, 0, 4) }
        write(bus.configMMIO, ecam(dev: UInt64(address.device), reg: UInt64(cap + 2)), 0x8000, 2)
        XCTAssertEqual(barRead(dev, 0, 0x3000, 8), 0, "nothing left pending once deliverable")
        XCTAssertGreaterThan(router.signals.load(ordering: .relaxed), 0)
        XCTAssertLessThanOrEqual(router.signals.load(ordering: .relaxed), triggers)
        XCTAssertGreaterThan(moves.load(ordering: .relaxed), 0)
    }
}
