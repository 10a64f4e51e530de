import CShim
import Glibc
import HostSys
import Synchronization
import TestFakes
import XCTest
@testable import GuestMemory
@testable import VFIO

/// `GuestDomains` against a fake iommufd (sequential IOAS ids from 3, IOVA
/// ranges per IOAS) and fake device cdevs.
final class GuestDomainsTests: XCTestCase {
    static let gib: UInt64 = 1 << 30
    static let hostLow: UInt64 = 0x7f00_0000_0000
    static let hostHigh: UInt64 = 0x7f00_c000_0000
    /// 3 GiB at 0, 1 GiB at 4 GiB.
    static let ram: [IOMMUContext.GuestRAMRange] = [(0, hostLow, 3 * gib), (4 * gib, hostHigh, gib)]
    /// VT-d, 39-bit, with a device attached: everything but the MSI window.
    static let vtd39: [ClosedRange<UInt64>] = [0...0xFEDF_FFFF, 0xFEF0_0000...0x7F_FFFF_FFFF]
    static let rw = SHIM_IOMMU_IOAS_MAP_FIXED_IOVA | SHIM_IOMMU_IOAS_MAP_READABLE | SHIM_IOMMU_IOAS_MAP_WRITEABLE

    /// A fake /dev/iommu: IOAS_ALLOC hands out 3, 4, 5, ...; IOVA_RANGES
    /// answers `ranges[ioas]` (default: everything) with `alignment`; MAP
    /// fails with `mapErrno` when set.
    final class FakeIOMMU: Sendable {
        let performer = FakePerformer()
        private struct State {
            var next: UInt32 = 3
            var ranges: [UInt32: [ClosedRange<UInt64>]] = [:]
            var alignment: UInt64 = 4096
            var mapErrno: Int32?
            var destroyErrno: Int32?
        }
        private let state = Mutex(State())
        var ranges: [UInt32: [ClosedRange<UInt64>]] {
            get { state.withLock { $0.ranges } }
            set { state.withLock { $0.ranges = newValue } }
        }
        var alignment: UInt64 {
            get { state.withLock { $0.alignment } }
            set { state.withLock { $0.alignment = newValue } }
        }
        var mapErrno: Int32? {
            get { state.withLock { $0.mapErrno } }
            set { state.withLock { $0.mapErrno = newValue } }
        }
        var destroyErrno: Int32? {
            get { state.withLock { $0.destroyErrno } }
            set { state.withLock { $0.destroyErrno = newValue } }
        }

        init() {
            performer.descriptor = 17
            // A cycle on purpose, as FakeVFIODevice's: the fake lives as long as its performer.
            performer.reply = { req, arg in
                switch req {
                case SHIM_IOMMU_IOAS_ALLOC:
                    let id = self.state.withLock { s in
                        s.next += 1
                        return s.next - 1
                    }
                    put32(arg, 8, id)
                case SHIM_IOMMU_IOAS_IOVA_RANGES:
                    let (all, alignment) = self.state.withLock { ($0.ranges, $0.alignment) }
                    let ranges = all[u32(Array(arg), 4)] ?? [0...UInt64.max]
                    let capacity = Int(u32(Array(arg), 8))
                    put32(arg, 8, UInt32(ranges.count))
                    put64(arg, 24, alignment)
                    if capacity < ranges.count { return EMSGSIZE }
                    let out = UnsafeMutableRawPointer(bitPattern: UInt(u64(Array(arg), 16)))!
                    for (i, r) in ranges.enumerated() {
                        out.storeBytes(of: r.lowerBound, toByteOffset: i * 16, as: UInt64.self)
                        out.storeBytes(of: r.upperBound, toByteOffset: i * 16 + 8, as: UInt64.self)
                    }
                case SHIM_IOMMU_IOAS_MAP:
                    return self.state.withLock { $0.mapErrno }
                case SHIM_IOMMU_DESTROY:
                    return self.state.withLock { $0.destroyErrno }
                default:
                    break
                }
                return nil
            }
        }

