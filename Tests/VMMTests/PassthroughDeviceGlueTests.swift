import CShim
import KVM
import PCI
import TestFakes
import VFIO
import VMConfig
import XCTest
@testable import VMM

/// `PassthroughDevice` over a recording VM and a fake vfio-pci device: BAR
/// moves become memory-slot changes, interrupt-mode changes become irqfds
/// and VFIO_DEVICE_SET_IRQS.
final class PassthroughDeviceGlueTests: XCTestCase {
    static let bdf = "0000:01:00.0"
    let guestAddress = PCIAddress(device: 7)
    static let trigger = SHIM_VFIO_IRQ_SET_DATA_EVENTFD | SHIM_VFIO_IRQ_SET_ACTION_TRIGGER
    static let unmask = SHIM_VFIO_IRQ_SET_DATA_EVENTFD | SHIM_VFIO_IRQ_SET_ACTION_UNMASK
    static let disable = SHIM_VFIO_IRQ_SET_DATA_NONE | SHIM_VFIO_IRQ_SET_ACTION_TRIGGER

    struct Rig {
        let vm: RecordingVM
        let log: RecordingLog
        let fake: FakeVFIODevice
        let io: FakeDeviceIO
        let router: KVMMSIRouter
        let device: PassthroughDevice
    }

    /// A bound device (BAR0: 64 KiB, mmap-able except 0x1000-0x2fff; BAR2: 8 GiB,
    /// 64-bit, all mmap-able; BAR4: 256 bytes, trapped) with its PCI model built.
    func rig(msi: Bool = false, request: Bool = false) throws -> Rig {
        let vm = RecordingVM(), log = RecordingLog(), fake = FakeVFIODevice(), io = FakeDeviceIO()
        if msi { fake.irqs[SHIM_VFIO_PCI_MSI_IRQ_INDEX] = (SHIM_VFIO_IRQ_INFO_EVENTFD, 1) }
        if request { fake.irqs[SHIM_VFIO_PCI_REQ_IRQ_INDEX] = (SHIM_VFIO_IRQ_INFO_EVENTFD, 1) }
        var config = [UInt8](repeating: 0, count: 256)
        config.replaceSubrange(0..<4, with: [0x86, 0x80, 0xD3, 0x10])
        config[0x18] = 0x04 // BAR2: 64-bit memory
        config[0x3D] = 1 // INTA#
        let c = config
        io.content = { o in
            let off = o &- FakeVFIODevice.at(7)
            return off < UInt64(c.count) ? c[Int(off)] : 0
        }
        let vfio = AssignedVFIODevice(cdev: VFIODeviceCdev(performer: fake.performer, path: "/dev/vfio/devices/vfio0", bdf: Self.bdf),
                                      io: io, bdf: Self.bdf, cdevPath: "/dev/vfio/devices/vfio0")
        let iommufd = IOMMUFD(performer: FakePerformer())
        try vfio.bindAndAttach(IOMMUContext(iommufd: iommufd, ioas: try iommufd.allocateIOAS()))
        let router = KVMMSIRouter(vm: vm, logger: log.logger)
        let d = PassthroughDevice(device: vfio, name: Self.bdf, kind: "passthrough", barAddresses: [:],
                                  entryDescription: "passthrough[0].device \(Self.bdf)", behindVIOMMU: true, vm: vm, router: router,
                                  slots: MemorySlotPool(first: 2), logger: log.logger)
        _ = try d.makeModel()
        return Rig(vm: vm, log: log, fake: fake, io: io, router: router, device: d)
    }

    /// The host address `FakeDeviceIO` gives its `k`-th mmap (1-based).
    func host(_ k: UInt64) -> UInt64 { 0x7000_0000_0000 + k << 36 }

    func slot(_ s: UInt32, _ guest: UInt64, _ size: UInt64, _ host: UInt64) -> RecordingVM.Call {
        .memorySlot(s, guestAddress: guest, size: size, hostAddress: host, readOnly: false)
    }

    func deleted(_ s: UInt32) -> RecordingVM.Call { slot(s, 0, 0, 0) }

