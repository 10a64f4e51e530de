import CShim
import Glibc
import HostSys
import TestFakes
import XCTest
@testable import VFIO

/// `swiftvmm devices --probe`, fed the replies the real kernel gave in the lab
/// (Linux 6.12.117, QEMU intel-iommu snoop-control=on, e1000e bound to vfio-pci).
final class ProbeTests: XCTestCase {
    /// vfio-pci announces 9 regions and 5 IRQ kinds for every PCI device and
    /// answers EINVAL for the VGA region of a non-VGA device: the first real
    /// run failed there. The probe records it as absent and carries on.
    func testAbsentRegionAndIRQAreNotFailures() throws {
        let dev = FakePerformer()
        dev.reply = { req, arg in
            switch req {
            case SHIM_VFIO_DEVICE_GET_INFO:
                put32(arg, 4, 0x3); put32(arg, 8, 9); put32(arg, 12, 5)
            case SHIM_VFIO_DEVICE_GET_REGION_INFO:
                let index = u32(Array(arg), 8)
                if index == 8 { return EINVAL }
                put32(arg, 4, index == 0 ? 0x7 : 0x3); put64(arg, 16, index == 0 ? 0x2_0000 : 0x1000)
                put64(arg, 24, UInt64(index) << 40)
            case SHIM_VFIO_DEVICE_GET_IRQ_INFO:
                let index = u32(Array(arg), 8)
                if index == 3 { return EINVAL }
                put32(arg, 4, 0x1); put32(arg, 12, index == 2 ? 5 : 1)
            default:
                break
            }
            return nil
        }
        var rep = DeviceProbeReport(bdf: "0000:00:01.0", cdev: "/dev/vfio/devices/vfio0")
        try DeviceProbe.describe(VFIODeviceCdev(performer: dev, path: "/dev/vfio/devices/vfio0"), into: &rep)
        XCTAssertEqual(rep.regions.map(\.index), [0, 1, 2, 3, 4, 5, 6, 7])
        XCTAssertEqual(rep.absentRegions, [8])
        XCTAssertEqual(rep.irqs.map(\.index), [0, 1, 2, 4])
        XCTAssertEqual(rep.absentIRQs, [3])
        XCTAssertEqual(rep.regions[0].size, 131072)
        XCTAssertTrue(rep.regions[0].mmap)
        XCTAssertEqual(rep.irqs.first { $0.name == "MSI-X" }?.count, 5)
        XCTAssertTrue(rep.supportsReset && rep.isPCI)
    }

    /// Any other errno on a region is still a failure, named with the step and device.
    func testOtherRegionErrorsFail() {
        let dev = FakePerformer()
        dev.reply = { req, arg in
            if req == SHIM_VFIO_DEVICE_GET_INFO { put32(arg, 8, 1) }
            return req == SHIM_VFIO_DEVICE_GET_REGION_INFO ? EIO : nil
        }
        var rep = DeviceProbeReport(bdf: "x", cdev: "/dev/vfio/devices/vfio0")
        XCTAssertThrowsError(try DeviceProbe.describe(VFIODeviceCdev(performer: dev, path: "/dev/vfio/devices/vfio0"), into: &rep)) { e in
            XCTAssertEqual("\(e)", "VFIO_DEVICE_GET_REGION_INFO on /dev/vfio/devices/vfio0 region 0: EIO (Input/output error)")
        }
    }

    /// Errors lead with the step, the node and the errno's name.
    func testErrorNamesStepPathAndErrno() {
        let dev = FakePerformer()
        dev.reply = { _, _ in EBUSY }
        let k = FakePerformer()
        XCTAssertThrowsError(try VFIODeviceCdev(performer: dev, path: "/dev/vfio/devices/vfio0").bind(to: IOMMUFD(performer: k))) { e in
            XCTAssertEqual("\(e)", "VFIO_DEVICE_BIND_IOMMUFD on /dev/vfio/devices/vfio0: EBUSY (Device or resource busy)")
        }
        k.reply = { _, _ in ENOMEM }
        XCTAssertThrowsError(try IOMMUFD(performer: k).allocateIOAS()) { e in
            XCTAssertEqual("\(e)", "IOMMU_IOAS_ALLOC on /dev/iommu: ENOMEM (Cannot allocate memory)")
        }
    }