        /// (flags, ioas, user_va, length, iova) of each IOMMU_IOAS_MAP.
        var maps: [[UInt64]] {
            performer.calls.filter { $0.request == SHIM_IOMMU_IOAS_MAP }.map {
                [UInt64(u32($0.bytes, 4)), UInt64(u32($0.bytes, 8)), u64($0.bytes, 16), u64($0.bytes, 24), u64($0.bytes, 32)]
            }
        }
        /// (ioas, iova, length) of each IOMMU_IOAS_UNMAP.
        var unmaps: [[UInt64]] {
            performer.calls.filter { $0.request == SHIM_IOMMU_IOAS_UNMAP }.map { [UInt64(u32($0.bytes, 4)), u64($0.bytes, 8), u64($0.bytes, 16)] }
        }
        var allocs: Int { performer.calls.filter { $0.request == SHIM_IOMMU_IOAS_ALLOC }.count }
        var destroyed: [UInt32] { performer.calls.filter { $0.request == SHIM_IOMMU_DESTROY }.map { u32($0.bytes, 4) } }
    }

    /// A bound device on its own fake cdev; ATTACH answers hwpt = pt_id + 100.
    final class Device {
        let fake = FakeVFIODevice()
        let vfio: AssignedVFIODevice

        init(_ bdf: String) {
            vfio = AssignedVFIODevice(cdev: VFIODeviceCdev(performer: fake.performer, bdf: bdf), io: FakeDeviceIO(),
                                      bdf: bdf, cdevPath: "/dev/vfio/devices/vfio0")
            let fake = self.fake
            fake.performer.reply = { req, arg in
                let pt = req == SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT ? u32(Array(arg), 8) : 0
                let e = fake.answer(req, arg)
                if req == SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT, e == nil { put32(arg, 8, pt + 100) }
                return e
            }
        }

        /// The pt_id of each VFIO_DEVICE_ATTACH_IOMMUFD_PT, in order.
        var attaches: [UInt32] {
            fake.performer.calls.filter { $0.request == SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT }.map { u32($0.bytes, 8) }
        }
        var detachCalls: Int { fake.performer.calls.filter { $0.request == SHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT }.count }
    }

    var iommu: FakeIOMMU!
    var identity: IOMMUContext!

    override func setUpWithError() throws {
        iommu = FakeIOMMU()
        let fd = IOMMUFD(performer: iommu.performer)
        identity = IOMMUContext(iommufd: fd, ioas: try fd.allocateIOAS())
        XCTAssertEqual(identity.ioasID, 3)
    }

    func bound(_ bdf: String = "0000:01:00.0") throws -> Device {
        let d = Device(bdf)
        try d.vfio.bindAndAttach(identity)
        XCTAssertEqual(d.vfio.ioasID, 3)
        XCTAssertEqual(d.vfio.pageTableID, 103)
        return d
    }

    func domains(_ limits: GuestDomains.Limits = .init()) -> GuestDomains {
        GuestDomains(identity: identity, guestRAM: Self.ram, limits: limits)
    }

    func entry(_ iova: UInt64, _ size: UInt64, _ gpa: UInt64, _ p: DMAPermissions = .readWrite) -> DMAMappingTable.Entry {
        DMAMappingTable.Entry(iova: iova, size: size, guestAddress: gpa, permissions: p)
    }

    /// The iommufd calls since the setup (IOAS 3's alloc).
    var iommuCalls: Int { iommu.performer.calls.count - 1 }

    // MARK: - Domains and their IOASes

    func testIOASIsAllocatedLazilyOncePerDomain() throws {
        let a = try bound("0000:01:00.0"), b = try bound("0000:02:00.0")
        let g = domains()
        XCTAssertEqual(iommuCalls, 0, "no IOAS until a device joins a domain")
        XCTAssertEqual(g.maxPinnedBytes, 4 * Self.gib, "default: the guest RAM size")

        try g.attach(device: a.vfio, domain: 7, mappings: [])
        XCTAssertEqual(iommu.allocs, 2)
        XCTAssertEqual(g.ioasID(domain: 7), 4)
        XCTAssertEqual(a.attaches, [3, 4])
        XCTAssertEqual(a.vfio.ioasID, 4)
        XCTAssertEqual(a.vfio.pageTableID, 104, "the HWPT the kernel reported")
        XCTAssertEqual(g.placement(of: a.vfio), .domain(7))

        try g.attach(device: b.vfio, domain: 7, mappings: [entry(0x1000, 0x1000, 0)])
        XCTAssertEqual(iommu.allocs, 2, "domain 7 has its IOAS")
        XCTAssertEqual(iommu.maps.count, 0, "an existing domain is not replayed")
        XCTAssertEqual(b.attaches, [3, 4])

        try g.attach(device: b.vfio, domain: 9, mappings: [])
        XCTAssertEqual(iommu.allocs, 3)
        XCTAssertEqual(g.ioasID(domain: 9), 5)
        XCTAssertEqual(g.domainIDs, [7, 9])
        XCTAssertEqual(b.attaches, [3, 4, 5])
        XCTAssertEqual(g.counters.attaches, 3)
        XCTAssertEqual(a.detachCalls + b.detachCalls, 0, "moves are replacements, never detach + attach")
    }