    // MARK: BAR moves

    func testBARMoveDeletesTheOldSlotsThenMapsTheSameHostPagesAtTheNewAddress() throws {
        let r = try rig()
        XCTAssertEqual(r.io.maps.map(\.offset), [FakeVFIODevice.at(0), FakeVFIODevice.at(0) + 0x3000, FakeVFIODevice.at(2)])
        XCTAssertEqual(r.io.maps.map(\.length), [0x1000, 0xD000, 8 * FakeVFIODevice.gib])
        XCTAssertEqual(r.vm.take(), [], "nothing is mapped before the BAR has an address")

        r.device.barMoved(0, to: 0xE000_0000)
        XCTAssertEqual(r.vm.take(), [slot(2, 0xE000_0000, 0x1000, host(1)), slot(3, 0xE000_3000, 0xD000, host(2))],
                       "the trapped page 0x1000-0x2fff gets no slot")

        r.device.barMoved(2, to: 0x80_0000_0000)
        XCTAssertEqual(r.vm.take(), [slot(4, 0x80_0000_0000, 8 * FakeVFIODevice.gib, host(3))])

        // BAR0 moves: its two slots go, then come back at the new address over
        // the same host pages (slots reused, last freed first); BAR2 is untouched.
        r.device.barMoved(0, to: 0xF000_0000)
        XCTAssertEqual(r.vm.take(), [deleted(2), deleted(3), slot(3, 0xF000_0000, 0x1000, host(1)), slot(2, 0xF000_3000, 0xD000, host(2))])

        // Memory decoding off: deleted only, and only once.
        r.device.barMoved(0, to: nil)
        r.device.barMoved(0, to: nil)
        XCTAssertEqual(r.vm.take(), [deleted(3), deleted(2)])

        // A BAR with nothing mapped directly (BAR4) never touches the slots.
        r.device.barMoved(4, to: 0xE100_0000)
        XCTAssertEqual(r.vm.take(), [])
        XCTAssertEqual(r.log.messages, [])
    }

    func testRefusedSlotIsLoggedAndNotDeletedLater() throws {
        let r = try rig()
        let refused = slot(3, 0xE000_3000, 0xD000, host(2))
        r.vm.failing = { $0 == refused }
        r.device.barMoved(0, to: 0xE000_0000)
        XCTAssertEqual(r.vm.take(), [slot(2, 0xE000_0000, 0x1000, host(1)), slot(3, 0xE000_3000, 0xD000, host(2))])
        XCTAssertEqual(r.log.messages.count, 1)
        XCTAssertTrue(r.log.messages[0].hasPrefix("error: passthrough \(Self.bdf) BAR 0 at 0xe0003000: refused"), r.log.messages[0])
        XCTAssertTrue(r.log.messages[0].hasSuffix("; accesses will trap instead"), r.log.messages[0])

        r.vm.failing = { _ in false }
        r.device.barMoved(0, to: nil)
        XCTAssertEqual(r.vm.take(), [deleted(2)], "only the slot that was installed is deleted")
    }

    // MARK: Interrupt modes

    func testINTxIsAResampledIRQFDThatLeavingTheModeRemoves() throws {
        let r = try rig()
        r.device.attached(at: guestAddress)
        r.device.setInterruptMode(.intx(gsi: 17))
        let calls = r.vm.take()
        guard calls.count == 1, case let .irqfd(trigger, 17, resample?) = calls[0] else { return XCTFail("\(calls)") }
        XCTAssertNotEqual(trigger, resample)
        // VFIO signals the trigger eventfd, and KVM's EOI on the resample one unmasks the line.
        XCTAssertEqual(r.fake.irqSets.map(\.index), [0, 0])
        XCTAssertEqual(r.fake.irqSets.map(\.flags), [Self.trigger, Self.unmask])
        XCTAssertEqual(r.fake.irqSets.map(\.eventfds), [[trigger], [resample]])

        r.device.setInterruptMode(.intx(gsi: 17))
        XCTAssertEqual(r.vm.take(), [], "no change, nothing done")

        r.device.setInterruptMode(.none)
        XCTAssertEqual(r.vm.take(), [.irqfdOff(fd: trigger, gsi: 17)])
        XCTAssertEqual(r.fake.irqSets.count, 3)
        XCTAssertEqual(r.fake.irqSets[2].index, 0)
        XCTAssertEqual(r.fake.irqSets[2].flags, Self.disable)
        XCTAssertEqual(r.fake.irqSets[2].count, 0)
    }

