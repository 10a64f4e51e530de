import CShim
import Glibc
import HostSys
import TestFakes
import XCTest
@testable import VFIO

final class IOMMUFDTests: XCTestCase {
    func testAllocMapUnmapDestroy() throws {
        let k = FakePerformer()
        k.reply = { req, arg in
            if req == SHIM_IOMMU_IOAS_ALLOC { put32(arg, 8, 7) }
            if req == SHIM_IOMMU_IOAS_MAP, u32(Array(arg), 4) & SHIM_IOMMU_IOAS_MAP_FIXED_IOVA == 0 { put64(arg, 32, 0x7000_0000) }
            if req == SHIM_IOMMU_IOAS_UNMAP { put64(arg, 16, 0x1000) }
            return nil
        }
        let fd = IOMMUFD(performer: k)
        let ioas = try fd.allocateIOAS()
        XCTAssertEqual(ioas.id, 7)
        XCTAssertEqual(k.calls[0].request, SHIM_IOMMU_IOAS_ALLOC)
        XCTAssertEqual(k.calls[0].bytes, [12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])

        XCTAssertEqual(try ioas.map(hostAddress: 0x7f00_0000_0000, length: 0x20_0000, iova: 0x10_0000), 0x10_0000)
        let m = k.calls[1].bytes
        XCTAssertEqual(m.count, 40)
        XCTAssertEqual(u32(m, 0), 40)
        XCTAssertEqual(u32(m, 4), 1 | 2 | 4) // fixed, writeable, readable
        XCTAssertEqual(u32(m, 8), 7)
        XCTAssertEqual(u64(m, 16), 0x7f00_0000_0000)
        XCTAssertEqual(u64(m, 24), 0x20_0000)
        XCTAssertEqual(u64(m, 32), 0x10_0000)

        XCTAssertEqual(try ioas.map(hostAddress: 0x1000, length: 0x1000, iova: nil, writable: false), 0x7000_0000)
        XCTAssertEqual(u32(k.calls[2].bytes, 4), 4) // readable only, kernel picks IOVA

        XCTAssertEqual(try ioas.unmap(iova: 0x10_0000, length: 0x1000), 0x1000)
        XCTAssertEqual(u32(k.calls[3].bytes, 0), 24)
        try ioas.destroy()
        XCTAssertEqual(k.calls[4].request, SHIM_IOMMU_DESTROY)
        XCTAssertEqual(k.calls[4].bytes, [8, 0, 0, 0, 7, 0, 0, 0])
    }

    func testMapRejectsBadRanges() throws {
        let ioas = try IOMMUFD(performer: FakePerformer()).allocateIOAS()
        XCTAssertThrowsError(try ioas.map(hostAddress: 0, length: 0, iova: 0))
        XCTAssertThrowsError(try ioas.map(hostAddress: UInt64.max - 10, length: 0x1000, iova: 0))
        XCTAssertThrowsError(try ioas.map(hostAddress: 0, length: 0x1000, iova: UInt64.max))
    }

    func testIOVARangesGrowsOnEMSGSIZE() throws {
        let k = FakePerformer()
        let kernelRanges: [(UInt64, UInt64)] = (0..<10).map { (UInt64($0) << 32, UInt64($0) << 32 | 0xFFFF_FFFF) }
        k.reply = { req, arg in
            guard req == SHIM_IOMMU_IOAS_IOVA_RANGES else { return nil }
            let capacity = Int(u32(Array(arg), 8))
            put32(arg, 8, UInt32(kernelRanges.count))
            put64(arg, 24, 4096)
            if capacity < kernelRanges.count { return EMSGSIZE }
            let out = UnsafeMutableRawPointer(bitPattern: UInt(u64(Array(arg), 16)))!
            for (i, r) in kernelRanges.enumerated() {
                out.storeBytes(of: r.0, toByteOffset: i * 16, as: UInt64.self)
                out.storeBytes(of: r.1, toByteOffset: i * 16 + 8, as: UInt64.self)
            }
            return nil
        }
        let ioas = IOAS(iommufd: IOMMUFD(performer: k), id: 3)
        let (ranges, alignment) = try ioas.iovaRanges()
        XCTAssertEqual(ranges.count, 10)
        XCTAssertEqual(ranges[1], 0x1_0000_0000...0x1_FFFF_FFFF)
        XCTAssertEqual(alignment, 4096)
        XCTAssertEqual(k.calls.count, 2)
        XCTAssertEqual(u32(k.calls[0].bytes, 8), 8)
        XCTAssertEqual(u32(k.calls[1].bytes, 8), 10)
    }