    func testAttachReplaysTheMappingsWithFixedIOVAAndTheirPermissions() throws {
        let a = try bound()
        let g = domains()
        let mappings = [
            entry(0x10_0000, 0x2000, 0x1000, .read),
            entry(0x20_0000, 0x1000, 4 * Self.gib + 0x5000, .write),
            entry(0x30_0000, 0x2000, 3 * Self.gib - 0x1000 - 0x1000, .readWrite),
        ]
        // How many maps the IOAS had when the device moved onto it.
        final class Seen: Sendable { let maps = Mutex<[Int]>([]) }
        let seen = Seen(), iommu = self.iommu!, prior = a.fake.performer.reply
        a.fake.performer.reply = { req, arg in
            if req == SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT { seen.maps.withLock { $0.append(iommu.maps.count) } }
            return prior(req, arg)
        }
        try g.attach(device: a.vfio, domain: 1, mappings: mappings)
        XCTAssertEqual(seen.maps.withLock { $0 }, [3], "mapped first, then moved: the device never sees a half-built table")
        let fixed = UInt64(SHIM_IOMMU_IOAS_MAP_FIXED_IOVA)
        XCTAssertEqual(iommu.maps, [
            [fixed | UInt64(SHIM_IOMMU_IOAS_MAP_READABLE), 4, Self.hostLow + 0x1000, 0x2000, 0x10_0000],
            [fixed | UInt64(SHIM_IOMMU_IOAS_MAP_WRITEABLE), 4, Self.hostHigh + 0x5000, 0x1000, 0x20_0000],
            [UInt64(Self.rw), 4, Self.hostLow + 3 * Self.gib - 0x2000, 0x2000, 0x30_0000],
        ])
        XCTAssertEqual(a.attaches.last, 4)
        XCTAssertEqual(g.mappings(domain: 1), mappings)
        XCTAssertEqual(g.counters.maps, 3)
        XCTAssertEqual(g.counters.pinnedBytes, 0x5000)
        XCTAssertEqual(g.counters.peakPinnedBytes, 0x5000)
    }

    func testMapWithoutAnIOASRecordsNothingAndTheAttachReplaysIt() throws {
        let a = try bound()
        let g = domains()
        let e = entry(0x8000_0000, 0x4000, 0x2_0000)
        try g.map(domain: 2, entry: e)
        XCTAssertEqual(iommuCalls, 0, "a domain of emulated devices costs the host nothing")
        XCTAssertEqual(g.counters, GuestDomains.Counters())
        XCTAssertEqual(g.mappings(domain: 2), [])
        XCTAssertNoThrow(try g.unmap(domain: 2, entries: [e]), "nothing to unmap either")
        XCTAssertEqual(iommuCalls, 0)

        // The vIOMMU hands its table to the first attach.
        try g.attach(device: a.vfio, domain: 2, mappings: [e])
        XCTAssertEqual(iommu.maps, [[UInt64(Self.rw), 4, Self.hostLow + 0x2_0000, 0x4000, 0x8000_0000]])
        // From now on maps go straight in.
        try g.map(domain: 2, entry: entry(0x9000_0000, 0x1000, 4 * Self.gib))
        XCTAssertEqual(iommu.maps.last, [UInt64(Self.rw), 4, Self.hostHigh, 0x1000, 0x9000_0000])
        XCTAssertEqual(g.counters.maps, 2)
        XCTAssertEqual(g.counters.pinnedBytes, 0x5000)
    }