    func testSwitchingFromINTxToMSIXTearsDownINTxAndHandsVFIOTheRoutersEventFDs() throws {
        let r = try rig()
        r.device.attached(at: guestAddress)
        r.device.setInterruptMode(.intx(gsi: 18))
        guard case let .irqfd(trigger, 18, _)? = r.vm.take().first else { return XCTFail("no INTx irqfd") }
        let before = r.fake.irqSets.count

        r.device.setInterruptMode(.msix(vectors: 3))
        XCTAssertEqual(r.vm.take(), [.irqfdOff(fd: trigger, gsi: 18)], "the INTx irqfd goes; MSI-X vectors reach KVM only when unmasked")
        let sets = Array(r.fake.irqSets.dropFirst(before))
        let vectors = try r.router.eventFDs(device: guestAddress, count: 3)
        XCTAssertEqual(sets.map(\.index), [SHIM_VFIO_PCI_INTX_IRQ_INDEX, SHIM_VFIO_PCI_MSIX_IRQ_INDEX])
        XCTAssertEqual(sets.map(\.flags), [Self.disable, Self.trigger])
        XCTAssertEqual(sets[1].eventfds, vectors)

        // The guest unmasks vector 2: its route and irqfd use the eventfd VFIO signals.
        let m = MSIMessage(address: 0xFEE0_0000, data: 0x4031)
        r.router.configure(device: guestAddress, vector: 2, message: m)
        XCTAssertEqual(r.vm.take(), [.gsiRouting(GSIRoute.defaultX86 + [.msi(gsi: 26, address: m.address, data: m.data)]),
                                     .irqfd(fd: vectors[2], gsi: 26, resample: nil)])

        // Back to INTx: MSI-X off in VFIO, a fresh INTx irqfd.
        r.device.setInterruptMode(.intx(gsi: 18))
        let back = r.vm.take()
        guard back.count == 1, case .irqfd(_, 18, _?) = back[0] else { return XCTFail("\(back)") }
        XCTAssertEqual(r.fake.irqSets.dropFirst(before + 2).first?.index, SHIM_VFIO_PCI_MSIX_IRQ_INDEX)
        XCTAssertEqual(r.fake.irqSets.dropFirst(before + 2).first?.flags, Self.disable)
    }

    func testMSIUsesVectorZerosEventFD() throws {
        let r = try rig(msi: true)
        r.device.attached(at: guestAddress)
        r.device.setInterruptMode(.msix(vectors: 2))
        r.device.setInterruptMode(.msi(vectors: 1))
        let sets = r.fake.irqSets
        XCTAssertEqual(sets.map(\.index), [SHIM_VFIO_PCI_MSIX_IRQ_INDEX, SHIM_VFIO_PCI_MSIX_IRQ_INDEX, SHIM_VFIO_PCI_MSI_IRQ_INDEX])
        XCTAssertEqual(sets.map(\.flags), [Self.trigger, Self.disable, Self.trigger])
        XCTAssertEqual(sets[2].eventfds, [try r.router.eventFDs(device: guestAddress, count: 1)[0]])
        XCTAssertEqual(r.vm.take(), [], "MSI(-X) mode changes alone never touch KVM")
    }

