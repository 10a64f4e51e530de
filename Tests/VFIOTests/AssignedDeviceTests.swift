import CShim
import Foundation
import Glibc
import HostSys
import TestFakes
import XCTest
@testable import VFIO

final class AssignedDeviceTests: XCTestCase {
    let bdf = "0000:01:00.0"
    static let trigger = SHIM_VFIO_IRQ_SET_DATA_EVENTFD | SHIM_VFIO_IRQ_SET_ACTION_TRIGGER
    static let disable = SHIM_VFIO_IRQ_SET_DATA_NONE | SHIM_VFIO_IRQ_SET_ACTION_TRIGGER

    func make(_ fake: FakeVFIODevice = FakeVFIODevice(), io: FakeDeviceIO = FakeDeviceIO(), holders: [String] = []) -> AssignedVFIODevice {
        AssignedVFIODevice(cdev: VFIODeviceCdev(performer: fake.performer, path: "/dev/vfio/devices/vfio0", bdf: bdf),
                           io: io, bdf: bdf, cdevPath: "/dev/vfio/devices/vfio0", findHolders: { holders })
    }

    func context(_ iommu: FakePerformer = FakePerformer()) throws -> IOMMUContext {
        iommu.descriptor = 17
        let prior = iommu.reply
        iommu.reply = { req, arg in
            if req == SHIM_IOMMU_IOAS_ALLOC { put32(arg, 8, 3) }
            return prior(req, arg)
        }
        let fd = IOMMUFD(performer: iommu)
        return IOMMUContext(iommufd: fd, ioas: try fd.allocateIOAS())
    }

    func testBindAttachThenDiscovery() throws {
        let fake = FakeVFIODevice()
        let d = make(fake)
        let ctx = try context()
        try d.bindAndAttach(ctx)
        let calls = fake.performer.calls
        XCTAssertEqual(calls[0].request, SHIM_VFIO_DEVICE_BIND_IOMMUFD)
        XCTAssertEqual(u32(calls[0].bytes, 8), 17) // the iommufd
        XCTAssertTrue(calls[0].name.contains("0000:01:00.0 (/dev/vfio/devices/vfio0)"), calls[0].name)
        XCTAssertEqual(calls[1].request, SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT)
        XCTAssertEqual(u32(calls[1].bytes, 8), 3) // the IOAS
        XCTAssertEqual(calls[2].request, SHIM_VFIO_DEVICE_GET_INFO)
        XCTAssertEqual(d.deviceID, 4)
        XCTAssertEqual(d.pageTableID, 11)
        XCTAssertTrue(d.info.isPCI && d.info.supportsReset)
        XCTAssertEqual(ctx.attachedDevices, [bdf])
        // Regions: size-0 BARs and EINVAL (VGA) left out; caps read in a second call.
        XCTAssertEqual(d.regions.keys.sorted(), [0, 2, 4, 6, 7])
        XCTAssertEqual(d.regions[2]?.size, 8 * FakeVFIODevice.gib)
        XCTAssertTrue(d.regions[2]?.msixMappable ?? false)
        XCTAssertEqual(d.regions[7]?.offset, 7 << 40)
        let regionCalls = calls.filter { $0.request == SHIM_VFIO_DEVICE_GET_REGION_INFO }.map { u32($0.bytes, 8) }
        XCTAssertEqual(regionCalls, [0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 8])
        // IRQs: MSI (1) is EINVAL here; ERR (3) is not a kind we ask for; the
        // request notification (4) is asked for, and this fake has none.
        XCTAssertEqual(Set(d.irqs.keys), [.intx, .msix])
        XCTAssertEqual(d.irqs[.msix]?.count, 16)
        XCTAssertEqual(calls.filter { $0.request == SHIM_VFIO_DEVICE_GET_IRQ_INFO }.map { u32($0.bytes, 8) }, [0, 1, 2, 4])
        XCTAssertThrowsError(try d.bindAndAttach(ctx))
    }