    func testReattachIssuesAttachWithTheNewPtID() throws {
        let a = try bound()
        let g = domains()
        try g.attach(device: a.vfio, domain: 1, mappings: [])
        try g.attach(device: a.vfio, domain: 2, mappings: [])
        XCTAssertEqual(a.attaches, [3, 4, 5])
        XCTAssertEqual(a.vfio.pageTableID, 105)
        XCTAssertEqual(g.placement(of: a.vfio), .domain(2))

        try g.attach(device: a.vfio, domain: 1, mappings: [])
        XCTAssertEqual(a.attaches, [3, 4, 5, 4])
        try g.attach(device: a.vfio, domain: 1, mappings: [])
        XCTAssertEqual(a.attaches, [3, 4, 5, 4], "already there: no ioctl")

        try g.attachIdentity(device: a.vfio)
        XCTAssertEqual(a.attaches.last, 3)
        XCTAssertEqual(a.vfio.ioasID, 3)
        XCTAssertEqual(g.placement(of: a.vfio), .identity)
        XCTAssertEqual(a.detachCalls, 0)
        XCTAssertEqual(g.counters.attaches, 5)
        XCTAssertEqual(a.vfio.deviceID, 4, "still bound")
    }

    func testAFailedMoveLeavesTheDeviceAndUndoesTheNewIOAS() throws {
        let a = try bound()
        let g = domains()
        a.fake.attachErrno = EPERM
        XCTAssertThrowsError(try g.attach(device: a.vfio, domain: 1, mappings: [entry(0, 0x1000, 0)])) { e in
            XCTAssertEqual(e as? VFIOError, .noInterruptRemapping(bdf: "0000:01:00.0"))
        }
        XCTAssertEqual(iommu.maps.count, 1)
        XCTAssertEqual(iommu.unmaps, [[4, 0, 0x1000]])
        XCTAssertEqual(iommu.destroyed, [4])
        XCTAssertNil(g.ioasID(domain: 1))
        XCTAssertEqual(a.vfio.ioasID, 3)
        XCTAssertEqual(g.placement(of: a.vfio), .identity)
        XCTAssertEqual(g.counters, GuestDomains.Counters())

        // A failed replay: same.
        a.fake.attachErrno = nil
        iommu.mapErrno = ENOMEM
        XCTAssertThrowsError(try g.attach(device: a.vfio, domain: 1, mappings: [entry(0, 0x1000, 0)]))
        XCTAssertEqual(iommu.destroyed, [4, 5])
        XCTAssertEqual(a.attaches, [3, 4])
        XCTAssertNil(g.ioasID(domain: 1))
    }

    func testDetachMovesOntoTheBlockedIOAS() throws {
        let a = try bound("0000:01:00.0"), b = try bound("0000:02:00.0")
        let g = domains()
        try g.attach(device: a.vfio, domain: 1, mappings: [entry(0, 0x1000, 0)])
        try g.detach(device: a.vfio)
        XCTAssertEqual(iommu.allocs, 3)
        XCTAssertEqual(g.blockedIOASID, 5)
        XCTAssertEqual(a.attaches.last, 5)
        XCTAssertEqual(g.placement(of: a.vfio), .blocked)
        XCTAssertEqual(a.detachCalls, 0, "DMA goes to the empty IOAS, not the kernel's detached state")

        try g.detach(device: b.vfio)
        XCTAssertEqual(iommu.allocs, 3, "one blocked IOAS for all")
        XCTAssertEqual(b.attaches, [3, 5])
        XCTAssertFalse(iommu.maps.contains { $0[1] == 5 }, "nothing is ever mapped in it")
        XCTAssertEqual(g.counters.detaches, 2)
    }

    // MARK: - Mapping

    func testUnmap() throws {
        let a = try bound()
        let g = domains()
        try g.attach(device: a.vfio, domain: 1, mappings: [])
        try g.map(domain: 1, entry: entry(0x1000, 0x1000, 0))
        try g.map(domain: 1, entry: entry(0x4000, 0x2000, 0x10_0000))
        try g.map(domain: 1, entry: entry(0x8000, 0x1000, 0x20_0000))
        XCTAssertEqual(g.counters.pinnedBytes, 0x4000)

        try g.unmap(domain: 1, entries: [entry(0x1000, 0x1000, 0), entry(0x4000, 0x2000, 0x10_0000)])
        XCTAssertEqual(iommu.unmaps, [[4, 0x1000, 0x1000], [4, 0x4000, 0x2000]])
        XCTAssertEqual(g.mappings(domain: 1).map(\.iova), [0x8000])
        XCTAssertEqual(g.counters.unmaps, 2)
        XCTAssertEqual(g.counters.pinnedBytes, 0x1000)
        XCTAssertEqual(g.counters.peakPinnedBytes, 0x4000)

        // A split is refused with no ioctl; nothing mapped there is no error.
        XCTAssertThrowsError(try g.unmap(domain: 1, entries: [entry(0x8000, 0x800, 0)])) { e in
            XCTAssertEqual(e as? DMAMappingError, .splits(iova: 0x8000...0x87FF, existing: 0x8000...0x8FFF))
        }
        try g.unmap(domain: 1, entries: [entry(0x10_0000, 0x1000, 0)])
        XCTAssertEqual(iommu.unmaps.count, 2)
        XCTAssertEqual(g.counters.pinnedBytes, 0x1000)
        XCTAssertEqual(g.counters.maps - g.counters.unmaps, 1)
    }

