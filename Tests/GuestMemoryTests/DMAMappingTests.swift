import Foundation
import Synchronization
import TestFakes
import XCTest
@testable import GuestMemory

/// Records what a client asks of a DMA mapping; refuses maps `refuse` picks.
final class RecordingDMA: DMAMapping {
    enum Call: Equatable { case map(iova: UInt64, size: UInt64, guest: UInt64), unmap(iova: UInt64, size: UInt64), attach, detach }
    struct Refused: Error {}
    private let log = Mutex<[Call]>([])
    private let refusal = Mutex<@Sendable (UInt64) -> Bool>({ _ in false })
    var calls: [Call] { log.withLock { $0 } }
    var refuse: @Sendable (UInt64) -> Bool {
        get { refusal.withLock { $0 } }
        set { refusal.withLock { $0 = newValue } }
    }
    func map(iova: UInt64, size: UInt64, guestAddress: GuestAddress, permissions: DMAPermissions) throws {
        log.withLock { $0.append(.map(iova: iova, size: size, guest: guestAddress.raw)) }
        if refuse(iova) { throw Refused() }
    }
    func unmap(iova: UInt64, size: UInt64) throws { log.withLock { $0.append(.unmap(iova: iova, size: size)) } }
    func attach() throws { log.withLock { $0.append(.attach) } }
    func detach() throws { log.withLock { $0.append(.detach) } }
}

final class DMAMappingTableTests: XCTestCase {
    func testMapAndTranslateInsideOneMapping() throws {
        var t = DMAMappingTable()
        try t.map(iova: 0x1_0000, size: 0x2000, guestAddress: 0x5000)
        XCTAssertEqual(t.translate(iova: 0x1_0000, length: 0x2000), 0x5000)
        XCTAssertEqual(t.translate(iova: 0x1_1000, length: 0x1000), 0x6000)
        XCTAssertEqual(t.translate(iova: 0x1_2000, length: 0), 0x7000, "0 bytes at the end, as GuestRAM allows")
        XCTAssertNil(t.translate(iova: 0xFFFF, length: 1), "below")
        XCTAssertNil(t.translate(iova: 0x1_1FFF, length: 2), "past the end")
        XCTAssertNil(t.translate(iova: 0x1_2000, length: 1))
        XCTAssertNil(t.translate(iova: 0x1_2001, length: 0))
        XCTAssertNil(t.translate(iova: .max, length: .max), "no trap on hostile values")
    }

    func testOverlappingMapsAreRejectedAndChangeNothing() throws {
        var t = DMAMappingTable()
        try t.map(iova: 0x1_0000, size: 0x2000, guestAddress: 0x5000)
        let before = t
        for (iova, size) in [(UInt64(0x1_1000), UInt64(0x2000)), (0xF000, 0x1001), (0x1_1FFF, 0x10), (0x1_0000, 0x2000), (0x1_0800, 0x10), (0, 0x10_0000)] {
            XCTAssertThrowsError(try t.map(iova: iova, size: size, guestAddress: 0x20_0000)) { e in
                XCTAssertEqual(e as? DMAMappingError, .overlaps(iova: iova...(iova + size - 1), existing: 0x1_0000...0x1_1FFF))
            }
        }
        XCTAssertEqual(t, before)
        // Adjacent on either side is fine.
        try t.map(iova: 0xF000, size: 0x1000, guestAddress: 0x1000)
        try t.map(iova: 0x1_2000, size: 0x1000, guestAddress: 0x9000)
        XCTAssertEqual(t.entries.map(\.iova), [0xF000, 0x1_0000, 0x1_2000], "kept in IOVA order")
    }