    func testBusyErrorListsHolders() throws {
        let fake = FakeVFIODevice()
        fake.bindErrno = EBUSY
        let d = make(fake, holders: ["pid 1234 (swiftvmm)"])
        XCTAssertThrowsError(try d.bindAndAttach(try context())) { e in
            XCTAssertEqual(e as? VFIOError, .deviceBusy(bdf: self.bdf, holders: ["pid 1234 (swiftvmm)"]))
            let m = "\(e)"
            XCTAssertTrue(m.contains("0000:01:00.0 is in use by another process, pid 1234 (swiftvmm),"), m)
            XCTAssertTrue(m.hasSuffix("stop it, or pick another device"), m)
        }
        XCTAssertNil(d.deviceID)
        XCTAssertEqual(fake.performer.calls.count, 1)

        let two = VFIOError.deviceBusy(bdf: bdf, holders: ["pid 1 (a)", "pid 2 (b)"])
        XCTAssertTrue("\(two)".contains("other processes, pid 1 (a), pid 2 (b),") && "\(two)".contains("stop them"), "\(two)")
        XCTAssertTrue("\(VFIOError.deviceBusy(bdf: bdf, holders: []))".contains("fuser"))

        // EINVAL: busy when someone holds it, else the plain ioctl error.
        fake.bindErrno = EINVAL
        XCTAssertThrowsError(try make(fake, holders: ["pid 7 (qemu-system-x86)"]).bindAndAttach(try context())) { e in
            XCTAssertEqual(e as? VFIOError, .deviceBusy(bdf: self.bdf, holders: ["pid 7 (qemu-system-x86)"]))
        }
        XCTAssertThrowsError(try make(fake).bindAndAttach(try context())) { e in
            guard case let VFIOError.ioctl(s) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(s.errno, EINVAL)
        }
    }

    func testAttachEPERMExplainsInterruptRemapping() throws {
        let fake = FakeVFIODevice()
        fake.attachErrno = EPERM
        XCTAssertThrowsError(try make(fake).bindAndAttach(try context())) { e in
            XCTAssertEqual(e as? VFIOError, .noInterruptRemapping(bdf: self.bdf))
            let m = "\(e)"
            XCTAssertTrue(m.contains("0000:01:00.0"), m)
            XCTAssertTrue(m.contains("the IOMMU has no interrupt remapping; iommufd refuses such devices unless iommufd.allow_unsafe_interrupts=1 (unsafe"), m)
        }
    }