    func testPinLimitIsRefusedWithNothingMapped() throws {
        let a = try bound()
        let g = domains(.init(maxPinnedBytes: 0x3000))
        try g.attach(device: a.vfio, domain: 1, mappings: [entry(0, 0x2000, 0)])
        let before = iommu.performer.calls.count
        XCTAssertThrowsError(try g.map(domain: 1, entry: entry(0x10_0000, 0x2000, 0x10_0000))) { e in
            XCTAssertEqual(e as? VFIOError, .pinLimitExceeded(domain: 1, size: 0x2000, pinned: 0x2000, limit: 0x3000))
            XCTAssertTrue("\(e)".contains("than the limit of 0x3000 bytes"), "\(e)")
            XCTAssertTrue("\(e)".contains("nothing was mapped"), "\(e)")
        }
        XCTAssertEqual(iommu.performer.calls.count, before, "no ioctl")
        XCTAssertEqual(g.mappings(domain: 1).count, 1)
        try g.map(domain: 1, entry: entry(0x10_0000, 0x1000, 0x10_0000))
        XCTAssertEqual(g.counters.pinnedBytes, 0x3000, "up to the limit is fine")

        // A replay past the limit is refused before the IOAS is even allocated.
        let b = try bound("0000:02:00.0")
        let n = iommu.performer.calls.count
        XCTAssertThrowsError(try g.attach(device: b.vfio, domain: 2, mappings: [entry(0, 0x1000, 0)])) { e in
            XCTAssertEqual(e as? VFIOError, .pinLimitExceeded(domain: 2, size: 0x1000, pinned: 0x3000, limit: 0x3000))
        }
        XCTAssertEqual(iommu.performer.calls.count, n)
        XCTAssertEqual(b.attaches, [3])

        // Unmapping makes room again.
        try g.unmap(domain: 1, entries: [entry(0, 0x2000, 0)])
        try g.attach(device: b.vfio, domain: 2, mappings: [entry(0, 0x1000, 0)])
        XCTAssertEqual(g.counters.pinnedBytes, 0x2000)
        XCTAssertEqual(g.counters.peakPinnedBytes, 0x3000)
    }

    func testNonRAMAndBadRangesAreRefusedBeforeAnyIoctl() throws {
        let a = try bound()
        let g = domains(.init(maxMappingsPerDomain: 2))
        try g.attach(device: a.vfio, domain: 1, mappings: [])
        let before = iommu.performer.calls.count
        func refused(_ want: DMAMappingError, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { XCTAssertEqual($0 as? DMAMappingError, want, line: line) }
        }
        let hole = entry(0, 0x2000, 3 * Self.gib - 0x1000) // into the hole below 4 GiB
        for domain: UInt32 in [1, 2] { // with an IOAS, and without
            refused(.notGuestRAM(guestAddress: 3 * Self.gib - 0x1000, size: 0x2000)) { try g.map(domain: domain, entry: hole) }
            refused(.notGuestRAM(guestAddress: 5 * Self.gib, size: 0x1000)) { try g.map(domain: domain, entry: self.entry(0, 0x1000, 5 * Self.gib)) }
            refused(.empty(iova: 0)) { try g.map(domain: domain, entry: self.entry(0, 0, 0)) }
            refused(.wraps(address: .max, size: 2)) { try g.map(domain: domain, entry: self.entry(.max, 2, 0)) }
        }
        let b = try bound("0000:02:00.0")
        refused(.notGuestRAM(guestAddress: 3 * Self.gib - 0x1000, size: 0x2000)) { try g.attach(device: b.vfio, domain: 2, mappings: [hole]) }
        refused(.overlaps(iova: 0x1000...0x1FFF, existing: 0...0x1FFF)) {
            try g.attach(device: b.vfio, domain: 2, mappings: [self.entry(0, 0x2000, 0), self.entry(0x1000, 0x1000, 0)])
        }
        refused(.tooManyMappings(limit: 2)) {
            try g.attach(device: b.vfio, domain: 2, mappings: [self.entry(0, 0x1000, 0), self.entry(0x1000, 0x1000, 0), self.entry(0x2000, 0x1000, 0)])
        }
        XCTAssertEqual(iommu.performer.calls.count, before, "no ioctl for any of them")
        XCTAssertEqual(b.attaches, [3])
        XCTAssertEqual(g.domainIDs, [1])

        // The per-domain cap holds for maps into an IOAS too (the context's table).
        try g.map(domain: 1, entry: entry(0, 0x1000, 0))
        try g.map(domain: 1, entry: entry(0x1000, 0x1000, 0))
        refused(.tooManyMappings(limit: 2)) { try g.map(domain: 1, entry: self.entry(0x2000, 0x1000, 0)) }
        refused(.overlaps(iova: 0x1000...0x1FFF, existing: 0x1000...0x1FFF)) { try g.map(domain: 1, entry: self.entry(0x1000, 0x1000, 0)) }
    }