    func testIOVARangesRejectsInvertedRange() {
        let k = FakePerformer()
        k.reply = { _, arg in
            put32(arg, 8, 1)
            let out = UnsafeMutableRawPointer(bitPattern: UInt(u64(Array(arg), 16)))!
            out.storeBytes(of: UInt64(10), toByteOffset: 0, as: UInt64.self)
            out.storeBytes(of: UInt64(5), toByteOffset: 8, as: UInt64.self)
            return nil
        }
        XCTAssertThrowsError(try IOAS(iommufd: IOMMUFD(performer: k), id: 1).iovaRanges())
    }

    func testHardwareInfoVTd() throws {
        let k = FakePerformer()
        k.reply = { req, arg in
            XCTAssertEqual(req, SHIM_IOMMU_GET_HW_INFO)
            let b = Array(arg)
            XCTAssertEqual(u32(b, 0), 40)
            XCTAssertEqual(u32(b, 8), 5) // dev_id
            let data = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: UInt(u64(b, 16))), count: Int(u32(b, 12)))
            put32(data, 0, 1)
            put64(data, 8, 0xd2_0088_10ef_0466)
            put64(data, 16, 0xf0_0fde)
            put32(arg, 12, 24)
            put32(arg, 24, SHIM_IOMMU_HW_INFO_TYPE_INTEL_VTD)
            return nil
        }
        let info = try IOMMUFD(performer: k).hardwareInfo(deviceID: 5)
        XCTAssertEqual(info, .intelVTd(flags: 1, capReg: 0xd2_0088_10ef_0466, ecapReg: 0xf0_0fde))
        XCTAssertEqual(info.canEnforceSnoop, true)
    }

    func testHardwareInfoDecoding() throws {
        XCTAssertEqual(try IOMMUFD.decodeHardwareInfo(type: 0, length: 0, data: []), IOMMUHardwareInfo.none)
        XCTAssertEqual(try IOMMUFD.decodeHardwareInfo(type: 77, length: 0, data: []), .unknown(type: 77))
        XCTAssertThrowsError(try IOMMUFD.decodeHardwareInfo(type: 1, length: 16, data: [UInt8](repeating: 0, count: 64)))
        var smmu = [UInt8](repeating: 0, count: 64)
        smmu[8] = 0x10 // IDR0.COHACC
        smmu[32] = 0x3b // IIDR
        let s = try IOMMUFD.decodeHardwareInfo(type: 2, length: 40, data: smmu)
        XCTAssertEqual(s, .armSMMUv3(flags: 0, idr: [0x10, 0, 0, 0, 0, 0], iidr: 0x3b, aidr: 0))
        XCTAssertThrowsError(try IOMMUFD.decodeHardwareInfo(type: 2, length: 20, data: smmu))
    }

    func testHWPTAndOption() throws {
        let k = FakePerformer()
        k.reply = { req, arg in
            if req == SHIM_IOMMU_HWPT_ALLOC { put32(arg, 16, 9) }
            if req == SHIM_IOMMU_OPTION { put64(arg, 16, 1) }
            return nil
        }
        let fd = IOMMUFD(performer: k)
        XCTAssertEqual(try fd.allocateHWPT(deviceID: 2, ptID: 3), 9)
        XCTAssertEqual(u32(k.calls[0].bytes, 0), 48)
        XCTAssertEqual(u32(k.calls[0].bytes, 8), 2)
        XCTAssertEqual(u32(k.calls[0].bytes, 12), 3)
        XCTAssertEqual(try fd.option(SHIM_IOMMU_OPTION_HUGE_PAGES, objectID: 3), 1)
        XCTAssertEqual(k.calls[1].bytes[8], UInt8(SHIM_IOMMU_OPTION_OP_GET))
        try fd.option(SHIM_IOMMU_OPTION_HUGE_PAGES, objectID: 3, set: 0)
        XCTAssertEqual(k.calls[2].bytes[8], UInt8(SHIM_IOMMU_OPTION_OP_SET))
    }

    func testErrorsCarryErrnoAndContext() {
        let k = FakePerformer()
        k.reply = { _, _ in EBUSY }
        XCTAssertThrowsError(try IOMMUFD(performer: k).allocateIOAS()) { e in
            guard case let VFIOError.ioctl(s) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(s.errno, EBUSY)
            XCTAssertTrue("\(e)".contains("IOMMU_IOAS_ALLOC"))
        }
    }

    func testOpenMissingDevIOMMU() {
        XCTAssertThrowsError(try IOMMUFD.open(path: "/nonexistent/iommu")) { e in
            XCTAssertEqual(e as? VFIOError, .iommufdMissing(path: "/nonexistent/iommu"))
            XCTAssertTrue("\(e)".contains("CONFIG_IOMMUFD"))
            XCTAssertTrue("\(e)".contains("Debian's kernels lack it"))
        }
        XCTAssertThrowsError(try VFIODeviceCdev.open(path: "/nonexistent/vfio0")) { e in
            XCTAssertEqual(e as? VFIOError, .cdevMissing(path: "/nonexistent/vfio0"))
        }
    }
}

