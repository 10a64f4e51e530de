import CShim
import Glibc
import HostSys
import Synchronization
import TestFakes
import XCTest
@testable import GuestMemory
@testable import VFIO

final class IOMMUContextTests: XCTestCase {
    static let gib: UInt64 = 1 << 30
    /// What VT-d with a 39-bit address width reports once a device is attached:
    /// everything but the MSI window, up to 2^39 - 1.
    static let vtd39: [ClosedRange<UInt64>] = [0...0xFEDF_FFFF, 0xFEF0_0000...0x7F_FFFF_FFFF]

    func testLayoutWithHoleFits() {
        let ram: [(guest: UInt64, size: UInt64)] = [(0, 3 * Self.gib), (4 * Self.gib, 8 * Self.gib)]
        XCTAssertNil(IOMMUContext.firstConflict(ram: ram, allowed: Self.vtd39))
        // Empty ranges are ignored.
        XCTAssertNil(IOMMUContext.firstConflict(ram: [(0xFEE0_0000, 0)], allowed: Self.vtd39))
    }

    func testRAMOverTheMSIWindow() throws {
        let ram: [(guest: UInt64, size: UInt64)] = [(0, 4 * Self.gib)]
        let c = try XCTUnwrap(IOMMUContext.firstConflict(ram: ram, allowed: Self.vtd39))
        XCTAssertEqual(c.ram, 0...0xFFFF_FFFF)
        XCTAssertEqual(c.blocked, 0xFEE0_0000...0xFEEF_FFFF)
        let e = VFIOError.iovaConflict(guestRange: c.ram, allowed: Self.vtd39, devices: ["0000:01:00.0"])
        let m = "\(e)"
        XCTAssertTrue(m.contains("guest RAM 0x0-0xffffffff"), m)
        XCTAssertTrue(m.contains("0000:01:00.0"), m)
        XCTAssertTrue(m.contains("MSI window 0xfee00000-0xfeefffff"), m)
        XCTAssertTrue(m.contains("use less guest memory (machine.memory) so RAM stays below 0xfee00000"), m)
    }

    func testRAMAboveThe39BitLimit() throws {
        let ram: [(guest: UInt64, size: UInt64)] = [(0, 3 * Self.gib), (4 * Self.gib, 512 * Self.gib)]
        let c = try XCTUnwrap(IOMMUContext.firstConflict(ram: ram, allowed: Self.vtd39))
        XCTAssertEqual(c.ram, (4 * Self.gib)...(516 * Self.gib - 1))
        XCTAssertEqual(c.blocked, 0x80_0000_0000...(516 * Self.gib - 1))
        let m = "\(VFIOError.iovaConflict(guestRange: c.ram, allowed: Self.vtd39, devices: []))"
        XCTAssertTrue(m.contains("above the IOMMU's limit 0x7fffffffff (39-bit address width)"), m)
        XCTAssertTrue(m.contains("use less guest memory (machine.memory) so RAM stays below the IOMMU's limit"), m)
    }

    func testReservedRegionInsideRAM() throws {
        // An RMRR at 0x7c000000-0x7fffffff.
        let allowed: [ClosedRange<UInt64>] = [0...0x7BFF_FFFF, 0x8000_0000...0xFEDF_FFFF, 0xFEF0_0000...UInt64(1) << 48 - 1]
        let c = try XCTUnwrap(IOMMUContext.firstConflict(ram: [(0, 3 * Self.gib)], allowed: allowed))
        XCTAssertEqual(c.blocked, 0x7C00_0000...0x7FFF_FFFF)
        let m = "\(VFIOError.iovaConflict(guestRange: c.ram, allowed: allowed, devices: ["0000:00:14.0"]))"
        XCTAssertTrue(m.contains("0x7c000000-0x7fffffff is a reserved IOVA region"), m)
        XCTAssertTrue(m.contains("RAM stays below 0x7c000000"), m)
    }