    func testMSIXBeforeAttachIsRefusedAndLogged() throws {
        let r = try rig()
        r.device.setInterruptMode(.msix(vectors: 1))
        XCTAssertEqual(r.fake.irqSets.count, 0)
        XCTAssertEqual(r.log.messages, ["error: passthrough \(Self.bdf): cannot switch interrupts to msix(vectors: 1): MSI-X enabled before the device was attached"])
        // The mode stayed none: INTx afterwards has nothing to tear down first.
        r.device.attached(at: guestAddress)
        r.device.setInterruptMode(.intx(gsi: 16))
        XCTAssertEqual(r.fake.irqSets.map(\.flags), [Self.trigger, Self.unmask])
    }

    func testShutdownRemovesTheINTxIRQFD() throws {
        let r = try rig()
        r.device.attached(at: guestAddress)
        r.device.setInterruptMode(.intx(gsi: 19))
        guard case let .irqfd(trigger, 19, _)? = r.vm.take().first else { return XCTFail("no INTx irqfd") }
        XCTAssertTrue(r.device.shutdown().hasSuffix("and released"))
        XCTAssertEqual(r.vm.take(), [.irqfdOff(fd: trigger, gsi: 19)])
        XCTAssertTrue(try XCTUnwrap(r.device.vfio).isClosed)
    }

    /// vfio-pci's request notification (the host removing the device) goes
    /// to an eventfd when the device has one; answering it releases the
    /// device: interrupts off, BAR slots deleted, closed, and from then on
    /// the guest reads all ones and nothing reaches VFIO or KVM.
    func testReleaseWhenTheHostAsksTurnsTheDeviceIntoOnePulledOut() throws {
        XCTAssertFalse(try XCTUnwrap(rig().device.vfio).notifyOnRequest(eventfd: 42), "no request notification offered")
        let r = try rig(request: true)
        XCTAssertTrue(try XCTUnwrap(r.device.vfio).notifyOnRequest(eventfd: 42))
        XCTAssertEqual(r.fake.irqSets.last.map { [$0.index, $0.flags] }, [SHIM_VFIO_PCI_REQ_IRQ_INDEX, Self.trigger])
        XCTAssertEqual(r.fake.irqSets.last?.eventfds, [42])
        r.device.attached(at: guestAddress)
        r.device.barMoved(0, to: 0xE000_0000)
        r.device.setInterruptMode(.intx(gsi: 19))
        let calls = r.vm.take()
        guard case let .irqfd(trigger, 19, _)? = calls.last else { return XCTFail("no INTx irqfd in \(calls)") }

        XCTAssertTrue(r.device.release(kvmVFIO: nil).hasPrefix("interrupts and Bus Master off, "))
        // Bus Master went off (a write of the command register at 0x4 with bit 2 clear) before the close.
        let command = r.io.writes.last { $0.offset == FakeVFIODevice.at(7) + 4 }
        XCTAssertEqual(command.map { $0.bytes.count }, 2)
        XCTAssertEqual((command?.bytes.first ?? 0xFF) & 0x04, 0)
        XCTAssertTrue(r.device.isReleased)
        XCTAssertTrue(try XCTUnwrap(r.device.vfio).isClosed)
        XCTAssertEqual(r.vm.take(), [.irqfdOff(fd: trigger, gsi: 19), deleted(2), deleted(3)])

        var b = [UInt8](repeating: 0, count: 4)
        b.withUnsafeMutableBytes { r.device.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(b, [0xFF, 0xFF, 0xFF, 0xFF])
        b = [0, 0, 0, 0]
        b.withUnsafeMutableBytes { r.device.readBar(4, offset: 0, data: $0) }
        XCTAssertEqual(b, [0xFF, 0xFF, 0xFF, 0xFF])
        let sets = r.fake.irqSets.count
        r.device.setInterruptMode(.intx(gsi: 19))
        r.device.barMoved(0, to: 0xF000_0000)
        [1, 2, 3, 4].withUnsafeBytes { r.device.writeConfig(offset: 4, data: $0) }
        XCTAssertEqual(r.vm.take(), [])
        XCTAssertEqual(r.fake.irqSets.count, sets)
        XCTAssertEqual(r.log.messages, ["debug: passthrough 0000:01:00.0: interrupts now intx(gsi: 19)"], "only the switch before the release")
    }
}