    func testUnmapRemovesWholeMappingsAndRefusesToSplitOne() throws {
        var t = DMAMappingTable()
        try t.map(iova: 0x5000, size: 0x2000, guestAddress: 0x40_0000) // C
        try t.map(iova: 0x1000, size: 0x1000, guestAddress: 0x10_0000) // A
        try t.map(iova: 0x2000, size: 0x1000, guestAddress: 0x20_0000) // B
        let all = t

        // Splitting C from either end, or A while covering B whole: refused, nothing removed.
        XCTAssertThrowsError(try t.unmap(iova: 0x5000, size: 0x1000)) { e in
            XCTAssertEqual(e as? DMAMappingError, .splits(iova: 0x5000...0x5FFF, existing: 0x5000...0x6FFF))
        }
        XCTAssertThrowsError(try t.unmap(iova: 0x6000, size: 0x1000))
        XCTAssertThrowsError(try t.unmap(iova: 0x1800, size: 0x2000)) { e in
            XCTAssertEqual(e as? DMAMappingError, .splits(iova: 0x1800...0x37FF, existing: 0x1000...0x1FFF))
        }
        XCTAssertEqual(t, all)

        // Nothing mapped there: not an error (virtio-iommu), nothing removed.
        XCTAssertEqual(try t.unmap(iova: 0x3000, size: 0x2000), [])
        XCTAssertEqual(t, all)

        XCTAssertEqual(try t.unmap(iova: 0x1000, size: 0x1000).map(\.iova), [0x1000])
        // One range covering several mappings and the holes between them.
        XCTAssertEqual(try t.unmap(iova: 0, size: 0x10_0000).map(\.iova), [0x2000, 0x5000])
        XCTAssertEqual(t.entries, [])
    }

    func testLookupsAcrossMappingBoundariesFail() throws {
        // Adjacent in IOVA and in guest space: still two mappings.
        var t = DMAMappingTable()
        try t.map(iova: 0x1000, size: 0x1000, guestAddress: 0x8000)
        try t.map(iova: 0x2000, size: 0x1000, guestAddress: 0x9000)
        XCTAssertEqual(t.translate(iova: 0x1FF8, length: 8), 0x8FF8)
        XCTAssertEqual(t.translate(iova: 0x2000, length: 8), 0x9000)
        XCTAssertNil(t.translate(iova: 0x1FFC, length: 8))
        XCTAssertNil(t.translate(iova: 0x1000, length: 0x2000))

        // Swapped in guest space: the IOVA range is contiguous, guest memory is not.
        var s = DMAMappingTable()
        try s.map(iova: 0x1000, size: 0x1000, guestAddress: 0x9000)
        try s.map(iova: 0x2000, size: 0x1000, guestAddress: 0x8000)
        XCTAssertEqual(s.translate(iova: 0x1FFF, length: 1), 0x9FFF)
        XCTAssertEqual(s.translate(iova: 0x2000, length: 1), 0x8000)
        XCTAssertNil(s.translate(iova: 0x1FFF, length: 2))
    }

    func testBadArgumentsAreErrorsNotTraps() throws {
        var t = DMAMappingTable()
        XCTAssertThrowsError(try t.map(iova: 0x1000, size: 0, guestAddress: 0)) { XCTAssertEqual($0 as? DMAMappingError, .empty(iova: 0x1000)) }
        XCTAssertThrowsError(try t.map(iova: .max - 0xFFF, size: 0x2000, guestAddress: 0)) {
            XCTAssertEqual($0 as? DMAMappingError, .wraps(address: .max - 0xFFF, size: 0x2000))
        }
        XCTAssertThrowsError(try t.map(iova: 0, size: 0x2000, guestAddress: .max)) { XCTAssertEqual($0 as? DMAMappingError, .wraps(address: .max, size: 0x2000)) }
        XCTAssertThrowsError(try t.unmap(iova: 2, size: .max)) { XCTAssertEqual($0 as? DMAMappingError, .wraps(address: 2, size: .max)) }
        XCTAssertThrowsError(try t.unmap(iova: 0, size: 0))
        // The very top of both spaces is usable.
        try t.map(iova: .max - 0xFFF, size: 0x1000, guestAddress: .max - 0xFFF)
        XCTAssertEqual(t.translate(iova: .max, length: 1), .max)
        XCTAssertNil(t.translate(iova: .max, length: 2))
        XCTAssertThrowsError(try t.unmap(iova: 0, size: .max), "[0, 2^64 - 1) leaves the mapping's last byte: a split")
        XCTAssertEqual(try t.unmap(iova: .max - 0xFFF, size: 0x1000).count, 1)
    }

    func testLimitOnMappings() throws {
        var t = DMAMappingTable(limit: 2)
        try t.map(iova: 0, size: 0x1000, guestAddress: 0)
        try t.map(iova: 0x1000, size: 0x1000, guestAddress: 0)
        XCTAssertThrowsError(try t.map(iova: 0x2000, size: 0x1000, guestAddress: 0)) { XCTAssertEqual($0 as? DMAMappingError, .tooManyMappings(limit: 2)) }
        try t.unmap(iova: 0, size: 0x1000)
        XCTAssertNoThrow(try t.map(iova: 0x2000, size: 0x1000, guestAddress: 0))
    }