    func testConfigAndRegionAccessOffsetsAndBounds() throws {
        let io = FakeDeviceIO()
        let d = make(io: io)
        try d.bindAndAttach(try context())
        var four = [UInt8](repeating: 0, count: 4)
        XCTAssertTrue(four.withUnsafeMutableBytes { d.readConfig(offset: 0x10, into: $0) })
        XCTAssertEqual(io.reads.last?.offset, 7 << 40 | 0x10)
        XCTAssertEqual(four, [0x10, 0x11, 0x12, 0x13])
        XCTAssertTrue([UInt8](arrayLiteral: 1, 2).withUnsafeBytes { d.writeConfig(offset: 0x04, from: $0) })
        XCTAssertEqual(io.writes.last?.offset, 7 << 40 | 0x04)
        XCTAssertEqual(io.writes.last?.bytes, [1, 2])

        var eight = [UInt8](repeating: 0, count: 8)
        XCTAssertTrue(eight.withUnsafeMutableBytes { d.readRegion(2, offset: 0x1_0000_0000, into: $0) })
        XCTAssertEqual(io.reads.last?.offset, 2 << 40 | 0x1_0000_0000)
        XCTAssertTrue([UInt8](repeating: 9, count: 4).withUnsafeBytes { d.writeRegion(4, offset: 0xFC, from: $0) })
        XCTAssertEqual(io.writes.last?.offset, 4 << 40 | 0xFC)

        let reads = io.reads.count, writes = io.writes.count
        func refusedRead(_ index: UInt32, _ offset: UInt64, _ n: Int, line: UInt = #line) {
            var b = [UInt8](repeating: 0, count: n)
            XCTAssertFalse(b.withUnsafeMutableBytes { d.readRegion(index, offset: offset, into: $0) }, line: line)
            XCTAssertEqual(b, [UInt8](repeating: 0xFF, count: n), line: line)
        }
        refusedRead(4, 0xFE, 4)                 // straddles the end
        refusedRead(4, 0x100, 1)                // just past it
        refusedRead(4, UInt64.max, 2)           // offset + count wraps
        refusedRead(1, 0, 4)                    // absent BAR
        refusedRead(8, 0, 4)                    // absent VGA region
        refusedRead(7, 0x1000, 4)               // past 4 KiB of config space
        XCTAssertFalse(four.withUnsafeMutableBytes { d.readConfig(offset: -4, into: $0) })
        XCTAssertEqual(four, [0xFF, 0xFF, 0xFF, 0xFF])
        XCTAssertFalse([UInt8](repeating: 0, count: 4).withUnsafeBytes { d.writeRegion(4, offset: 0xFE, from: $0) })
        XCTAssertFalse([UInt8](repeating: 0, count: 4).withUnsafeBytes { d.writeRegion(6, offset: 0, from: $0) }) // ROM is read-only
        XCTAssertFalse([UInt8](repeating: 0, count: 4).withUnsafeBytes { d.writeConfig(offset: 0xFFE, from: $0) })
        XCTAssertEqual(io.reads.count, reads)
        XCTAssertEqual(io.writes.count, writes)

        d.close()
        XCTAssertFalse(four.withUnsafeMutableBytes { d.readConfig(offset: 0, into: $0) })
        XCTAssertFalse(d.readRegion(7, offset: 0, into: UnsafeMutableRawBufferPointer(start: nil, count: 0)))
    }

    func testMappableAreas() throws {
        let fake = FakeVFIODevice()
        // BAR4: mappable, one sparse area runs past the end and is dropped.
        fake.regions[4] = .init(flags: FakeVFIODevice.mmap, size: 0x4000, offset: 4 << 40,
                                caps: [(UInt16(1), FakeVFIODevice.sparseBody([(0x2000, 0x1000), (0, 0x1000), (0x3000, 0x2000), (0x1000, 0)]))])
        let d = make(fake)
        try d.bindAndAttach(try context())
        XCTAssertEqual(d.mappableAreas(0), [0..<0x1000, 0x3000..<0x1_0000])      // sparse
        XCTAssertEqual(d.mappableAreas(2), [0..<8 * FakeVFIODevice.gib])          // MSIX_MAPPABLE, no sparse cap: all of it
        XCTAssertEqual(d.mappableAreas(4), [0..<0x1000, 0x2000..<0x3000])
        XCTAssertEqual(d.mappableAreas(6), [])                                     // ROM: no MMAP flag
        XCTAssertEqual(d.mappableAreas(1), [])                                     // absent
    }

    func testMapRegion() throws {
        let io = FakeDeviceIO()
        let d = make(io: io)
        try d.bindAndAttach(try context())
        let big = try d.mapRegion(2, offset: 0, length: 8 * FakeVFIODevice.gib)
        XCTAssertEqual(io.maps.last?.offset, 2 << 40)
        XCTAssertEqual(io.maps.last?.length, 8 * FakeVFIODevice.gib)
        let tail = try d.mapRegion(0, offset: 0x3000, length: 0xD000)
        XCTAssertEqual(io.maps.last?.offset, 0x3000)
        XCTAssertNotEqual(big, tail)

        func refused(_ index: UInt32, _ offset: UInt64, _ length: UInt64, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try d.mapRegion(index, offset: offset, length: length), line: line) { e in
                guard case VFIOError.regionNotMappable = e else { return XCTFail("\(e)", line: line) }
                let m = "\(e)"
                XCTAssertTrue(m.contains(self.bdf) && m.contains(text) && m.contains("readRegion"), m, line: line)
            }
        }
        refused(0, 0x1000, 0x1000, "0x0-0x1000, 0x3000-0x10000")  // the trapped MSI-X page
        refused(0, 0x0, 0x2000, "BAR0")                           // runs out of the first area
        refused(0, 0x3100, 0x1000, "page aligned")                // unaligned
        refused(6, 0, 0x1000, "no VFIO_REGION_INFO_FLAG_MMAP")      // ROM
        refused(1, 0, 0x1000, "not mappable")                     // absent
        refused(2, 0, 0, "BAR2")                                  // empty
        refused(2, 8 * FakeVFIODevice.gib, 0x1000, "BAR2")        // past the end
        XCTAssertEqual(io.maps.count, 2)