    func testTooManyDomains() throws {
        let a = try bound()
        let g = domains(.init(maxDomains: 2))
        try g.attach(device: a.vfio, domain: 1, mappings: [])
        try g.attach(device: a.vfio, domain: 2, mappings: [])
        let n = iommu.performer.calls.count
        XCTAssertThrowsError(try g.attach(device: a.vfio, domain: 3, mappings: [])) { e in
            XCTAssertEqual(e as? VFIOError, .tooManyGuestDomains(domain: 3, limit: 2))
        }
        XCTAssertEqual(iommu.performer.calls.count, n)
        try g.attach(device: a.vfio, domain: 1, mappings: [])
        try g.free(domain: 2)
        XCTAssertNoThrow(try g.attach(device: a.vfio, domain: 3, mappings: []), "freeing made room")
    }

    func testTheDeviceMustBeBoundToTheVMsIOMMUFD() throws {
        let g = domains()
        let unbound = Device("0000:03:00.0")
        XCTAssertThrowsError(try g.attach(device: unbound.vfio, domain: 1, mappings: [])) { e in
            guard case VFIOError.deviceNotReady("0000:03:00.0", _) = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try g.detach(device: unbound.vfio))
        XCTAssertThrowsError(try g.attachIdentity(device: unbound.vfio))

        let otherFD = IOMMUFD(performer: FakeIOMMU().performer)
        let other = IOMMUContext(iommufd: otherFD, ioas: try otherFD.allocateIOAS())
        let elsewhere = Device("0000:04:00.0")
        try elsewhere.vfio.bindAndAttach(other)
        XCTAssertThrowsError(try g.attach(device: elsewhere.vfio, domain: 1, mappings: [])) { e in
            XCTAssertTrue("\(e)".contains("another iommufd"), "\(e)")
        }

        let closed = try bound()
        closed.vfio.close()
        XCTAssertThrowsError(try g.attach(device: closed.vfio, domain: 1, mappings: []))
        XCTAssertEqual(g.placement(of: closed.vfio), .detached)
        XCTAssertEqual(iommuCalls, 0)
    }

    // MARK: - Freeing and closing

    func testFreeDestroysTheIOASOnceNoDeviceIsOnIt() throws {
        let a = try bound()
        let g = domains()
        try g.attach(device: a.vfio, domain: 1, mappings: [entry(0x1000, 0x1000, 0), entry(0x8000, 0x2000, 0x4000)])
        XCTAssertThrowsError(try g.free(domain: 1)) { e in
            XCTAssertEqual(e as? VFIOError, .guestDomainInUse(domain: 1, devices: ["0000:01:00.0"]))
            XCTAssertTrue("\(e)".contains("0000:01:00.0 is still attached to it"), "\(e)")
        }
        XCTAssertEqual(iommu.unmaps, [])
        XCTAssertEqual(iommu.destroyed, [])
        XCTAssertEqual(g.domainIDs, [1])

        try g.detach(device: a.vfio)
        try g.free(domain: 1)
        XCTAssertEqual(iommu.unmaps, [[4, 0x8000, 0x2000], [4, 0x1000, 0x1000]])
        XCTAssertEqual(iommu.destroyed, [4])
        XCTAssertEqual(g.domainIDs, [])
        XCTAssertEqual(g.counters.pinnedBytes, 0)
        XCTAssertEqual(g.counters.unmaps, 2)
        XCTAssertNoThrow(try g.free(domain: 1), "no IOAS: nothing to do")
        XCTAssertNoThrow(try g.free(domain: 99))
        XCTAssertEqual(iommu.destroyed, [4])

        // The guest may reuse the id: a fresh IOAS, replayed.
        try g.attach(device: a.vfio, domain: 1, mappings: [entry(0x1000, 0x1000, 0)])
        XCTAssertEqual(g.ioasID(domain: 1), 6)
        XCTAssertEqual(iommu.maps.last?[1], 6)
    }