    /// The IOVA ranges the lab's VT-d gave after attach (the MSI window
    /// 0xfee00000-0xfeefffff is reserved): 4 GiB fits, and is chosen.
    func testChooseIOVA() {
        let mib64: UInt64 = 64 << 20
        let lab: [ClosedRange<UInt64>] = [0...0xfedf_ffff, 0xfef0_0000...0xffff_ffff_ffff]
        XCTAssertEqual(DeviceProbe.chooseIOVA(ranges: lab, length: mib64, alignment: 1), 0x1_0000_0000)
        XCTAssertEqual(DeviceProbe.chooseIOVA(ranges: [0...UInt64.max], length: mib64, alignment: 1), 0x1_0000_0000)
        // Only 32-bit space: the first aligned place that fits.
        XCTAssertEqual(DeviceProbe.chooseIOVA(ranges: [0x1000...0xfedf_ffff], length: mib64, alignment: 0x1000), 0x20_0000)
        // Nothing fits; no overflow at the top of the space.
        XCTAssertNil(DeviceProbe.chooseIOVA(ranges: [0...0xff_ffff], length: mib64, alignment: 1))
        XCTAssertNil(DeviceProbe.chooseIOVA(ranges: [(UInt64.max - 0x1000)...UInt64.max], length: mib64, alignment: 1))
    }

    /// The BAR3 (MSI-X table) reply of the lab's e1000e: 40 bytes, flags
    /// READ|WRITE|MMAP|CAPS, one MSIX_MAPPABLE capability at 32; asked twice.
    func testLabMSIXBarRegionInfo() throws {
        let dev = FakePerformer()
        dev.reply = { _, arg in
            if arg.count < 40 { put32(arg, 0, 40); put32(arg, 4, 0xf); put64(arg, 16, 0x4000); put64(arg, 24, 0x300_0000_0000); return nil }
            put32(arg, 4, 0xf); put32(arg, 12, 32); put64(arg, 16, 0x4000); put64(arg, 24, 0x300_0000_0000)
            arg.storeBytes(of: UInt16(3).littleEndian, toByteOffset: 32, as: UInt16.self)
            arg.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 34, as: UInt16.self)
            return nil
        }
        let r = try VFIODeviceCdev(performer: dev).regionInfo(3)
        XCTAssertEqual(dev.calls.map { $0.bytes.count }, [32, 40])
        XCTAssertEqual(r.capabilities, [.msixMappable])
        XCTAssertNil(r.sparseAreas)
        let p = DeviceProbe.region(r)
        XCTAssertEqual(p.capabilities, ["msix-mappable"])
        XCTAssertTrue(p.msixMappable && p.mmap)
    }

    /// IOMMU_GET_HW_INFO as the lab's VT-d answered: cap 0xd2008c222f0606,
    /// ecap 0xf00fca with snoop control, 0xf00f4a without.
    func testLabHardwareInfo() throws {
        func reply(_ ecap: UInt64) -> [UInt8] {
            var d = [UInt8](repeating: 0, count: 24)
            withUnsafeBytes(of: UInt64(0xd2_008c_222f_0606).littleEndian) { for i in 0..<8 { d[8 + i] = $0[i] } }
            withUnsafeBytes(of: ecap.littleEndian) { for i in 0..<8 { d[16 + i] = $0[i] } }
            return d
        }
        let snoop = try IOMMUFD.decodeHardwareInfo(type: SHIM_IOMMU_HW_INFO_TYPE_INTEL_VTD, length: 24, data: reply(0xf00fca))
        XCTAssertEqual(snoop, .intelVTd(flags: 0, capReg: 0xd2_008c_222f_0606, ecapReg: 0xf00fca))
        XCTAssertEqual(snoop.canEnforceSnoop, true)
        let plain = try IOMMUFD.decodeHardwareInfo(type: SHIM_IOMMU_HW_INFO_TYPE_INTEL_VTD, length: 24, data: reply(0xf00f4a))
        XCTAssertEqual(plain.canEnforceSnoop, false)
    }
}
