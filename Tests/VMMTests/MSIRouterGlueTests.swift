import KVM
import PCI
import XCTest
@testable import VMM

/// `KVMMSIRouter` over a recording VM: which GSI routes and irqfds each
/// MSI/MSI-X change installs and removes.
final class MSIRouterGlueTests: XCTestCase {
    let nic = PCIAddress(device: 3)
    let disk = PCIAddress(device: 4)
    let a = MSIMessage(address: 0xFEE0_0000, data: 0x4021)
    let b = MSIMessage(address: 0xFEE0_1000, data: 0x4022)

    func msi(_ gsi: UInt32, _ m: MSIMessage) -> GSIRoute { .msi(gsi: gsi, address: m.address, data: m.data) }

    func testUnmaskInstallsRouteAndIRQFDMaskRemovesThem() throws {
        let vm = RecordingVM()
        let r = KVMMSIRouter(vm: vm, logger: RecordingLog().logger)
        r.configure(device: nic, vector: 0, message: a)
        let fd = try r.eventFDs(device: nic, count: 1)[0]
        // KVM_SET_GSI_ROUTING replaces the table: the defaults always go with the MSI route.
        XCTAssertEqual(vm.take(), [.gsiRouting(GSIRoute.defaultX86 + [msi(24, a)]), .irqfd(fd: fd, gsi: 24, resample: nil)])

        r.configure(device: nic, vector: 0, message: nil)
        XCTAssertEqual(vm.take(), [.gsiRouting(GSIRoute.defaultX86), .irqfdOff(fd: fd, gsi: 24)])

        // Unmasked again, elsewhere: the same GSI and eventfd, the new message.
        r.configure(device: nic, vector: 0, message: b)
        XCTAssertEqual(vm.take(), [.gsiRouting(GSIRoute.defaultX86 + [msi(24, b)]), .irqfd(fd: fd, gsi: 24, resample: nil)])

        // Retargeted while unmasked: only the route changes, the irqfd stays.
        r.configure(device: nic, vector: 0, message: a)
        XCTAssertEqual(vm.take(), [.gsiRouting(GSIRoute.defaultX86 + [msi(24, a)])])
    }

    func testEachVectorGetsItsOwnGSIAndRoutesAreSorted() throws {
        let vm = RecordingVM()
        let r = KVMMSIRouter(vm: vm, logger: RecordingLog().logger)
        r.configure(device: nic, vector: 2, message: a)
        r.configure(device: disk, vector: 0, message: b)
        let nic2 = try r.eventFDs(device: nic, count: 3)[2]
        let disk0 = try r.eventFDs(device: disk, count: 1)[0]
        XCTAssertNotEqual(nic2, disk0)
        XCTAssertEqual(vm.take(), [
            .gsiRouting(GSIRoute.defaultX86 + [msi(24, a)]), .irqfd(fd: nic2, gsi: 24, resample: nil),
            .gsiRouting(GSIRoute.defaultX86 + [msi(24, a), msi(25, b)]), .irqfd(fd: disk0, gsi: 25, resample: nil),
        ])
        // Masking one vector keeps the other's route.
        r.configure(device: nic, vector: 2, message: nil)
        XCTAssertEqual(vm.take(), [.gsiRouting(GSIRoute.defaultX86 + [msi(25, b)]), .irqfdOff(fd: nic2, gsi: 24)])
    }

    func testAssignedDeviceEventFDsComeFirstWithoutKVMCalls() throws {
        // An assigned device's vectors get their eventfds (for VFIO) before the
        // guest programs them; KVM hears of a vector only once it has a message.
        let vm = RecordingVM()
        let r = KVMMSIRouter(vm: vm, logger: RecordingLog().logger)
        let fds = try r.eventFDs(device: nic, count: 2)
        XCTAssertEqual(Set(fds).count, 2)
        XCTAssertEqual(try r.eventFDs(device: nic, count: 2), fds, "the same eventfds on every call")
        XCTAssertEqual(vm.take(), [])
        r.configure(device: nic, vector: 1, message: a)
        XCTAssertEqual(vm.take(), [.gsiRouting(GSIRoute.defaultX86 + [msi(25, a)]), .irqfd(fd: fds[1], gsi: 25, resample: nil)])
    }

    func testMaskingAVectorNeverConfiguredDoesNothing() {
        let vm = RecordingVM()
        let r = KVMMSIRouter(vm: vm, logger: RecordingLog().logger)
        r.configure(device: nic, vector: 5, message: nil)
        r.signal(device: nic, vector: 5)
        XCTAssertEqual(vm.take(), [])
    }

    func testRoutingFailureIsLoggedAndRetriedOnTheNextChange() throws {
        let vm = RecordingVM()
        let log = RecordingLog()
        let r = KVMMSIRouter(vm: vm, logger: log.logger)
        vm.failing = { if case .gsiRouting = $0 { return true }; return false }
        r.configure(device: nic, vector: 0, message: a)
        XCTAssertEqual(vm.take(), [.gsiRouting(GSIRoute.defaultX86 + [msi(24, a)])], "no irqfd without its route")
        XCTAssertEqual(log.messages.count, 1)
        XCTAssertTrue(log.messages[0].hasPrefix("error: 0000:00:03.0 MSI vector 0: refused"), log.messages[0])

        vm.failing = { _ in false }
        r.configure(device: nic, vector: 0, message: b)
        let fd = try r.eventFDs(device: nic, count: 1)[0]
        XCTAssertEqual(vm.take(), [.gsiRouting(GSIRoute.defaultX86 + [msi(24, b)]), .irqfd(fd: fd, gsi: 24, resample: nil)])
    }

    func testISALineDrivesTheIRQChip() {
        let vm = RecordingVM()
        let log = RecordingLog()
        let line = KVMIRQLine(vm: vm, irq: 4) { log.append($0) }
        line.setLevel(true)
        line.setLevel(false)
        XCTAssertEqual(vm.take(), [.irqLine(4, level: true), .irqLine(4, level: false)])
        vm.failing = { _ in true }
        line.setLevel(true)
        XCTAssertEqual(log.messages, ["IRQ 4: refused irqLine(4, true)"])
    }
}