    /// `remove` takes out exactly the entries named, by IOVA: a run of
    /// consecutive ones (one UNMAP's range), scattered ones in any order,
    /// and ignores those the table does not hold.
    func testRemoveTakesExactlyTheNamedEntries() throws {
        var t = DMAMappingTable()
        for k in 0..<10 { try t.map(iova: UInt64(k) << 12, size: 0x1000, guestAddress: UInt64(k) << 20) }
        let all = t.entries
        var run = t
        run.remove(Array(all[3..<7]))
        XCTAssertEqual(run.entries, Array(all[0..<3] + all[7...]))
        var scattered = t
        scattered.remove([all[8], all[1], all[4]])
        XCTAssertEqual(scattered.entries.map { $0.iova >> 12 }, [0, 2, 3, 5, 6, 7, 9])
        var absent = t
        absent.remove([DMAMappingTable.Entry(iova: 0x10_0000, size: 0x1000, guestAddress: 0), all[9]])
        XCTAssertEqual(absent.entries, Array(all[0..<9]))
        var whole = t
        whole.remove(all)
        XCTAssertEqual(whole.entries, [])
        var none = t
        none.remove([])
        XCTAssertEqual(none.entries, all)
        // A run that starts at a held entry but goes on past the table's end.
        var past = t
        past.remove([all[8], all[9], DMAMappingTable.Entry(iova: 0xA000, size: 0x1000, guestAddress: 0)])
        XCTAssertEqual(past.entries, Array(all[0..<8]))
    }

    func testMatchesAReferenceModelOnRandomOperations() throws {
        // A byte-per-page model: the table must accept exactly the maps that
        // touch no mapped page, refuse exactly the unmaps that cut a mapping,
        // and translate every page as the model does.
        var rng = SplitMix64(seed: 0xD3A_7AB1E)
        var t = DMAMappingTable()
        var owner = [Int?](repeating: nil, count: 64) // page -> mapping start page
        var target: [Int: UInt64] = [:] // mapping start page -> guest address
        var size: [Int: Int] = [:]
        for _ in 0..<4000 {
            let start = Int(rng.next() % 64), pages = 1 + Int(rng.next() % 8)
            let end = min(start + pages, 64)
            let iova = UInt64(start) << 12, bytes = UInt64(end - start) << 12
            if rng.next() % 2 == 0 {
                let guest = (rng.next() % 1024) << 12
                let free = owner[start..<end].allSatisfy { $0 == nil }
                do {
                    try t.map(iova: iova, size: bytes, guestAddress: guest)
                    XCTAssertTrue(free, "mapped over a mapping at page \(start)")
                    for p in start..<end { owner[p] = start }
                    target[start] = guest
                    size[start] = end - start
                } catch {
                    XCTAssertFalse(free, "refused a map of free pages \(start)..<\(end): \(error)")
                }
            } else {
                let hit = Set(owner[start..<end].compactMap { $0 })
                let cuts = hit.contains { $0 < start || $0 + size[$0]! > end }
                do {
                    let gone = try t.unmap(iova: iova, size: bytes)
                    XCTAssertFalse(cuts, "split a mapping in \(start)..<\(end)")
                    XCTAssertEqual(Set(gone.map { Int($0.iova >> 12) }), hit)
                    for m in hit { for p in m..<(m + size[m]!) { owner[p] = nil } }
                } catch {
                    XCTAssertTrue(cuts, "refused a clean unmap of \(start)..<\(end): \(error)")
                }
            }
            for p in 0..<64 {
                let want = owner[p].map { target[$0]! + UInt64(p - $0) << 12 }
                XCTAssertEqual(t.translate(iova: UInt64(p) << 12, length: 0x1000), want, "page \(p)")
            }
        }
    }
}

final class DMATranslatorTests: XCTestCase {
    func memory() throws -> ArrayGuestMemory { try ArrayGuestMemory(regions: [(0, 0x4000), (0x8000, 0x4000)]) }