    func testAllowedRangesAreMergedAndWrapsConflict() {
        XCTAssertNil(IOMMUContext.firstConflict(ram: [(0, 0x2000)], allowed: [0x1000...0x1FFF, 0...0xFFF]))
        XCTAssertEqual(IOMMUContext.firstConflict(ram: [(0, 0x3000)], allowed: [0...0xFFF, 0x2000...0x2FFF])?.blocked, 0x1000...0x1FFF)
        XCTAssertEqual(IOMMUContext.firstConflict(ram: [(UInt64.max - 0xFFF, 0x2000)], allowed: [0...UInt64.max])?.ram, (UInt64.max - 0xFFF)...UInt64.max)
        XCTAssertEqual(IOMMUContext.firstConflict(ram: [(0x1000, 0x1000)], allowed: [])?.blocked, 0x1000...0x1FFF)
    }

    /// A fake iommufd that answers IOVA_RANGES with `ranges` and fails the
    /// `failMap`-th IOAS map (1-based) with `errno`.
    func fakeIOMMU(ranges: [ClosedRange<UInt64>] = vtd39, failMap: Int? = nil, errno: Int32 = ENOMEM) -> FakePerformer {
        let k = FakePerformer()
        let maps = Atomic<Int>(0)
        k.reply = { req, arg in
            switch req {
            case SHIM_IOMMU_IOAS_ALLOC:
                put32(arg, 8, 3)
            case SHIM_IOMMU_IOAS_IOVA_RANGES:
                let capacity = Int(u32(Array(arg), 8))
                put32(arg, 8, UInt32(ranges.count))
                put64(arg, 24, 4096)
                if capacity < ranges.count { return EMSGSIZE }
                let out = UnsafeMutableRawPointer(bitPattern: UInt(u64(Array(arg), 16)))!
                for (i, r) in ranges.enumerated() {
                    out.storeBytes(of: r.lowerBound, toByteOffset: i * 16, as: UInt64.self)
                    out.storeBytes(of: r.upperBound, toByteOffset: i * 16 + 8, as: UInt64.self)
                }
            case SHIM_IOMMU_IOAS_MAP:
                if maps.add(1, ordering: .relaxed).newValue == failMap { return errno }
            case SHIM_IOMMU_IOAS_UNMAP:
                break
            default:
                break
            }
            return nil
        }
        return k
    }

    func context(_ k: FakePerformer) throws -> IOMMUContext {
        let fd = IOMMUFD(performer: k)
        return IOMMUContext(iommufd: fd, ioas: try fd.allocateIOAS())
    }

    func testCheckGuestRAMThrowsWithTheDevices() throws {
        let ctx = try context(fakeIOMMU())
        ctx.attachedDevices = ["0000:01:00.0"]
        XCTAssertNoThrow(try ctx.checkGuestRAM([(0, 3 * Self.gib), (4 * Self.gib, Self.gib)]))
        XCTAssertThrowsError(try ctx.checkGuestRAM([(0, 3 * Self.gib), (4 * Self.gib, 600 * Self.gib)])) { e in
            guard case let VFIOError.iovaConflict(r, allowed, devices) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(r, (4 * Self.gib)...(604 * Self.gib - 1))
            XCTAssertEqual(allowed, Self.vtd39)
            XCTAssertEqual(devices, ["0000:01:00.0"])
        }
    }