        io.mapErrno = ENOMEM
        XCTAssertThrowsError(try d.mapRegion(2, offset: 0, length: 0x1000)) { e in
            guard case VFIOError.regionMapFailed(self.bdf, 2, _) = e else { return XCTFail("\(e)") }
        }

        d.close()
        XCTAssertEqual(io.unmaps.map(\.length), [8 * FakeVFIODevice.gib, 0xD000])
        XCTAssertEqual(io.unmaps.first?.pointer, big)
        d.close()
        XCTAssertEqual(io.unmaps.count, 2)
        XCTAssertThrowsError(try d.mapRegion(2, offset: 0, length: 0x1000))
    }

    func testIRQKindTheDeviceLacks() throws {
        let fake = FakeVFIODevice() // MSI info is EINVAL
        let d = make(fake)
        try d.bindAndAttach(try context())
        XCTAssertThrowsError(try d.enableMSI(eventfds: [1])) { e in
            XCTAssertTrue("\(e)".contains("0000:01:00.0 has no MSI interrupt"), "\(e)")
        }
        XCTAssertTrue(fake.irqCalls.isEmpty)
    }

    func testIRQSwitchingOrder() throws {
        let fake = FakeVFIODevice()
        fake.irqs[1] = (SHIM_VFIO_IRQ_INFO_EVENTFD | SHIM_VFIO_IRQ_INFO_NORESIZE, 4)
        let d = make(fake)
        try d.bindAndAttach(try context())
        let intx = SHIM_VFIO_PCI_INTX_IRQ_INDEX, msix = SHIM_VFIO_PCI_MSIX_IRQ_INDEX, msi = SHIM_VFIO_PCI_MSI_IRQ_INDEX
        let unmask = SHIM_VFIO_IRQ_SET_DATA_EVENTFD | SHIM_VFIO_IRQ_SET_ACTION_UNMASK

        try d.enableINTx(trigger: 5, resample: 6)
        try d.enableMSIX(eventfds: [10, 11])
        try d.enableMSIX(eventfds: [10])            // fewer: set in place
        try d.enableMSIX(eventfds: [10, 11, 12])    // more than enabled: start over
        try d.enableINTx(trigger: 5, resample: 6)
        try d.enableMSI(eventfds: [20])
        try d.disableIRQs(.msi)
        XCTAssertNil(d.activeIRQ)
        let expected: [(UInt32, UInt32, UInt32)] = [
            (intx, Self.trigger, 1), (intx, unmask, 1),
            (intx, Self.disable, 0), (msix, Self.trigger, 2),
            (msix, Self.trigger, 1),
            (msix, Self.disable, 0), (msix, Self.trigger, 3),
            (msix, Self.disable, 0), (intx, Self.trigger, 1), (intx, unmask, 1),
            (intx, Self.disable, 0), (msi, Self.trigger, 1),
            (msi, Self.disable, 0),
        ]
        let got = fake.irqCalls
        XCTAssertEqual(got.count, expected.count)
        for (i, (g, e)) in zip(got, expected).enumerated() {
            XCTAssertTrue(g.index == e.0 && g.flags == e.1 && g.count == e.2, "call \(i): \(g) != \(e)")
        }

        XCTAssertThrowsError(try d.enableMSIX(eventfds: Array(0..<17))) { e in
            XCTAssertTrue("\(e)".contains("has 16 MSI-X vectors"), "\(e)")
        }
        XCTAssertThrowsError(try d.enableMSIX(eventfds: []))
        XCTAssertThrowsError(try d.enableMSI(eventfds: [1, 2, 3, 4, 5]))
        XCTAssertEqual(fake.irqCalls.count, expected.count)

        try d.enableMSIX(eventfds: [1, 2])
        let before = fake.performer.calls.count
        d.close()
        let tail = fake.performer.calls[before...]
        XCTAssertEqual(tail.map(\.request), [SHIM_VFIO_DEVICE_SET_IRQS, SHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT])
        XCTAssertEqual(u32(tail.first!.bytes, 8), msix)
        XCTAssertNil(d.activeIRQ)
        XCTAssertNil(d.pageTableID)
        d.close()
        XCTAssertEqual(fake.performer.calls.count, before + 2)
    }

    /// A device whose config space (region 7) is `config`.
    func makeWithConfig(_ fake: FakeVFIODevice, _ config: [UInt8]) -> AssignedVFIODevice {
        let io = FakeDeviceIO()
        io.content = { o in
            let c = o &- FakeVFIODevice.at(7)
            return c < UInt64(config.count) ? config[Int(c)] : 0
        }
        return make(fake, io: io)
    }

    func resetCalls(_ fake: FakeVFIODevice) -> [UInt] {
        fake.performer.calls.map(\.request).filter { $0 == SHIM_VFIO_DEVICE_RESET || $0 == SHIM_VFIO_DEVICE_PCI_HOT_RESET }
    }

    func testResetPrefersFLRThenBusThenPowerManagement() throws {
        // Not bound yet: nothing known, nothing done.
        let f0 = FakeVFIODevice()
        let d0 = makeWithConfig(f0, FakeSysfs.pcieConfig(noSnoop: false))
        XCTAssertEqual(try d0.reset(), DeviceResetKind.none)
        XCTAssertEqual(resetCalls(f0), [])

        // FLR (PCIe Device Capabilities bit 28): VFIO_DEVICE_RESET alone.
        var flr = FakeSysfs.pcieConfig(noSnoop: false)
        flr[0x57] |= 0x10
        let f1 = FakeVFIODevice()
        let d1 = makeWithConfig(f1, flr)
        try d1.bindAndAttach(try context())
        XCTAssertEqual(try d1.reset(), .functionLevel)
        XCTAssertEqual(resetCalls(f1), [SHIM_VFIO_DEVICE_RESET])

        // No FLR, a bridge above it: a bus reset, not the kernel's PM reset.
        let f2 = FakeVFIODevice()
        f2.hotResetErrno = nil
        let d2 = makeWithConfig(f2, FakeSysfs.pcieConfig(noSnoop: false))
        try d2.bindAndAttach(try context())
        XCTAssertEqual(try d2.reset(), .bus)
        XCTAssertEqual(resetCalls(f2), [SHIM_VFIO_DEVICE_PCI_HOT_RESET])
        XCTAssertEqual(f2.performer.calls.first { $0.request == SHIM_VFIO_DEVICE_PCI_HOT_RESET }?.bytes,
                       [12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) // argsz 12, no flags, no groups

        // No FLR, on a root bus (ENODEV): VFIO_DEVICE_RESET, flagged as weak, saying why.
        let f3 = FakeVFIODevice()
        let d3 = makeWithConfig(f3, FakeSysfs.pcieConfig(noSnoop: false))
        try d3.bindAndAttach(try context())
        guard case let .withoutFLR(why) = try d3.reset() else { return XCTFail("want .withoutFLR") }
        XCTAssertTrue(why.contains("root bus"), why)
        XCTAssertEqual(resetCalls(f3), [SHIM_VFIO_DEVICE_PCI_HOT_RESET, SHIM_VFIO_DEVICE_RESET])
        // Other devices on the bus: EPERM says so.
        f3.hotResetErrno = EPERM
        guard case let .withoutFLR(why2) = try d3.reset() else { return XCTFail("want .withoutFLR") }
        XCTAssertTrue(why2.contains("other devices"), why2)

        // No reset at all (VFIO_DEVICE_FLAGS_RESET clear, no bus reset): nothing.
        let f4 = FakeVFIODevice()
        f4.deviceFlags = SHIM_VFIO_DEVICE_FLAGS_PCI
        let d4 = makeWithConfig(f4, flr)
        try d4.bindAndAttach(try context())
        XCTAssertEqual(try d4.reset(), DeviceResetKind.none)
        XCTAssertEqual(resetCalls(f4), [SHIM_VFIO_DEVICE_PCI_HOT_RESET])

        // Closed: nothing.
        d2.close()
        let before = f2.performer.calls.count
        XCTAssertEqual(try d2.reset(), DeviceResetKind.none)
        XCTAssertEqual(f2.performer.calls.count, before)
    }

    func testFunctionLevelResetFromConfigSpace() {
        var c = FakeSysfs.pcieConfig(noSnoop: false)
        XCTAssertFalse(PCIConfigParser.hasFunctionLevelReset(config: c))
        c[0x57] |= 0x10 // PCIe DevCap bit 28
        XCTAssertTrue(PCIConfigParser.hasFunctionLevelReset(config: c))
        // The Advanced Features capability (0x13) with its FLR bit, after MSI.
        var af = FakeSysfs.pcieConfig(noSnoop: false)
        af[0x71] = 0x80
        af[0x80] = 0x13; af[0x81] = 0x00; af[0x82] = 0x06; af[0x83] = 0x03
        XCTAssertTrue(PCIConfigParser.hasFunctionLevelReset(config: af))
        // Truncated or looping lists: no FLR claimed.
        XCTAssertFalse(PCIConfigParser.hasFunctionLevelReset(config: Array(c.prefix(0x56))))
        var loop = c
        loop[0x71] = 0x70
        loop[0x57] = 0
        XCTAssertFalse(PCIConfigParser.hasFunctionLevelReset(config: loop))
    }

    func testCoherencyReadsNoSnoopThroughVFIO() throws {
        let io = FakeDeviceIO()
        let config = FakeSysfs.pcieConfig(noSnoop: true)
        io.content = { o in
            let c = o &- (7 << 40)
            return c < UInt64(config.count) ? config[Int(c)] : 0
        }
        let iommu = FakePerformer()
        iommu.reply = { req, arg in
            guard req == SHIM_IOMMU_GET_HW_INFO else { return nil }
            XCTAssertEqual(u32(Array(arg), 8), 4) // our device id
            let b = Array(arg)
            let data = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: UInt(u64(b, 16))), count: Int(u32(b, 12)))
            put64(data, 16, 0xf0_0f5e & ~0x80) // ECAP without SC
            put32(arg, 12, 24)
            put32(arg, 24, SHIM_IOMMU_HW_INFO_TYPE_INTEL_VTD)
            return nil
        }
        let d = make(io: io)
        XCTAssertThrowsError(try d.coherency()) { e in XCTAssertTrue("\(e)".contains(self.bdf) && "\(e)".contains("bindAndAttach"), "\(e)") }
        try d.bindAndAttach(try context(iommu))
        XCTAssertEqual(d.noSnoopState(), .enabled)
        XCTAssertEqual(io.reads.last?.offset, 7 << 40)
        XCTAssertEqual(io.reads.last?.count, 256)
        let v = try d.coherency()
        XCTAssertTrue(v.mustFlush)
        XCTAssertTrue(v.reason.contains("No Snoop enabled"), v.reason)
        let off = try d.coherency(noSnoopEnabled: false)
        XCTAssertTrue(off.reason.contains("coherent in practice"), off.reason)
    }

    // MARK: - Finding the device

    func testCdevResolvesToBDFThroughSysfs() throws {
        let fs = try FakeSysfs()
        try fs.addDevice(bdf, driver: "vfio-pci", group: 12, cdev: "vfio3")
        try fs.addVFIOClassLink("vfio3", bdf: bdf)
        try fs.addDevice("0000:02:00.0", driver: "e1000e", group: 13)
        try fs.addVFIOClassLink("vfio4", bdf: "0000:02:00.0")
        let sys = SysfsDiscovery(root: fs.root)

        XCTAssertEqual(sys.bdf(forCdev: "/dev/vfio/devices/vfio3"), bdf)
        XCTAssertNil(sys.bdf(forCdev: "/dev/vfio/devices/vfio9"))
        XCTAssertNil(sys.bdf(forCdev: "/dev/sda"))
        XCTAssertNil(sys.bdf(forCdev: "/dev/vfio/devices/vfio"))

        let a = try AssignedVFIODevice.resolve(.cdev("/dev/vfio/devices/vfio3"), discovery: sys)
        XCTAssertEqual(a.bdf, bdf)
        XCTAssertEqual(a.cdevPath, "/dev/vfio/devices/vfio3")
        let b = try AssignedVFIODevice.resolve(.pciAddress("01:00.0"), discovery: sys)
        XCTAssertEqual(b.bdf, bdf)
        XCTAssertEqual(b.cdevPath, "/dev/vfio/devices/vfio3")
        XCTAssertEqual(AssignedDeviceSpec("/dev/vfio/devices/vfio3"), .cdev("/dev/vfio/devices/vfio3"))
        XCTAssertEqual(AssignedDeviceSpec("01:00.0"), .pciAddress("01:00.0"))

        XCTAssertThrowsError(try AssignedVFIODevice.resolve(.cdev("/dev/vfio/devices/vfio9"), discovery: sys)) { e in
            XCTAssertEqual(e as? VFIOError, .notAVFIOCdev(path: "/dev/vfio/devices/vfio9"))
            XCTAssertTrue("\(e)".contains("swiftvmm devices"))
        }
        // A cdev whose device is (now) bound elsewhere fails the same checks as a BDF.
        XCTAssertThrowsError(try AssignedVFIODevice.resolve(.cdev("/dev/vfio/devices/vfio4"), discovery: sys)) { e in
            guard case VFIOError.notBoundToVFIO(bdf: "0000:02:00.0", driver: "e1000e", _) = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try AssignedVFIODevice.resolve(.pciAddress("0000:09:00.0"), discovery: sys)) { e in
            XCTAssertEqual(e as? VFIOError, .deviceNotFound(bdf: "0000:09:00.0"))
        }
        XCTAssertThrowsError(try AssignedVFIODevice.open(.pciAddress("01:00.0"), discovery: sys)) { e in
            XCTAssertEqual(e as? VFIOError, .cdevMissing(path: "/dev/vfio/devices/vfio3"))
        }
    }

    func testNormalizeBDF() {
        XCTAssertEqual(SysfsDiscovery.normalizeBDF("01:00.0"), "0000:01:00.0")
        XCTAssertEqual(SysfsDiscovery.normalizeBDF("0000:AF:00.1"), "0000:af:00.1")
        XCTAssertEqual(SysfsDiscovery.normalizeBDF("junk"), "junk")
    }

    func testRegionNames() {
        XCTAssertEqual(AssignedVFIODevice.regionName(0), "BAR0")
        XCTAssertEqual(AssignedVFIODevice.regionName(5), "BAR5")
        XCTAssertEqual(AssignedVFIODevice.regionName(6), "ROM")
        XCTAssertEqual(AssignedVFIODevice.regionName(7), "config space")
        XCTAssertEqual(AssignedVFIODevice.regionName(9), "region 9")
    }
}