    func testMapsOnlyToGuestRAM() throws {
        let d = DMATranslator(memory: try memory())
        XCTAssertThrowsError(try d.map(iova: 0, size: 0x2000, guestAddress: GuestAddress(0x3000))) {
            XCTAssertEqual($0 as? DMAMappingError, .notGuestRAM(guestAddress: 0x3000, size: 0x2000), "across the hole")
        }
        XCTAssertThrowsError(try d.map(iova: 0, size: 0x1000, guestAddress: GuestAddress(0x1_0000)))
        XCTAssertEqual(d.mappings, [])
        try d.map(iova: 0x10_0000, size: 0x1000, guestAddress: GuestAddress(0x9000))
        XCTAssertEqual(d.mappings, [DMAMappingTable.Entry(iova: 0x10_0000, size: 0x1000, guestAddress: 0x9000)])
    }

    func testDetachedEndpointReachesNothing() throws {
        let d = DMATranslator(memory: try memory())
        try d.map(iova: 0, size: 0x1000, guestAddress: GuestAddress(0))
        XCTAssertFalse(d.isAttached)
        XCTAssertNil(d.translate(iova: 0, length: 4), "a new endpoint is detached")
        try d.attach()
        XCTAssertEqual(d.translate(iova: 0x10, length: 4), GuestAddress(0x10))
        try d.detach()
        XCTAssertNil(d.translate(iova: 0x10, length: 4))
        XCTAssertEqual(d.mappings.count, 1, "detach keeps the mappings")
    }

    func testDMAGuestMemoryThroughAMovedWindow() throws {
        let m = try memory()
        let d = DMATranslator(memory: m)
        try d.attach()
        let dma = DMAGuestMemory(translator: d)
        try d.map(iova: 0x10_0000, size: 0x1000, guestAddress: GuestAddress(0x8000))
        try dma.writeInteger(UInt32(0xCAFE_F00D), at: GuestAddress(0x10_0010))
        XCTAssertEqual(try m.readInteger(UInt32.self, at: GuestAddress(0x8010)), 0xCAFE_F00D)
        XCTAssertEqual(try dma.readInteger(UInt32.self, at: GuestAddress(0x10_0010)), 0xCAFE_F00D)
        XCTAssertTrue(dma.contains(GuestAddress(0x10_0000), length: 0x1000))
        XCTAssertFalse(dma.contains(GuestAddress(0x8000), length: 4), "the guest physical address is not an IOVA here")

        try d.unmap(iova: 0x10_0000, size: 0x1000)
        XCTAssertThrowsError(try dma.readInteger(UInt32.self, at: GuestAddress(0x10_0010))) {
            XCTAssertEqual($0 as? GuestMemoryError, .outOfRange(address: 0x10_0010, length: 4))
        }
        XCTAssertEqual(try m.readInteger(UInt32.self, at: GuestAddress(0x8010)), 0xCAFE_F00D, "revoking a mapping leaves memory alone")
    }

    func testIdentityMappingIsTransparent() throws {
        // Through the identity mapping a device sees what it sees in guest
        // memory itself: the same bytes, the same holes, the same errors.
        let m = try memory()
        let d = DMATranslator(memory: m)
        XCTAssertEqual(try IdentityDMA.mapGuestRAM([(0, 0x4000), (0x8000, 0x4000)], into: d), 0x8000)
        try d.attach()
        let dma = DMAGuestMemory(translator: d)
        var rng = SplitMix64(seed: 0x1D_E17)
        let edges: [UInt64] = [0, 0x3FFC, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xBFFC, 0xC000, .max - 3, .max]
        for i in 0..<3000 {
            let address = i % 3 == 0 ? edges[Int(rng.next() % UInt64(edges.count))] : rng.next() % 0xD000
            let length = Int(rng.next() % 9)
            XCTAssertEqual(dma.contains(GuestAddress(address), length: UInt64(length)), m.contains(GuestAddress(address), length: UInt64(length)))
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var viaDMA: Error?, direct: Error?
            do { try dma.writeBytes(bytes, at: GuestAddress(address)) } catch { viaDMA = error }
            do { try m.writeBytes(bytes, at: GuestAddress(address)) } catch { direct = error }
            XCTAssertEqual(viaDMA as? GuestMemoryError, direct as? GuestMemoryError, "0x\(String(address, radix: 16))+\(length)")
            XCTAssertEqual(viaDMA == nil, direct == nil)
            if viaDMA == nil {
                XCTAssertEqual(try dma.readBytes(at: GuestAddress(address), count: length), bytes)
                XCTAssertEqual(try m.readBytes(at: GuestAddress(address), count: length), bytes)
            }
        }
    }