    func testMapGuestRAMAtGuestAddresses() throws {
        let k = fakeIOMMU()
        let ctx = try context(k)
        let r = try ctx.mapGuestRAM([(0, 0x7f00_0000_0000, 3 * Self.gib), (4 * Self.gib, 0x7f00_c000_0000, Self.gib), (5 * Self.gib, 0x1000, 0)])
        XCTAssertEqual(r.bytes, 4 * Self.gib)
        XCTAssertGreaterThanOrEqual(r.seconds, 0)
        let maps = k.calls.filter { $0.request == SHIM_IOMMU_IOAS_MAP }
        XCTAssertEqual(maps.count, 2)
        XCTAssertEqual(u32(maps[1].bytes, 4), SHIM_IOMMU_IOAS_MAP_FIXED_IOVA | SHIM_IOMMU_IOAS_MAP_READABLE | SHIM_IOMMU_IOAS_MAP_WRITEABLE)
        XCTAssertEqual(u32(maps[1].bytes, 8), 3)
        XCTAssertEqual(u64(maps[1].bytes, 16), 0x7f00_c000_0000)
        XCTAssertEqual(u64(maps[1].bytes, 24), Self.gib)
        XCTAssertEqual(u64(maps[1].bytes, 32), 4 * Self.gib)
        XCTAssertEqual(ctx.mappings, [0...(3 * Self.gib - 1), (4 * Self.gib)...(5 * Self.gib - 1)])

        try ctx.unmapAll()
        let unmaps = k.calls.filter { $0.request == SHIM_IOMMU_IOAS_UNMAP }
        XCTAssertEqual(unmaps.map { u64($0.bytes, 8) }, [4 * Self.gib, 0])
        XCTAssertEqual(unmaps.map { u64($0.bytes, 16) }, [Self.gib, 3 * Self.gib])
        XCTAssertEqual(ctx.mappings, [])
    }

    func testMapGuestRAMRollsBackAndExplainsMemlock() throws {
        let k = fakeIOMMU(failMap: 2, errno: ENOMEM)
        let ctx = try context(k)
        XCTAssertThrowsError(try ctx.mapGuestRAM([(0, 0x7f00_0000_0000, 3 * Self.gib), (4 * Self.gib, 0x7f00_c000_0000, Self.gib)])) { e in
            guard case let VFIOError.guestRAMMapFailed(r, s) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(r, (4 * Self.gib)...(5 * Self.gib - 1))
            XCTAssertEqual(s.errno, ENOMEM)
            let m = "\(e)"
            XCTAssertTrue(m.contains("guest RAM 0x100000000-0x13fffffff"), m)
            XCTAssertTrue(m.contains("cannot pin guest RAM for DMA: raise RLIMIT_MEMLOCK (ulimit -l"), m)
            XCTAssertTrue(m.contains("or run as root"), m)
        }
        XCTAssertEqual(k.calls.map(\.request), [SHIM_IOMMU_IOAS_ALLOC, SHIM_IOMMU_IOAS_MAP, SHIM_IOMMU_IOAS_MAP, SHIM_IOMMU_IOAS_UNMAP])
        XCTAssertEqual(u64(k.calls[3].bytes, 8), 0)
        XCTAssertEqual(u64(k.calls[3].bytes, 16), 3 * Self.gib)
        XCTAssertEqual(ctx.mappings, [])
    }

    func testMapGuestRAMKeepsEarlierCallsOnFailure() throws {
        let k = fakeIOMMU(failMap: 2, errno: EINVAL)
        let ctx = try context(k)
        try ctx.mapGuestRAM([(0, 0x1000, 0x1000)])
        XCTAssertThrowsError(try ctx.mapGuestRAM([(0x1_0000_0000, 0x2000, 0x1000)])) { e in
            XCTAssertTrue("\(e)".contains("use less guest memory"), "\(e)")
        }
        XCTAssertEqual(ctx.mappings, [0...0xFFF])
        XCTAssertEqual(k.calls.filter { $0.request == SHIM_IOMMU_IOAS_UNMAP }.count, 0)
    }

    // MARK: - The IOAS as a DMAMapping

    static let hostLow: UInt64 = 0x7f00_0000_0000
    static let hostHigh: UInt64 = 0x7f00_c000_0000

    /// A context that knows 3 GiB of RAM at 0 and 1 GiB at 4 GiB.
    func dmaContext(_ k: FakePerformer) throws -> IOMMUContext {
        let ctx = try context(k)
        ctx.addGuestRAM([(0, Self.hostLow, 3 * Self.gib), (4 * Self.gib, Self.hostHigh, Self.gib)])
        return ctx
    }