extension FakeSysfs {
    /// `class/vfio-dev/NAME/device` -> the PCI device, as the kernel links it.
    func addVFIOClassLink(_ name: String, bdf: String) throws {
        let dir = "\(root)/class/vfio-dev/\(name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(dir)/device", withDestinationPath: "../../../bus/pci/devices/\(bdf)")
    }
}

final class DeviceIOTests: XCTestCase {
    func testProcScanFindsHolders() throws {
        let fm = FileManager.default
        let proc = NSTemporaryDirectory() + "swiftvmm-proc-\(UUID().uuidString)"
        defer { try? fm.removeItem(atPath: proc) }
        func process(_ pid: Int, _ comm: String?, fds: [String]) throws {
            try fm.createDirectory(atPath: "\(proc)/\(pid)/fd", withIntermediateDirectories: true)
            if let comm { try (comm + "\n").write(toFile: "\(proc)/\(pid)/comm", atomically: true, encoding: .utf8) }
            for (i, target) in fds.enumerated() {
                try fm.createSymbolicLink(atPath: "\(proc)/\(pid)/fd/\(i + 3)", withDestinationPath: target)
            }
        }
        try process(100, "swiftvmm", fds: ["/dev/null", "/dev/vfio/devices/vfio0"])
        try process(200, "bash", fds: ["/dev/pts/0"])
        try process(300, "qemu-system-x86", fds: ["/dev/vfio/7"])
        try process(400, nil, fds: ["/dev/vfio/devices/vfio0"])
        try fm.createDirectory(atPath: "\(proc)/500", withIntermediateDirectories: true) // fds not readable/gone
        try fm.createSymbolicLink(atPath: "\(proc)/self", withDestinationPath: "100")
        let paths = ["/dev/vfio/devices/vfio0", "/dev/vfio/7"]
        let all = ProcScan.holders(of: paths, procRoot: proc, excluding: nil)
        XCTAssertEqual(all.map(\.pid), [100, 300, 400])
        XCTAssertEqual(all.map(\.command), ["swiftvmm", "qemu-system-x86", "?"])
        XCTAssertEqual(ProcScan.holders(of: paths, procRoot: proc, excluding: 100).map(\.pid), [300, 400])
        XCTAssertEqual(ProcScan.holders(of: paths, procRoot: proc + "/missing").count, 0)
    }