    func testTranslationWhileAnotherRangeIsRemapped() throws {
        let d = DMATranslator(memory: try memory())
        try d.map(iova: 0, size: 0x1000, guestAddress: GuestAddress(0))
        try d.attach()
        let misses = Counter()
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for i in 0..<2000 {
                if worker == 0 {
                    try? d.map(iova: 0x8000, size: 0x1000, guestAddress: GuestAddress(0x8000))
                    try? d.unmap(iova: 0x8000, size: 0x1000)
                } else if d.translate(iova: UInt64(i % 0x1000), length: 1) != GuestAddress(UInt64(i % 0x1000)) {
                    misses.add()
                }
            }
        }
        XCTAssertEqual(misses.value, 0)
    }
}

final class DMAPermissionAndFaultTests: XCTestCase {
    func memory() throws -> ArrayGuestMemory { try ArrayGuestMemory(regions: [(0, 0x4000), (0x8000, 0x4000)]) }

    final class Faults: Sendable {
        let list = Mutex<[DMAFault]>([])
        var all: [DMAFault] { list.withLock { $0 } }
    }

    func testPermissionsAreEnforcedAndRefusalsReported() throws {
        let m = try memory()
        let d = DMATranslator(memory: m)
        let faults = Faults()
        d.setFaultHandler { f in faults.list.withLock { $0.append(f) } }
        try d.map(iova: 0x1000, size: 0x1000, guestAddress: GuestAddress(0x1000), permissions: .read)
        try d.map(iova: 0x2000, size: 0x1000, guestAddress: GuestAddress(0x2000), permissions: .write)
        try d.attach()
        let dma = DMAGuestMemory(translator: d)
        try m.writeInteger(UInt32(0x1234_5678), at: GuestAddress(0x1000))
        XCTAssertEqual(try dma.readInteger(UInt32.self, at: GuestAddress(0x1000)), 0x1234_5678, "read-only allows reads")
        XCTAssertThrowsError(try dma.writeInteger(UInt32(1), at: GuestAddress(0x1000)), "read-only refuses writes")
        XCTAssertEqual(try m.readInteger(UInt32.self, at: GuestAddress(0x1000)), 0x1234_5678, "the refused write changed nothing")
        try dma.writeInteger(UInt32(7), at: GuestAddress(0x2004))
        XCTAssertEqual(try m.readInteger(UInt32.self, at: GuestAddress(0x2004)), 7, "write-only allows writes")
        XCTAssertThrowsError(try dma.readInteger(UInt32.self, at: GuestAddress(0x2004)), "write-only refuses reads")
        XCTAssertThrowsError(try dma.readInteger(UInt32.self, at: GuestAddress(0x3000)), "unmapped")
        XCTAssertTrue(dma.contains(GuestAddress(0x1000), length: 4), "a probe ignores permissions")
        XCTAssertFalse(dma.contains(GuestAddress(0x3000), length: 4))
        try d.detach()
        XCTAssertThrowsError(try dma.readInteger(UInt32.self, at: GuestAddress(0x1000)), "detached")
        XCTAssertEqual(faults.all, [
            DMAFault(iova: 0x1000, length: 4, access: .write, reason: .denied),
            DMAFault(iova: 0x2004, length: 4, access: .read, reason: .denied),
            DMAFault(iova: 0x3000, length: 4, access: .read, reason: .unmapped),
            DMAFault(iova: 0x1000, length: 4, access: .read, reason: .detached),
        ], "probes report nothing; each refused access once")
        XCTAssertEqual(d.faultCount, 4)
        XCTAssertEqual(faults.all[0].description, "DMA write of 4 bytes at IOVA 0x1000: mapped without write permission")
    }