    /// The (user_va, length, iova) of each IOMMU_IOAS_MAP so far.
    func maps(_ k: FakePerformer) -> [[UInt64]] {
        k.calls.filter { $0.request == SHIM_IOMMU_IOAS_MAP }.map { [u64($0.bytes, 16), u64($0.bytes, 24), u64($0.bytes, 32)] }
    }

    /// The (iova, length) of each IOMMU_IOAS_UNMAP so far.
    func unmaps(_ k: FakePerformer) -> [[UInt64]] {
        k.calls.filter { $0.request == SHIM_IOMMU_IOAS_UNMAP }.map { [u64($0.bytes, 8), u64($0.bytes, 16)] }
    }

    func testMapPinsTheGuestRAMBehindTheRangeAtTheIOVAAskedFor() throws {
        let k = fakeIOMMU()
        let ctx = try dmaContext(k)
        let dma: DMAMapping = ctx
        try dma.map(iova: 0x10_0000_0000, size: 0x2000, guestAddress: GuestAddress(0x1000))
        try dma.map(iova: 0x20_0000_0000, size: 0x1000, guestAddress: GuestAddress(4 * Self.gib + 0x5000))
        XCTAssertEqual(maps(k), [[Self.hostLow + 0x1000, 0x2000, 0x10_0000_0000], [Self.hostHigh + 0x5000, 0x1000, 0x20_0000_0000]])
        let m = k.calls.first { $0.request == SHIM_IOMMU_IOAS_MAP }!.bytes
        XCTAssertEqual(u32(m, 4), SHIM_IOMMU_IOAS_MAP_FIXED_IOVA | SHIM_IOMMU_IOAS_MAP_READABLE | SHIM_IOMMU_IOAS_MAP_WRITEABLE)
        XCTAssertEqual(u32(m, 8), 3, "into the context's IOAS")
        XCTAssertEqual(ctx.mappings, [0x10_0000_0000...0x10_0000_1FFF, 0x20_0000_0000...0x20_0000_0FFF])

        try dma.unmap(iova: 0x10_0000_0000, size: 0x2000)
        XCTAssertEqual(unmaps(k), [[0x10_0000_0000, 0x2000]])
        XCTAssertEqual(ctx.mappings, [0x20_0000_0000...0x20_0000_0FFF])
    }

    func testMapAcrossTwoRAMRangesIsOneMappingOfTwoPieces() throws {
        let k = fakeIOMMU()
        let ctx = try context(k)
        // Adjacent in guest space, apart in this process.
        ctx.addGuestRAM([(0, 0x1_0000, 0x1000), (0x1000, 0x9_0000, 0x1000)])
        try ctx.map(iova: 0x5000, size: 0x2000, guestAddress: GuestAddress(0))
        XCTAssertEqual(maps(k), [[0x1_0000, 0x1000, 0x5000], [0x9_0000, 0x1000, 0x6000]])
        XCTAssertEqual(ctx.mappings, [0x5000...0x6FFF])
        XCTAssertThrowsError(try ctx.unmap(iova: 0x5000, size: 0x1000), "the pieces are one mapping: no split")
        try ctx.unmap(iova: 0x5000, size: 0x2000)
        XCTAssertEqual(unmaps(k), [[0x5000, 0x2000]], "one unmap covers both pieces")
    }

    func testFailedPieceUnmapsTheOthers() throws {
        let k = fakeIOMMU(failMap: 2, errno: ENOMEM)
        let ctx = try context(k)
        ctx.addGuestRAM([(0, 0x1_0000, 0x1000), (0x1000, 0x9_0000, 0x1000)])
        XCTAssertThrowsError(try ctx.map(iova: 0x5000, size: 0x2000, guestAddress: GuestAddress(0))) { e in
            guard case let VFIOError.ioctl(s) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(s.errno, ENOMEM)
        }
        XCTAssertEqual(unmaps(k), [[0x5000, 0x1000]])
        XCTAssertEqual(ctx.mappings, [])
    }

