import GuestMemory
import TestFakes
@testable import Virtio
import XCTest

/// Deterministic fuzz loops: random ring contents, random register writes.
/// Passing means no trap (a trap would crash the test process) and the
/// invariants checked along the way hold.
final class FuzzTests: XCTestCase {
    /// Memory with a hole, so random addresses hit RAM, the hole and beyond.
    private func makeMemory() throws -> ArrayGuestMemory {
        try ArrayGuestMemory(regions: [(base: 0, size: 0x8000), (base: 0x10000, size: 0x4000)])
    }

    /// Random bytes over the queue's rings and a scratch area, biased towards
    /// small indices and plausible flags so chains get deep before failing.
    private func scramble(_ memory: ArrayGuestMemory, _ d: FakeDriver, _ rng: inout SplitMix64) {
        let size = UInt64(d.size)
        for i in 0..<size where rng.next() % 3 == 0 {
            let r1 = rng.next(), r2 = rng.next(), r3 = rng.next()
            let addrs: [UInt64] = [0x4000, 0x10000 + r1 % 0x3F00, 0x5000 + r2 % 0x2000, 0x4000,
                                   0x10000 + r2 % 0x3F00, r3, 0x7FF0, 0xFFFF_FFFF_FFFF_FFF0]
            let lens: [UInt64] = [16, 32, 48, r1 % 64, 16, 32, r3 % 64, r2]
            let addr = addrs[Int(rng.next() % 8)]
            let len = UInt32(truncatingIfNeeded: lens[Int(rng.next() % 8)])
            let flags = UInt16(truncatingIfNeeded: rng.next() % 8)
            let next = UInt16(truncatingIfNeeded: rng.next() % (size + 2))
            d.setDescriptor(UInt16(i), addr: addr, len: len, flags: flags, next: next)
        }
        // An indirect table area at 0x4000.
        var table: [UInt8] = []
        for _ in 0..<8 {
            table += FakeDriver.descriptorBytes(addr: 0x10000 + rng.next() % 0x4000, len: UInt32(rng.next() % 128),
                                                flags: UInt16(truncatingIfNeeded: rng.next() % 8),
                                                next: UInt16(truncatingIfNeeded: rng.next() % 10))
        }
        try? memory.writeBytes(table, at: GuestAddress(0x4000))
        for slot in 0..<size {
            try? memory.writeInteger(UInt16(truncatingIfNeeded: rng.next() % (size + 1)),
                                     at: GuestAddress(d.availRing + 4 + 2 * slot))
        }
        if rng.next() % 2 == 0 { d.usedEvent = UInt16(truncatingIfNeeded: rng.next()) }
        if rng.next() % 4 == 0 { d.availFlags = UInt16(truncatingIfNeeded: rng.next() % 3) }
    }

    func testRandomRingsNeverTrapTheQueue() throws {
        var rng = SplitMix64(seed: 0x5EED_0001)
        let memory = try makeMemory()
        var outcomes: [String: Int] = [:]
        for iteration in 0..<3000 {
            let size = UInt16(1) << UInt16(rng.next() % 6)
            let d = FakeDriver(memory: memory, size: size, base: 0x1000)
            let features = rng.next() & (VirtioSpec.Feature.indirectDescriptors | VirtioSpec.Feature.eventIndex)
            var q = try d.makeQueue(features: features)
            for _ in 0..<4 {
                scramble(memory, d, &rng)
                let jump = UInt16(truncatingIfNeeded: rng.next() % 4 == 0 ? rng.next() : rng.next() % UInt64(size + 1))
                d.setAvailIndex(q.nextAvail &+ jump)
                for _ in 0..<(Int(size) + 2) {
                    do {
                        guard let chain = try q.popAvailable(memory: memory) else {
                            outcomes["empty", default: 0] += 1
                            break
                        }
                        XCTAssertLessThan(chain.head, size)
                        XCTAssertLessThanOrEqual(chain.readableLength + chain.writableLength, 1 << 32)
                        for s in chain.segments where s.length > 0 {
                            XCTAssertTrue(memory.contains(s.address, length: UInt64(s.length)), "iteration \(iteration)")
                        }
                        _ = try? chain.writeWritable([UInt8](repeating: 0xAB, count: 8), memory: memory)
                        try q.addUsed(head: chain.head, len: UInt32(min(chain.writableLength, 8)), memory: memory)
                        outcomes["chain", default: 0] += 1
                    } catch let e as VirtqueueError {
                        outcomes[Mirror(reflecting: e).children.first?.label ?? "\(e)", default: 0] += 1
                        break
                    }
                }
                _ = try q.needsNotification(memory: memory)
                if rng.next() % 2 == 0 { try q.disableNotifications(memory: memory) }
                _ = try? q.enableNotifications(memory: memory)
            }
        }
        // The loop must have exercised both sides.
        XCTAssertGreaterThan(outcomes["chain", default: 0], 1000, "\(outcomes)")
        XCTAssertGreaterThan(outcomes.count, 10, "many distinct errors: \(outcomes)")
        print("queue fuzz outcomes: \(outcomes.sorted { $0.key < $1.key })")
    }