    func testReplaceMappingsIsAllOrNothing() throws {
        let d = DMATranslator(memory: try memory())
        try d.map(iova: 0, size: 0x1000, guestAddress: GuestAddress(0))
        let good = [DMAMappingTable.Entry(iova: 0x10_0000, size: 0x1000, guestAddress: 0x8000, permissions: .read),
                    DMAMappingTable.Entry(iova: 0x20_0000, size: 0x2000, guestAddress: 0x1000)]
        XCTAssertThrowsError(try d.replaceMappings(good + [DMAMappingTable.Entry(iova: 0x30_0000, size: 0x1000, guestAddress: 0x5000)])) {
            XCTAssertEqual($0 as? DMAMappingError, .notGuestRAM(guestAddress: 0x5000, size: 0x1000))
        }
        XCTAssertThrowsError(try d.replaceMappings(good + [DMAMappingTable.Entry(iova: 0x10_0800, size: 0x1000, guestAddress: 0x1000)]),
                             "overlapping entries")
        XCTAssertEqual(d.mappings, [DMAMappingTable.Entry(iova: 0, size: 0x1000, guestAddress: 0)], "the old table stays")
        try d.replaceMappings(good)
        XCTAssertEqual(d.mappings, good)
        try d.replaceMappings([])
        XCTAssertEqual(d.mappings, [])
    }

    func testUnmapWaitsForAnAccessInFlight() throws {
        // Once unmap returns, no access may still use the old translation:
        // an access that started before it finishes first.
        let d = DMATranslator(memory: try memory())
        try d.map(iova: 0x1000, size: 0x1000, guestAddress: GuestAddress(0x1000))
        try d.attach()
        try assertUnmapWaitsForAccess(d) { inside in
            _ = try? d.access(iova: 0x1000, length: 8, .write) { _ in inside() }
        }
        XCTAssertFalse(try d.access(iova: 0x1000, length: 8, .read) { _ in XCTFail("used an unmapped translation") })
    }
}

extension DMAPermissionAndFaultTests {
    func testHostBuffersInPlaceThroughTheTranslation() throws {
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        let d = DMATranslator(memory: ram)
        let faults = Faults()
        d.setFaultHandler { f in faults.list.withLock { $0.append(f) } }
        try d.map(iova: 0x10_0000, size: 0x1000, guestAddress: GuestAddress(0x5000))
        try d.map(iova: 0x20_0000, size: 0x2000, guestAddress: GuestAddress(0x9000), permissions: .read)
        try d.attach()
        let dma = DMAGuestMemory(translator: d)
        try ram.writeBytes([1, 2, 3, 4], at: GuestAddress(0x9800))
        // Two ranges, each in its own mapping: the buffers are guest RAM itself.
        let seen = try dma.withHostBuffers([GuestRange(GuestAddress(0x20_0800), 4), GuestRange(GuestAddress(0x10_0010), 2)],
                                           for: .read) { bufs -> [[UInt8]] in
            bufs.map { Array($0) }
        }
        XCTAssertEqual(seen, [[1, 2, 3, 4], [0, 0]])
        try dma.withHostBuffers([GuestRange(GuestAddress(0x10_0ffe), 2)], for: .write) { bufs in
            bufs[0][0] = 0xAB; bufs[0][1] = 0xCD
        }
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(0x5ffe), count: 2), [0xAB, 0xCD], "written in place")
        // A refused range (a read-only mapping written; a range across two
        // mappings): body never runs, the fault is reported once, nothing changes.
        for (range, reason) in [(GuestRange(GuestAddress(0x20_0000), 8), DMAFault.Reason.denied),
                                (GuestRange(GuestAddress(0x10_0ff0), 0x20), .unmapped)] {
            XCTAssertThrowsError(try dma.withHostBuffers([GuestRange(GuestAddress(0x10_0000), 1), range], for: .write) { _ in
                XCTFail("ran with a refused range")
            })
            XCTAssertEqual(faults.all.last, DMAFault(iova: range.address.raw, length: range.length, access: .write, reason: reason))
        }
        XCTAssertEqual(d.faultCount, 2)
        XCTAssertEqual(try ram.readBytes(at: GuestAddress(0x9000), count: 4), [0, 0, 0, 0])
    }

    func testUnmapWaitsForATransferInPlace() throws {
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        let d = DMATranslator(memory: ram)
        try d.map(iova: 0x1000, size: 0x1000, guestAddress: GuestAddress(0x1000))
        try d.attach()
        let dma = DMAGuestMemory(translator: d)
        try assertUnmapWaitsForAccess(d) { inside in
            try? dma.withHostBuffers([GuestRange(GuestAddress(0x1000), 8)], for: .write) { _ in inside() }
        }
    }

    func testGuestRAMHandsOutItsOwnPagesAndChecksEveryRange() throws {
        let ram = try GuestRAM(map: GuestMemoryMap(ramBytes: 2 << 20))
        let p = try ram.withHostBuffers([GuestRange(GuestAddress(0x1000), 0x1000)], for: .write) { bufs in
            bufs[0].baseAddress.map { UInt(bitPattern: $0) }
        }
        XCTAssertEqual(p, UInt(ram.slots[0].hostAddress) + 0x1000)
        XCTAssertThrowsError(try ram.withHostBuffers([GuestRange(GuestAddress(0), 1), GuestRange(GuestAddress(0x1F_FFFF), 2)],
                                                     for: .read) { _ in XCTFail("ran past the end of RAM") })
        // The copying default (any other memory) gives the same bytes and writes back.
        let m = try ArrayGuestMemory(regions: [(0, 0x4000)])
        try m.writeBytes([9, 8, 7], at: GuestAddress(0x100))
        try m.withHostBuffers([GuestRange(GuestAddress(0x100), 3)], for: .readWrite) { bufs in
            XCTAssertEqual(Array(bufs[0]), [9, 8, 7])
            bufs[0][1] = 0
        }
        XCTAssertEqual(try m.readBytes(at: GuestAddress(0x100), count: 3), [9, 0, 7])
    }
}

