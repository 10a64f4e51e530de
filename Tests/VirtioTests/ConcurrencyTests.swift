import Dispatch
import Foundation
import GuestMemory
import TestFakes
@testable import Virtio
import XCTest

/// Several "vCPUs" hammer one device at once: notifications, ISR reads,
/// vector moves, host input, config changes and resets. Passing means no
/// deadlock (the lock order in the README holds) and no trap.
final class ConcurrencyTests: XCTestCase {
    func testConcurrentAccessesDoNotDeadlock() throws {
        // Each access holds the memory's lock, as a byte copy in real RAM is
        // atomic with respect to the others.
        let memory = ArrayGuestMemory(size: 0x10_0000)
        let console = VirtioConsole(output: RecordingConsole())
        let d = try PCIDriver(console, memory: memory)
        let rx = FakeDriver(memory: memory, size: 64, base: 0x1000)
        let tx = FakeDriver(memory: memory, size: 64, base: 0x4000)
        d.initialize(features: VirtioSpec.Feature.version1 | VirtioConsole.featureSize,
                     queues: [(0, rx, 0xFFFF), (1, tx, 0xFFFF)])
        typealias C = VirtioPCICommonConfig.Offset

        let group = DispatchGroup()
        let iterations = 20000
        // vCPU 0: the driver's transmit path.
        DispatchQueue.global().async(group: group) {
            for i in 0..<iterations {
                tx.nextDescriptor = UInt16(i % 64)
                tx.post([(0x8000, 4, false)])
                d.notify(1)
            }
        }
        // vCPU 1: the interrupt handler and config reads.
        DispatchQueue.global().async(group: group) {
            for i in 0..<iterations {
                _ = d.barRead(0x1000, 1)
                _ = d.barRead(0x2000, 4)
                _ = d.barRead(UInt64(C.configGeneration), 1)
                d.barWrite(UInt64(C.queueSelect), UInt64(i % 2), 2)
                d.barWrite(UInt64(C.queueMSIXVector), UInt64(i % 4), 2)
            }
        }
        // Host threads: console input and resizes.
        DispatchQueue.global().async(group: group) {
            for i in 0..<iterations {
                console.enqueueInput([UInt8(truncatingIfNeeded: i)])
                console.setSize(cols: UInt16(80 + i % 2), rows: 25)
                if i % 10 == 0 { d.dev.notifyQueue(0) }
            }
        }
        // vCPU 2: a driver that resets the device now and then.
        DispatchQueue.global().async(group: group) {
            for i in 0..<50 {
                d.status = 0
                d.status = UInt64(1 | 2 | (i % 2 == 0 ? 0 : 8))
                d.cfgWrite(0x04, UInt64(i % 2 == 0 ? 0x0406 : 0x0002), 2) // INTx disable on and off
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success, "deadlock")
        XCTAssertEqual(d.cfgRead(0, 2), 0x1AF4)
    }
}