final class VFIODeviceTests: XCTestCase {
    func testBindAttachDetach() throws {
        let dev = FakePerformer()
        dev.reply = { req, arg in
            if req == SHIM_VFIO_DEVICE_BIND_IOMMUFD { put32(arg, 12, 4) }
            if req == SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT { put32(arg, 8, 11) }
            return nil
        }
        let iommu = FakePerformer()
        iommu.descriptor = 17
        let d = VFIODeviceCdev(performer: dev)
        XCTAssertEqual(try d.bind(to: IOMMUFD(performer: iommu)), 4)
        XCTAssertEqual(d.deviceID, 4)
        XCTAssertEqual(dev.calls[0].bytes, [16, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(try d.attach(ptID: 7), 11)
        XCTAssertEqual(dev.calls[1].bytes, [12, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0])
        try d.detach()
        XCTAssertEqual(dev.calls[2].bytes, [8, 0, 0, 0, 0, 0, 0, 0])
        try d.reset()
        XCTAssertEqual(dev.calls[3].request, SHIM_VFIO_DEVICE_RESET)
    }

    func testHardwareInfoNeedsBind() {
        let d = VFIODeviceCdev(performer: FakePerformer())
        XCTAssertThrowsError(try d.hardwareInfo(IOMMUFD(performer: FakePerformer())))
    }

    func testInfoAndIRQInfo() throws {
        let dev = FakePerformer()
        dev.reply = { req, arg in
            if req == SHIM_VFIO_DEVICE_GET_INFO { put32(arg, 4, 0x3); put32(arg, 8, 9); put32(arg, 12, 5) }
            if req == SHIM_VFIO_DEVICE_GET_IRQ_INFO { put32(arg, 4, 0x7); put32(arg, 12, 1) }
            return nil
        }
        let d = VFIODeviceCdev(performer: dev)
        let i = try d.info()
        XCTAssertEqual(i, VFIODeviceInfo(flags: 3, numRegions: 9, numIRQs: 5))
        XCTAssertTrue(i.isPCI && i.supportsReset)
        XCTAssertEqual(u32(dev.calls[0].bytes, 0), 24)
        let irq = try d.irqInfo(SHIM_VFIO_PCI_INTX_IRQ_INDEX)
        XCTAssertTrue(irq.supportsEventFD && irq.isMaskable && irq.isAutomasked)
        XCTAssertEqual(irq.count, 1)
        XCTAssertEqual(u32(dev.calls[1].bytes, 0), 16)
    }

    /// A region_info reply of `argsz` bytes with the given caps laid out from 32.
    static func regionReply(_ arg: UnsafeMutableRawBufferPointer, argsz: UInt32, caps: [(id: UInt16, body: [UInt8])], firstOffset: UInt32? = nil, nextOverride: [Int: UInt32] = [:]) {
        put32(arg, 0, argsz)
        put32(arg, 4, SHIM_VFIO_REGION_INFO_FLAG_READ | SHIM_VFIO_REGION_INFO_FLAG_WRITE | SHIM_VFIO_REGION_INFO_FLAG_MMAP | SHIM_VFIO_REGION_INFO_FLAG_CAPS)
        put32(arg, 12, firstOffset ?? (caps.isEmpty ? 0 : 32))
        put64(arg, 16, 0x2_0000)
        put64(arg, 24, 0x10_0000_0000)
        guard arg.count >= Int(argsz) else { return }
        var at = 32
        for (i, c) in caps.enumerated() {
            let len = 8 + c.body.count
            let next = nextOverride[i] ?? (i == caps.count - 1 ? 0 : UInt32(at + len))
            arg.storeBytes(of: c.id.littleEndian, toByteOffset: at, as: UInt16.self)
            arg.storeBytes(of: UInt16(1).littleEndian, toByteOffset: at + 2, as: UInt16.self)
            put32(arg, at + 4, next)
            for (j, x) in c.body.enumerated() { arg[at + 8 + j] = x }
            at += len
        }
    }

    func testRegionInfoTwoPassWithSparseAndMSIX() throws {
        let dev = FakePerformer()
        let caps: [(id: UInt16, body: [UInt8])] = [
            (1, FakeVFIODevice.sparseBody([(0, 0x1000), (0x3000, 0x1_D000)])),
            (3, []),
        ]
        let full: UInt32 = 32 + 8 + 8 + 32 + 8
        dev.reply = { req, arg in
            XCTAssertEqual(req, SHIM_VFIO_DEVICE_GET_REGION_INFO)
            XCTAssertEqual(u32(Array(arg), 8), 0) // index
            Self.regionReply(arg, argsz: full, caps: caps)
            return nil
        }
        let r = try VFIODeviceCdev(performer: dev).regionInfo(0)
        XCTAssertEqual(dev.calls.count, 2)
        XCTAssertEqual(u32(dev.calls[0].bytes, 0), 32)
        XCTAssertEqual(u32(dev.calls[1].bytes, 0), full)
        XCTAssertEqual(dev.calls[1].bytes.count, Int(full))
        XCTAssertEqual(r.size, 0x2_0000)
        XCTAssertEqual(r.offset, 0x10_0000_0000)
        XCTAssertTrue(r.isReadable && r.isWritable && r.isMappable)
        XCTAssertEqual(r.sparseAreas, [VFIOSparseArea(offset: 0, size: 0x1000), VFIOSparseArea(offset: 0x3000, size: 0x1_D000)])
        XCTAssertTrue(r.msixMappable)
    }

    func testRegionInfoWithoutCapsIsOneCall() throws {
        let dev = FakePerformer()
        dev.reply = { _, arg in
            put32(arg, 4, SHIM_VFIO_REGION_INFO_FLAG_READ); put64(arg, 16, 256); put64(arg, 24, 0x70_0000_0000)
            return nil
        }
        let r = try VFIODeviceCdev(performer: dev).regionInfo(SHIM_VFIO_PCI_CONFIG_REGION_INDEX)
        XCTAssertEqual(dev.calls.count, 1)
        XCTAssertEqual(u32(dev.calls[0].bytes, 8), 7)
        XCTAssertEqual(r.capabilities, [])
        XCTAssertNil(r.sparseAreas)
    }

    func decodeFails(_ caps: [(id: UInt16, body: [UInt8])], argsz: UInt32, first: UInt32? = nil, next: [Int: UInt32] = [:], file: StaticString = #filePath, line: UInt = #line) {
        var b = [UInt8](repeating: 0, count: Int(argsz))
        b.withUnsafeMutableBytes { Self.regionReply($0, argsz: argsz, caps: caps, firstOffset: first, nextOverride: next) }
        XCTAssertThrowsError(try VFIORegionInfo.decode(b), file: file, line: line) { e in
            guard case VFIOError.malformedReply = e else { return XCTFail("\(e)", file: file, line: line) }
        }
    }

    func testCapabilityChainRejectsLoopsAndBadOffsets() {
        // Cap 0 -> cap 1 -> cap 0.
        decodeFails([(3, []), (3, [])], argsz: 48, next: [1: 32])
        // Cap points at itself.
        decodeFails([(3, [])], argsz: 40, next: [0: 32])
        // First cap beyond the reply.
        decodeFails([], argsz: 40, first: 4096)
        // First cap inside the fixed header.
        decodeFails([], argsz: 40, first: 8)
        // Header straddles the end.
        decodeFails([], argsz: 40, first: 36)
        // next points outside.
        decodeFails([(3, [])], argsz: 40, next: [0: 0xFFFF_FFF0])
        // Sparse areas run past the end: claims 4 areas, room for 1.
        var body = FakeVFIODevice.sparseBody([(0, 0x1000)])
        body[0] = 4
        decodeFails([(1, body)], argsz: UInt32(32 + 8 + body.count))
        // Sparse count absurd.
        body[0] = 0xFF; body[1] = 0xFF; body[2] = 0xFF; body[3] = 0xFF
        decodeFails([(1, body)], argsz: UInt32(32 + 8 + body.count))
        // Truncated fixed struct.
        XCTAssertThrowsError(try VFIORegionInfo.decode([UInt8](repeating: 0, count: 20)))
    }

    func testUnknownAndTypeCapabilities() throws {
        var b = [UInt8](repeating: 0, count: 32 + 16 + 8)
        b.withUnsafeMutableBytes { Self.regionReply($0, argsz: 56, caps: [(2, [0x00, 0x00, 0x00, 0x80, 0x01, 0, 0, 0]), (99, [])]) }
        let r = try VFIORegionInfo.decode(b)
        XCTAssertEqual(r.capabilities, [.type(type: 0x8000_0000, subtype: 1), .other(id: 99, version: 1)])
    }

    func testRegionInfoRefusesHugeArgsz() {
        let dev = FakePerformer()
        dev.reply = { _, arg in put32(arg, 0, 1 << 30); put32(arg, 4, SHIM_VFIO_REGION_INFO_FLAG_CAPS); return nil }
        XCTAssertThrowsError(try VFIODeviceCdev(performer: dev).regionInfo(0))
    }

    /// Random region replies (seeded, so a failure replays): a reply decodes
    /// or throws, never traps, and what decodes says what the bytes say.
    /// Half the replies get a well-formed last capability, so the loop also
    /// reaches the decoded cases and the header check.
    func testRandomRegionRepliesDecodeAsTheBytesSay() {
        let header = Int(SHIM_SIZEOF_VFIO_REGION_INFO)
        let capsFlag = SHIM_VFIO_REGION_INFO_FLAG_CAPS
        var rng = SplitMix64(seed: 0x4E61_0000)
        var decodedWithCaps = 0, decodedWithout = 0, refused = 0
        for _ in 0..<3000 {
            let n = Int.random(in: 0...128, using: &rng)
            var b = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if n >= 16 {
                if Int.random(in: 0..<4, using: &rng) != 0 { b[4] |= 0x08 } else { b[4] &= ~0x08 }
                b[12] = UInt8.random(in: 0...140, using: &rng); b[13] = 0; b[14] = 0; b[15] = 0
            }
            var planted: VFIORegionCapability?
            let at = n >= 16 ? Int(b[12]) : 0
            if at >= 16, at + 8 <= n, Bool.random(using: &rng) {
                // A last capability (next = 0): MSI-X mappable, or one this build does not
                // decode. Some land inside the 32-byte fixed header, where none may start.
                let id: UInt16 = Bool.random(using: &rng) ? SHIM_VFIO_REGION_INFO_CAP_MSIX_MAPPABLE : 0x77
                b.replaceSubrange(at..<(at + 8), with: [UInt8(id & 0xFF), UInt8(id >> 8), 1, 0, 0, 0, 0, 0])
                planted = id == SHIM_VFIO_REGION_INFO_CAP_MSIX_MAPPABLE ? .msixMappable : .other(id: id, version: 1)
            }
            let hasCaps = n >= header && u32(b, 4) & capsFlag != 0 && at != 0
            guard let r = try? VFIORegionInfo.decode(b) else {
                refused += 1
                XCTAssertTrue(n < header || (hasCaps && (planted == nil || at < header)), "refused a well-formed reply \(b)")
                continue
            }
            XCTAssertGreaterThanOrEqual(n, header)
            XCTAssertEqual(r.flags, u32(b, 4))
            XCTAssertEqual(r.index, u32(b, 8))
            XCTAssertEqual(r.size, u64(b, 16))
            XCTAssertEqual(r.offset, u64(b, 24))
            XCTAssertLessThanOrEqual(r.capabilities.count, VFIORegionInfo.maxCapabilities)
            if !hasCaps { XCTAssertEqual(r.capabilities, []) }
            if hasCaps, let c = planted { XCTAssertEqual(r.capabilities, [c]) }
            XCTAssertFalse(hasCaps && at < header, "a chain into the fixed header decoded")
            if r.capabilities.isEmpty { decodedWithout += 1 } else { decodedWithCaps += 1 }
        }
        XCTAssertGreaterThan(decodedWithCaps, 100)
        XCTAssertGreaterThan(decodedWithout, 100)
        XCTAssertGreaterThan(refused, 100)
    }

    func testSetIRQs() throws {
        let dev = FakePerformer()
        let d = VFIODeviceCdev(performer: dev)
        try d.enable(.msix, eventfds: [10, 11, -1])
        var b = dev.calls[0].bytes
        XCTAssertEqual(b.count, 20 + 12)
        XCTAssertEqual(u32(b, 0), 32)
        XCTAssertEqual(u32(b, 4), SHIM_VFIO_IRQ_SET_DATA_EVENTFD | SHIM_VFIO_IRQ_SET_ACTION_TRIGGER)
        XCTAssertEqual(u32(b, 8), 2)
        XCTAssertEqual(u32(b, 12), 0)
        XCTAssertEqual(u32(b, 16), 3)
        XCTAssertEqual(Array(b[20...]), [10, 0, 0, 0, 11, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])

        try d.enable(.msi, eventfds: [5])
        XCTAssertEqual(u32(dev.calls[1].bytes, 8), 1)

        try d.enableINTx(trigger: 20, resample: 21)
        b = dev.calls[2].bytes
        XCTAssertEqual(u32(b, 4), SHIM_VFIO_IRQ_SET_DATA_EVENTFD | SHIM_VFIO_IRQ_SET_ACTION_TRIGGER)
        XCTAssertEqual(u32(b, 8), 0)
        b = dev.calls[3].bytes
        XCTAssertEqual(u32(b, 4), SHIM_VFIO_IRQ_SET_DATA_EVENTFD | SHIM_VFIO_IRQ_SET_ACTION_UNMASK)
        XCTAssertEqual(Array(b[20...]), [21, 0, 0, 0])

        try d.unmaskINTx()
        b = dev.calls[4].bytes
        XCTAssertEqual(b.count, 20)
        XCTAssertEqual(u32(b, 4), SHIM_VFIO_IRQ_SET_DATA_NONE | SHIM_VFIO_IRQ_SET_ACTION_UNMASK)
        XCTAssertEqual(u32(b, 16), 1)

        try d.disable(.msix)
        b = dev.calls[5].bytes
        XCTAssertEqual(u32(b, 4), SHIM_VFIO_IRQ_SET_DATA_NONE | SHIM_VFIO_IRQ_SET_ACTION_TRIGGER)
        XCTAssertEqual(u32(b, 16), 0)

        try d.setIRQs(index: 0, action: .mask, data: .bool([true, false]))
        b = dev.calls[6].bytes
        XCTAssertEqual(b.count, 22)
        XCTAssertEqual(u32(b, 4), SHIM_VFIO_IRQ_SET_DATA_BOOL | SHIM_VFIO_IRQ_SET_ACTION_MASK)
        XCTAssertEqual(Array(b[20...]), [1, 0])
    }

    func testKVMVFIORegistrationHandsOverTheCdevFD() throws {
        final class FakeKVMVFIO: KVMVFIODevice {
            var calls: [String] = []
            func addVFIOFile(_ file: Int32) throws { calls.append("add \(file)") }
            func deleteVFIOFile(_ file: Int32) throws { calls.append("del \(file)") }
        }
        let kvm = FakeKVMVFIO()
        let vfio = FakePerformer()
        vfio.descriptor = 33
        let cdev = VFIODeviceCdev(performer: vfio)
        try cdev.register(with: kvm)
        try cdev.unregister(from: kvm)
        XCTAssertEqual(kvm.calls, ["add 33", "del 33"])
        XCTAssertTrue(vfio.calls.isEmpty, "no ioctl on the device itself")
    }
}