    func testRealPreadPwriteAndMmap() throws {
        let path = NSTemporaryDirectory() + "swiftvmm-devio-\(UUID().uuidString)"
        defer { unlink(path) }
        let page = Int(DeviceIO.pageSize)
        let fd = try FileDescriptor.open(path, flags: O_RDWR | O_CREAT)
        try fd.writeAll([UInt8](repeating: 0, count: 2 * page))
        let io = FileDeviceIO(fd: fd.raw)
        XCTAssertTrue([UInt8](arrayLiteral: 1, 2, 3, 4).withUnsafeBytes { io.write(from: $0, at: UInt64(page) + 8) })
        var b = [UInt8](repeating: 0, count: 4)
        XCTAssertTrue(b.withUnsafeMutableBytes { io.read(into: $0, at: UInt64(page) + 8) })
        XCTAssertEqual(b, [1, 2, 3, 4])
        XCTAssertFalse(b.withUnsafeMutableBytes { io.read(into: $0, at: UInt64(2 * page)) }) // end of file
        XCTAssertFalse(b.withUnsafeMutableBytes { io.read(into: $0, at: UInt64.max - 1) })
        let p = try io.map(length: UInt64(page), at: UInt64(page))
        XCTAssertEqual(p.load(fromByteOffset: 8, as: UInt8.self), 1)
        p.storeBytes(of: 0x55, toByteOffset: 0, as: UInt8.self)
        XCTAssertTrue(b.withUnsafeMutableBytes { io.read(into: $0, at: UInt64(page)) })
        XCTAssertEqual(b[0], 0x55)
        io.unmap(p, length: UInt64(page))
        XCTAssertThrowsError(try io.map(length: 0, at: 0))
    }
}