    func testAClosedDeviceDoesNotHoldADomain() throws {
        let a = try bound()
        let g = domains()
        try g.attach(device: a.vfio, domain: 1, mappings: [])
        a.vfio.close() // the kernel detaches it when its fd closes
        XCTAssertNoThrow(try g.free(domain: 1))
        XCTAssertEqual(iommu.destroyed, [4])
    }

    func testAnIOASThatWillNotDieIsLeftForClose() throws {
        let a = try bound()
        let g = domains()
        try g.attach(device: a.vfio, domain: 1, mappings: [entry(0, 0x1000, 0)])
        try g.attachIdentity(device: a.vfio)
        iommu.destroyErrno = EBUSY
        XCTAssertThrowsError(try g.free(domain: 1))
        XCTAssertEqual(g.domainIDs, [], "the guest freed it: a new domain 1 starts afresh")
        XCTAssertEqual(g.counters.pinnedBytes, 0)
        iommu.destroyErrno = nil
        try g.close()
        XCTAssertEqual(iommu.destroyed, [4, 4])
    }

    func testCloseUnmapsAndDestroysEverything() throws {
        let a = try bound("0000:01:00.0"), b = try bound("0000:02:00.0")
        let g = domains()
        try g.attach(device: a.vfio, domain: 1, mappings: [entry(0x1000, 0x1000, 0)])
        try g.attach(device: b.vfio, domain: 2, mappings: [entry(0x2000, 0x1000, 0), entry(0x8000, 0x1000, 0)])
        try g.detach(device: b.vfio)
        try g.map(domain: 3, entry: entry(0, 0x1000, 0)) // no IOAS: nothing to clean
        a.vfio.close()
        b.vfio.close()
        try g.close()
        XCTAssertEqual(iommu.unmaps, [[4, 0x1000, 0x1000], [5, 0x8000, 0x1000], [5, 0x2000, 0x1000]])
        XCTAssertEqual(iommu.destroyed, [4, 5, 6])
        XCTAssertEqual(g.domainIDs, [])
        XCTAssertNil(g.blockedIOASID)
        XCTAssertEqual(g.counters.pinnedBytes, 0)
        XCTAssertEqual(g.counters.maps, g.counters.unmaps)
        XCTAssertEqual(g.counters.peakPinnedBytes, 0x3000)

        XCTAssertNoThrow(try g.close(), "idempotent")
        XCTAssertEqual(iommu.destroyed.count, 3)
        XCTAssertThrowsError(try g.map(domain: 1, entry: entry(0, 0x1000, 0))) { XCTAssertEqual($0 as? VFIOError, .guestDomainsClosed) }
        XCTAssertThrowsError(try g.free(domain: 1)) { XCTAssertEqual($0 as? VFIOError, .guestDomainsClosed) }
    }

    func testTheIdentityContextsDetachLeavesGuestDomainDevicesAlone() throws {
        let a = try bound("0000:01:00.0"), b = try bound("0000:02:00.0")
        let g = domains()
        try g.attach(device: a.vfio, domain: 1, mappings: [])
        try identity.detach()
        XCTAssertEqual(a.detachCalls, 0)
        XCTAssertEqual(g.placement(of: a.vfio), .domain(1))
        XCTAssertEqual(b.detachCalls, 1)
        XCTAssertEqual(g.placement(of: b.vfio), .detached)
        try identity.attach()
        XCTAssertEqual(g.placement(of: b.vfio), .identity)
        XCTAssertEqual(g.placement(of: a.vfio), .domain(1))
    }

    // MARK: - Reserved regions, input range, page sizes

