import GuestMemory
import KVM
import PCI
import TestFakes
import Virtio
import XCTest
@testable import VMM

/// `VirtioNotifier` over a recording VM: each queue's ioeventfd sits at BAR 0 +
/// its notify offset and follows BAR 0 when the guest moves it or stops decoding it.
final class VirtioNotifierGlueTests: XCTestCase {
    let at = PCIAddress(device: 5)

    /// A virtio-console transport (receive and transmit queues at least) and its notify offsets.
    func transport() throws -> (VirtioPCIDevice, [UInt64]) {
        let t = try VirtioPCIDevice(device: VirtioConsole(output: RecordingConsole()), memory: ArrayGuestMemory(size: 0x1000))
        var offsets: [UInt64] = []
        while let (bar, offset) = t.notifyAddress(forQueue: offsets.count), bar == VirtioPCIDevice.Layout.bar { offsets.append(offset) }
        XCTAssertGreaterThanOrEqual(offsets.count, 2)
        return (t, offsets)
    }

    /// The eventfd of each queue, from the registrations in `calls`.
    func fds(_ calls: [RecordingVM.Call]) -> [Int32] {
        calls.compactMap { if case let .ioeventfd(fd, _, _, _, _) = $0 { return fd }; return nil }
    }

    func on(_ fd: Int32, _ address: UInt64) -> RecordingVM.Call {
        .ioeventfd(fd: fd, address: address, length: 2, pio: false, datamatch: nil)
    }

    func off(_ fd: Int32, _ address: UInt64) -> RecordingVM.Call {
        .ioeventfdOff(fd: fd, address: address, length: 2, pio: false, datamatch: nil)
    }

    func testQueuesFollowBAR0() throws {
        let vm = RecordingVM()
        let n = VirtioNotifier(vm: vm, logger: RecordingLog().logger)
        let (t, offsets) = try transport()
        try n.register(t, at: at, bar0: 0xE000_0000, thread: "io-test")
        let first = vm.take()
        let fd = fds(first)
        XCTAssertEqual(Set(fd).count, offsets.count, "one eventfd per queue")
        XCTAssertEqual(n.queueCount, offsets.count)
        XCTAssertEqual(first, offsets.indices.map { on(fd[$0], 0xE000_0000 + offsets[$0]) })

        // Moved: each queue leaves the old address before it takes the new one.
        n.barMoved(device: at, bar: 0, to: 0xF000_0000)
        XCTAssertEqual(vm.take(), offsets.indices.flatMap { [off(fd[$0], 0xE000_0000 + offsets[$0]), on(fd[$0], 0xF000_0000 + offsets[$0])] })

        // Same address again, another BAR, another device: nothing to do.
        n.barMoved(device: at, bar: 0, to: 0xF000_0000)
        n.barMoved(device: at, bar: 1, to: 0xD000_0000)
        n.barMoved(device: PCIAddress(device: 6), bar: 0, to: 0xD000_0000)
        XCTAssertEqual(vm.take(), [])

        // Not decoding (memory space off): deassigned only, once.
        n.barMoved(device: at, bar: 0, to: nil)
        n.barMoved(device: at, bar: 0, to: nil)
        XCTAssertEqual(vm.take(), offsets.indices.map { off(fd[$0], 0xF000_0000 + offsets[$0]) })

        // Decoding again.
        n.barMoved(device: at, bar: 0, to: 0xE000_0000)
        XCTAssertEqual(vm.take(), offsets.indices.map { on(fd[$0], 0xE000_0000 + offsets[$0]) })
    }

    func testUndecodedBARRegistersOnFirstPlacement() throws {
        let vm = RecordingVM()
        let n = VirtioNotifier(vm: vm, logger: RecordingLog().logger)
        let (t, offsets) = try transport()
        try n.register(t, at: at, bar0: nil, thread: "io-test")
        XCTAssertEqual(vm.take(), [])
        n.barMoved(device: at, bar: 0, to: 0xC000_0000)
        let calls = vm.take()
        XCTAssertEqual(calls, offsets.indices.map { on(fds(calls)[$0], 0xC000_0000 + offsets[$0]) })
    }

    func testRefusedIOEventFDFallsBackToTheMMIOExit() throws {
        let vm = RecordingVM()
        let log = RecordingLog()
        let n = VirtioNotifier(vm: vm, logger: log.logger)
        let (t, offsets) = try transport()
        vm.failing = { if case let .ioeventfd(_, a, _, _, _) = $0 { return a == 0xE000_0000 + offsets[0] }; return false }
        try n.register(t, at: at, bar0: 0xE000_0000, thread: "io-test")
        let fd = fds(vm.take())
        XCTAssertEqual(log.messages.count, 1)
        XCTAssertTrue(log.messages[0].hasPrefix("warning: ioeventfd for queue 0 at 0x\(String(0xE000_0000 + offsets[0], radix: 16)): refused"), log.messages[0])
        XCTAssertTrue(log.messages[0].hasSuffix("; notifications take the MMIO exit"), log.messages[0])

        // Queue 0 was never registered, so the move deassigns only queue 1.
        vm.failing = { _ in false }
        n.barMoved(device: at, bar: 0, to: 0xF000_0000)
        XCTAssertEqual(vm.take(), [on(fd[0], 0xF000_0000 + offsets[0]), off(fd[1], 0xE000_0000 + offsets[1]), on(fd[1], 0xF000_0000 + offsets[1])]
                       + offsets.indices.dropFirst(2).flatMap { [off(fd[$0], 0xE000_0000 + offsets[$0]), on(fd[$0], 0xF000_0000 + offsets[$0])] })
    }

    func testBARAtTheTopOfTheAddressSpaceGetsNoIOEventFD() throws {
        let vm = RecordingVM()
        let n = VirtioNotifier(vm: vm, logger: RecordingLog().logger)
        let (t, _) = try transport()
        try n.register(t, at: at, bar0: UInt64.max - 0xFFF, thread: "io-test")
        XCTAssertEqual(vm.take(), [], "notify address would overflow: no registration, no trap")
    }
}