    func testBadMapsAndSplittingUnmapsAreRefusedBeforeAnyIoctl() throws {
        let k = fakeIOMMU()
        let ctx = try dmaContext(k)
        try ctx.map(iova: 0x10_0000, size: 0x4000, guestAddress: GuestAddress(0x10_0000))
        let before = k.calls.count
        func refused(_ want: DMAMappingError, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { XCTAssertEqual($0 as? DMAMappingError, want, line: line) }
        }
        refused(.overlaps(iova: 0x10_3000...0x10_4FFF, existing: 0x10_0000...0x10_3FFF)) {
            try ctx.map(iova: 0x10_3000, size: 0x2000, guestAddress: GuestAddress(0))
        }
        refused(.notGuestRAM(guestAddress: 3 * Self.gib - 0x1000, size: 0x2000)) {
            try ctx.map(iova: 0, size: 0x2000, guestAddress: GuestAddress(3 * Self.gib - 0x1000)) // into the hole below 4 GiB
        }
        refused(.notGuestRAM(guestAddress: 5 * Self.gib, size: 0x1000)) { try ctx.map(iova: 0, size: 0x1000, guestAddress: GuestAddress(5 * Self.gib)) }
        refused(.empty(iova: 0)) { try ctx.map(iova: 0, size: 0, guestAddress: GuestAddress(0)) }
        refused(.wraps(address: .max, size: 2)) { try ctx.map(iova: .max, size: 2, guestAddress: GuestAddress(0)) }
        refused(.splits(iova: 0x10_1000...0x10_1FFF, existing: 0x10_0000...0x10_3FFF)) { try ctx.unmap(iova: 0x10_1000, size: 0x1000) }
        XCTAssertNoThrow(try ctx.unmap(iova: 0x20_0000, size: 0x1000), "nothing mapped there: not an error")
        XCTAssertEqual(k.calls.count, before, "no ioctl for any of them")
        XCTAssertEqual(ctx.mappings, [0x10_0000...0x10_3FFF])
    }

    func testUnmapOfARangeTakesEveryWholeMappingInIt() throws {
        let k = fakeIOMMU()
        let ctx = try dmaContext(k)
        try IdentityDMA.mapGuestRAM([(0x1000, 0x1000), (0x8000, 0x2000)], into: ctx)
        try ctx.unmap(iova: 0, size: 0x1_0000)
        XCTAssertEqual(unmaps(k), [[0x1000, 0x1000], [0x8000, 0x2000]])
        XCTAssertEqual(ctx.mappings, [])
    }

    func testAttachAndDetachMoveEveryBoundDevice() throws {
        let k = fakeIOMMU()
        let ctx = try context(k)
        let fake = FakeVFIODevice()
        let dev = AssignedVFIODevice(cdev: VFIODeviceCdev(performer: fake.performer, bdf: "0000:01:00.0"), io: FakeDeviceIO(),
                                     bdf: "0000:01:00.0", cdevPath: "/dev/vfio/devices/vfio0")
        try dev.bindAndAttach(ctx)
        func pageTableCalls() -> [(UInt, UInt32)] {
            fake.performer.calls.filter { $0.request == SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT || $0.request == SHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT }
                .map { ($0.request, $0.request == SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT ? u32($0.bytes, 8) : 0) }
        }
        XCTAssertEqual(pageTableCalls().map(\.0), [SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT])

        try ctx.detach()
        try ctx.detach()
        XCTAssertNil(dev.pageTableID)
        try ctx.attach()
        try ctx.attach()
        XCTAssertEqual(dev.pageTableID, 11)
        let calls = pageTableCalls()
        XCTAssertEqual(calls.map(\.0), [SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT, SHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT, SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT],
                       "each once: attach and detach skip devices already there")
        XCTAssertEqual(calls.last?.1, 3, "to the context's IOAS")

        // A closed device is no endpoint any more.
        dev.close()
        let n = fake.performer.calls.count
        try ctx.attach()
        try ctx.detach()
        XCTAssertEqual(fake.performer.calls.count, n)
    }
}