    func testRandomRingsNeverTrapTheDevices() throws {
        var rng = SplitMix64(seed: 0x5EED_0002)
        let memory = try makeMemory()
        var errors = 0
        for _ in 0..<500 {
            let irq = RecordingInterrupt()
            let d0 = FakeDriver(memory: memory, size: 8, base: 0x1000)
            let d1 = FakeDriver(memory: memory, size: 8, base: 0x2000)
            let features = VirtioSpec.Feature.version1
                | (rng.next() & (VirtioSpec.Feature.indirectDescriptors | VirtioSpec.Feature.eventIndex))
            let rngDevice = VirtioRNG(source: CountingEntropy())
            try rngDevice.activate(memory: memory, features: features, queues: [d0.makeQueue(features: features)], interrupt: irq)
            let console = VirtioConsole(output: RecordingConsole())
            try console.activate(memory: memory, features: features,
                                 queues: [d0.makeQueue(features: features), d1.makeQueue(features: features)], interrupt: irq)
            for _ in 0..<3 {
                scramble(memory, d0, &rng)
                scramble(memory, d1, &rng)
                d0.setAvailIndex(UInt16(truncatingIfNeeded: rng.next() % 10))
                d1.setAvailIndex(UInt16(truncatingIfNeeded: rng.next() % 10))
                rngDevice.queueNotified(Int(rng.next() % 2))
                console.enqueueInput([1, 2, 3])
                console.queueNotified(Int(rng.next() % 3))
            }
            errors += irq.errors.count
        }
        XCTAssertGreaterThan(errors, 0)
    }

    func testRandomCommonConfigAccessesNeverTrap() {
        var rng = SplitMix64(seed: 0x5EED_0003)
        var c = VirtioPCICommonConfig(offeredFeatures: VirtioSpec.Feature.version1 | 1, queueMaxSizes: [256, 16], msixVectors: 3)
        for _ in 0..<50000 {
            let offset = rng.next() % 4 == 0 ? rng.next() : rng.next() % 0x40
            let width = [0, 1, 2, 3, 4, 8, 9][Int(rng.next() % 7)]
            var bytes = (0..<width).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if rng.next() % 2 == 0 {
                _ = bytes.withUnsafeBytes { c.write(offset: offset, data: $0) }
            } else {
                bytes.withUnsafeMutableBytes { c.read(offset: offset, data: $0) }
            }
            // Invariants the driver may rely on.
            for q in c.queues {
                XCTAssertTrue(q.size > 0 && q.size <= q.maxSize && q.size & (q.size - 1) == 0)
                XCTAssertTrue(q.msixVector == 0xFFFF || q.msixVector < 3)
            }
            XCTAssertTrue(c.configMSIXVector == 0xFFFF || c.configMSIXVector < 3)
            if c.status & VirtioSpec.Status.featuresOK != 0 {
                XCTAssertEqual(c.driverFeatures & ~c.offeredFeatures, 0)
            }
        }
    }
}
