import GuestMemory
import Logging
import PCI
import Synchronization
import Virtio
import XCTest
@testable import VMM

/// The vIOMMU's host side for emulated endpoints: what each endpoint's
/// DMATranslator holds as the guest attaches, maps, unmaps and detaches.
final class VIOMMUEndpointsTests: XCTestCase {
    let ram: [(guest: UInt64, size: UInt64)] = [(0, 0x10_0000)]

    final class Faults: Sendable {
        let list = Mutex<[(UInt32, DMAFault)]>([])
    }

    private func make() throws -> (VIOMMUEndpoints, DMATranslator, DMATranslator, Faults) {
        let memory = try ArrayGuestMemory(regions: [(0, 0x10_0000)])
        let e = VIOMMUEndpoints(ram: ram, domains: nil, initialBypass: true, logger: Logger(label: "test"))
        let faults = Faults()
        var ts: [DMATranslator] = []
        for slot in [UInt8(1), 2] {
            let t = DMATranslator(memory: memory)
            try IdentityDMA.mapGuestRAM(ram, into: t)
            try t.attach()
            try e.addEmulated(at: PCIAddress(device: slot), name: "dev\(slot)", translator: t) { id, f in
                faults.list.withLock { $0.append((id, f)) }
            }
            ts.append(t)
        }
        return (e, ts[0], ts[1], faults)
    }

    let identity = [DMAMappingTable.Entry(iova: 0, size: 0x10_0000, guestAddress: 0)]

    func testEndpointIDsAreRequesterIDs() throws {
        let (e, _, _, _) = try make()
        XCTAssertEqual(VIOMMUEndpoints.endpointID(PCIAddress(bus: 1, device: 3, function: 2)), 0x11A)
        XCTAssertTrue(e.hasEndpoint(0x08))
        XCTAssertTrue(e.hasEndpoint(0x10))
        XCTAssertFalse(e.hasEndpoint(0x18))
        XCTAssertEqual(e.reservedRegions(endpoint: 0x08), [], "emulated endpoints reserve nothing")
    }

    func testDomainMappingsFanOutToEveryMemberAndOnlyThem() throws {
        let (e, a, b, _) = try make()
        XCTAssertEqual(a.mappings, identity, "bypass before the driver runs")
        try e.attach(endpoint: 0x08, domain: 1, bypass: false, mappings: [])
        XCTAssertEqual(a.mappings, [])
        XCTAssertTrue(a.isAttached)
        let m = DMAMappingTable.Entry(iova: 0x1000_0000, size: 0x2000, guestAddress: 0x4000, permissions: .read)
        try e.map(domain: 1, entry: m)
        XCTAssertEqual(a.mappings, [m])
        XCTAssertEqual(b.mappings, identity, "dev2 is not in domain 1")
        try e.attach(endpoint: 0x10, domain: 1, bypass: false, mappings: [m])
        XCTAssertEqual(b.mappings, [m])
        let m2 = DMAMappingTable.Entry(iova: 0x2000_0000, size: 0x1000, guestAddress: 0x8000)
        try e.map(domain: 1, entry: m2)
        XCTAssertEqual(a.mappings, [m, m2])
        XCTAssertEqual(b.mappings, [m, m2])
        try e.unmap(domain: 1, entries: [m])
        XCTAssertEqual(a.mappings, [m2])
        XCTAssertEqual(b.mappings, [m2])
        // dev2 moves to a bypass domain: identity, and domain 1's maps no longer reach it.
        try e.attach(endpoint: 0x10, domain: 2, bypass: true, mappings: [])
        XCTAssertEqual(b.mappings, identity)
        try e.unmap(domain: 1, entries: [m2])
        XCTAssertEqual(a.mappings, [])
        XCTAssertEqual(b.mappings, identity)
    }

    func testAMapOneMemberRefusesIsUndoneForTheOthers() throws {
        let (e, a, b, _) = try make()
        try e.attach(endpoint: 0x08, domain: 1, bypass: false, mappings: [])
        try e.attach(endpoint: 0x10, domain: 1, bypass: false, mappings: [])
        // Not guest RAM: refused, and neither translator keeps it.
        XCTAssertThrowsError(try e.map(domain: 1, entry: DMAMappingTable.Entry(iova: 0, size: 0x1000, guestAddress: 0x20_0000)))
        XCTAssertEqual(a.mappings, [])
        XCTAssertEqual(b.mappings, [])
    }

    func testDetachAndTheGlobalBypass() throws {
        let (e, a, b, _) = try make()
        try e.attach(endpoint: 0x08, domain: 1, bypass: false, mappings: [DMAMappingTable.Entry(iova: 0, size: 0x1000, guestAddress: 0)])
        try e.detach(endpoint: 0x08, bypass: false)
        XCTAssertFalse(a.isAttached, "blocked: no DMA")
        XCTAssertEqual(a.mappings, [])
        try e.setUnattachedBypass(true)
        XCTAssertTrue(a.isAttached)
        XCTAssertEqual(a.mappings, identity)
        try e.setUnattachedBypass(false)
        XCTAssertFalse(a.isAttached)
        XCTAssertFalse(b.isAttached, "both are unattached")
        try e.attach(endpoint: 0x10, domain: 3, bypass: true, mappings: [])
        try e.setUnattachedBypass(false)
        XCTAssertTrue(b.isAttached, "a bypass domain is not 'unattached'")
        XCTAssertEqual(b.mappings, identity)
    }

    func testRefusedAccessesAreReportedWithTheEndpoint() throws {
        let (e, a, _, faults) = try make()
        try e.attach(endpoint: 0x08, domain: 1, bypass: false, mappings: [])
        let dma = DMAGuestMemory(translator: a)
        XCTAssertThrowsError(try dma.readInteger(UInt32.self, at: GuestAddress(0x5000)))
        let got = faults.list.withLock { $0 }
        XCTAssertEqual(got.count, 1)
        XCTAssertEqual(got.first?.0, 0x08)
        XCTAssertEqual(got.first?.1, DMAFault(iova: 0x5000, length: 4, access: .read, reason: .unmapped))
        XCTAssertEqual(e.counters.faults, 1)
    }

    func testUnknownEndpointsAreRefused() throws {
        let (e, _, _, _) = try make()
        XCTAssertThrowsError(try e.attach(endpoint: 0x99, domain: 1, bypass: false, mappings: []))
        XCTAssertThrowsError(try e.detach(endpoint: 0x99, bypass: true))
    }
}