    func testReservedRegionsAreTheComplementOfTheDevicesIOAS() throws {
        let a = try bound()
        let g = domains()
        iommu.ranges = [3: Self.vtd39, 4: [0...0xFEDF_FFFF, 0xFEF0_0000...0xFFFF_FFFF_FFFF]]
        XCTAssertEqual(try g.reservedRegions(for: a.vfio), [0xFEE0_0000...0xFEEF_FFFF, 0x80_0000_0000...UInt64.max])
        XCTAssertEqual(try g.usableIOVARange, 0...0x7F_FFFF_FFFF)

        try g.attach(device: a.vfio, domain: 1, mappings: [])
        XCTAssertEqual(try g.reservedRegions(for: a.vfio), [0xFEE0_0000...0xFEEF_FFFF, 0x1_0000_0000_0000...UInt64.max], "the domain's IOAS")
        let call = try XCTUnwrap(iommu.performer.calls.last)
        XCTAssertEqual(call.request, SHIM_IOMMU_IOAS_IOVA_RANGES)
        XCTAssertEqual(u32(call.bytes, 4), 4)

        try g.detach(device: a.vfio)
        XCTAssertEqual(try g.reservedRegions(for: a.vfio), [], "the blocked IOAS allows everything here")

        a.vfio.close()
        XCTAssertThrowsError(try g.reservedRegions(for: a.vfio)) { e in
            guard case VFIOError.deviceNotReady = e else { return XCTFail("\(e)") }
        }
    }

    func testComplement() {
        XCTAssertEqual(GuestDomains.complement(of: [0...UInt64.max]), [])
        XCTAssertEqual(GuestDomains.complement(of: []), [0...UInt64.max])
        XCTAssertEqual(GuestDomains.complement(of: [0x1000...0x1FFF]), [0...0xFFF, 0x2000...UInt64.max])
        XCTAssertEqual(GuestDomains.complement(of: [0x3000...UInt64.max, 0x1000...0x1FFF, 0x1800...0x27FF]), [0...0xFFF, 0x2800...0x2FFF],
                       "unsorted and overlapping ranges are merged first")
        XCTAssertEqual(GuestDomains.complement(of: [0...0xFFF, 0x1000...0x1FFF]), [0x2000...UInt64.max], "adjacent ranges leave no hole")
    }

    func testUsableRangeNeedsSomething() throws {
        let g = domains()
        iommu.ranges = [3: []]
        XCTAssertThrowsError(try g.usableIOVARange)
        iommu.ranges = [3: [0x1000...0x1FFF, 0x10_0000...0x1F_FFFF]]
        XCTAssertEqual(try g.usableIOVARange, 0x1000...0x1F_FFFF)
    }

    func testPageSizeMask() throws {
        let g = domains()
        XCTAssertEqual(try g.pageSizeMask, 0x4020_1000, "4 KiB | 2 MiB | 1 GiB")
        iommu.alignment = 1 // an IOAS no device is attached to yet
        XCTAssertEqual(try g.pageSizeMask, 0x4020_1000)
        XCTAssertEqual(try GuestDomains.pageSizeMask(alignment: 0), 0x4020_1000)
        XCTAssertEqual(try GuestDomains.pageSizeMask(alignment: 0x1_0000), 0x4021_0000, "64 KiB granule, then 2 MiB | 1 GiB")
        XCTAssertEqual(try GuestDomains.pageSizeMask(alignment: 0x20_0000), 0x4020_0000)
        XCTAssertThrowsError(try GuestDomains.pageSizeMask(alignment: 0x3000))
        XCTAssertThrowsError(try GuestDomains.pageSizeMask(alignment: 1 << 31))
    }

    // MARK: - AssignedVFIODevice.reattach

    func testReattachKeepsTheBindingAndNeedsOne() throws {
        let a = try bound()
        try a.vfio.reattach(ptID: 42)
        XCTAssertEqual(a.vfio.ioasID, 42)
        XCTAssertEqual(a.vfio.pageTableID, 142)
        XCTAssertEqual(a.vfio.deviceID, 4)
        XCTAssertEqual(a.fake.performer.calls.filter { $0.request == SHIM_VFIO_DEVICE_BIND_IOMMUFD }.count, 1)
        a.fake.attachErrno = EINVAL
        XCTAssertThrowsError(try a.vfio.reattach(ptID: 43))
        XCTAssertEqual(a.vfio.ioasID, 42, "a failed replace leaves it where it was")
        XCTAssertEqual(a.vfio.pageTableID, 142)

        let unbound = Device("0000:05:00.0")
        XCTAssertThrowsError(try unbound.vfio.reattach(ptID: 3))
        XCTAssertEqual(unbound.attaches, [])
    }
}