/// Runs `use` on a thread of its own; `use` calls `inside` from within an
/// access through `d` to IOVA 0x1000 (mapped). While that access is under
/// way, unmaps 0x1000 and checks that the access ended first: once unmap
/// returns, no access may still use the old translation.
func assertUnmapWaitsForAccess(_ d: DMATranslator, file: StaticString = #filePath, line: UInt = #line,
                               _ use: @escaping @Sendable (_ inside: @Sendable () -> Void) -> Void) throws {
    let entered = DispatchSemaphore(value: 0)
    let order = Mutex<[String]>([])
    Thread {
        use {
            entered.signal()
            Thread.sleep(forTimeInterval: 0.2)
            order.withLock { $0.append("access done") }
        }
    }.start()
    entered.wait()
    try d.unmap(iova: 0x1000, size: 0x1000)
    order.withLock { $0.append("unmap returned") }
    XCTAssertEqual(order.withLock { $0 }, ["access done", "unmap returned"], file: file, line: line)
}

final class IdentityDMATests: XCTestCase {
    static let gib: UInt64 = 1 << 30

    func testMapsEveryRAMRangeAtItsGuestAddress() throws {
        XCTAssertEqual(IdentityDMA.ranges(of: GuestMemoryMap(ramBytes: 4 * Self.gib)).map { [$0.guest, $0.size] }, [[0, 3 * Self.gib], [4 * Self.gib, Self.gib]])
        let dma = RecordingDMA()
        let bytes = try IdentityDMA.mapGuestRAM([(0, 3 * Self.gib), (4 * Self.gib, Self.gib), (5 * Self.gib, 0)], into: dma)
        XCTAssertEqual(bytes, 4 * Self.gib)
        XCTAssertEqual(dma.calls, [.map(iova: 0, size: 3 * Self.gib, guest: 0), .map(iova: 4 * Self.gib, size: Self.gib, guest: 4 * Self.gib)],
                       "empty ranges are skipped")
    }

    func testFailureUnmapsWhatThisCallMappedLastFirst() {
        let dma = RecordingDMA()
        dma.refuse = { $0 == 8 * Self.gib }
        XCTAssertThrowsError(try IdentityDMA.mapGuestRAM([(0, Self.gib), (4 * Self.gib, Self.gib), (8 * Self.gib, Self.gib)], into: dma)) { e in
            guard let f = e as? IdentityDMA.Failure else { return XCTFail("\(e)") }
            XCTAssertEqual(f.range, (8 * Self.gib)...(9 * Self.gib - 1))
            XCTAssertTrue(f.underlying is RecordingDMA.Refused)
        }
        XCTAssertEqual(dma.calls.suffix(2), [.unmap(iova: 4 * Self.gib, size: Self.gib), .unmap(iova: 0, size: Self.gib)])
    }
}

/// A thread-safe counter for the concurrency test.
final class Counter: Sendable {
    private let n = Atomic<Int>(0)
    func add() { n.add(1, ordering: .relaxed) }
    var value: Int { n.load(ordering: .relaxed) }
}
