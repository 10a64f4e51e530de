import Foundation
import GuestMemory
import Logging
import PCI
import TestFakes
import Virtio
import XCTest
@testable import VMM

/// What the vIOMMU costs the VMM per request: a benchmark, not a test. It
/// prints figures and ratios measured in the same run and asserts nothing
/// about speed. Run by scripts/bench-viommu (SWIFTVMM_BENCH=viommu); skipped
/// otherwise.
///
/// The device serves a request queue of 256 in real guest RAM (a memfd, as
/// in a run) the way Linux's virtio-iommu driver fills it under iommu-dma:
/// per I/O of 1 MiB in 4 KiB pages scattered over RAM, 256 MAP requests of
/// one page each at consecutive IOVAs, then one UNMAP of the whole MiB;
/// strict: the UNMAP synced on its own; lazy: posted with the next I/O's
/// MAPs. Only the device's serving time is measured (the driver's ring
/// writes are not). The endpoint is an emulated one (a `DMATranslator`
/// behind `VIOMMUEndpoints`, as for virtio-blk), with or without other
/// mappings kept live in its domain (a NIC's posted receive buffers). The
/// peer: the same device and requests with a host that keeps nothing.
final class VIOMMUBenchmark: XCTestCase {
    /// A host with one endpoint that keeps nothing: what the device costs by itself.
    final class NullHost: VIOMMUHost {
        func hasEndpoint(_ endpoint: UInt32) -> Bool { endpoint == 0x08 }
        func reservedRegions(endpoint: UInt32) -> [ClosedRange<UInt64>] { [] }
        func attach(endpoint: UInt32, domain: UInt32, bypass: Bool, mappings: [DMAMappingTable.Entry]) throws {}
        func detach(endpoint: UInt32, bypass: Bool) throws {}
        func map(domain: UInt32, entry: DMAMappingTable.Entry) throws {}
        func unmap(domain: UInt32, entries: [DMAMappingTable.Entry]) throws {}
        func domainFreed(_ domain: UInt32) {}
        func setUnattachedBypass(_ bypass: Bool) throws {}
    }

    static let ramBytes: UInt64 = 64 << 20
    static let queueSize: UInt16 = 256
    static let requestsAt: UInt64 = 0x10_0000 // 64 bytes per request slot
    static let pagesAt: UInt64 = 0x20_0000 // the pages I/O maps, up to the end of RAM
    static let ioPages = 256

    final class Rig {
        let ram: GuestRAM
        let driver: FakeDriver
        let device: VirtioIOMMU
        var slot = 0
        var served = 0
        var nanos: UInt64 = 0
        var rng = SplitMix64(seed: 7)

        init(host: VIOMMUHost) throws {
            ram = try GuestRAM(map: GuestMemoryMap(ramBytes: VIOMMUBenchmark.ramBytes))
            driver = FakeDriver(memory: ram, size: VIOMMUBenchmark.queueSize, base: 0x1000)
            device = VirtioIOMMU(host: host)
            try device.activate(memory: ram, features: 0x57 | VirtioSpec.Feature.version1,
                                queues: [driver.makeQueue(), FakeDriver(memory: ram, size: 8, base: 0x8_0000).makeQueue()],
                                interrupt: RecordingInterrupt())
        }

        static func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

        /// Requests in flight at most: two descriptors each.
        static let slots = Int(VIOMMUBenchmark.queueSize) / 2
        var outstanding = 0

        /// Posts one request, not notified unless the queue is full (then
        /// synced first, as the driver's add_req does on ENOSPC).
        func post(_ readable: [UInt8]) {
            if outstanding == Self.slots { sync() }
            let at = VIOMMUBenchmark.requestsAt + UInt64(slot % Self.slots) * 64
            slot += 1
            outstanding += 1
            try! ram.writeBytes(readable, at: GuestAddress(at))
            driver.post([(at, UInt32(readable.count), false), (at + 48, 4, true)])
        }

        func map(domain: UInt32, iova: UInt64, phys: UInt64, size: UInt64) {
            post([3, 0, 0, 0] + Self.le(UInt64(domain), 4) + Self.le(iova, 8) + Self.le(iova + size - 1, 8) + Self.le(phys, 8) + Self.le(3, 4))
        }

        func unmap(domain: UInt32, iova: UInt64, size: UInt64) {
            post([4, 0, 0, 0] + Self.le(UInt64(domain), 4) + Self.le(iova, 8) + Self.le(iova + size - 1, 8) + [0, 0, 0, 0])
        }

        /// Notifies and times the device serving what was posted; checks every status.
        func sync() {
            let t0 = DispatchTime.now().uptimeNanoseconds
            device.queueNotified(VirtioIOMMU.requestQueue)
            nanos += DispatchTime.now().uptimeNanoseconds - t0
            for u in driver.takeUsed() {
                let tailAt = VIOMMUBenchmark.requestsAt + UInt64(u.id / 2) * 64 + 48
                let status = try! ram.readBytes(at: GuestAddress(tailAt), count: 1)[0]
                precondition(u.len == 4 && status == 0, "request \(u.id) failed: status \(status)")
                served += 1
            }
            outstanding = 0
        }

        /// A random 4 KiB page of the I/O area.
        func page() -> UInt64 {
            VIOMMUBenchmark.pagesAt + (rng.next() % ((VIOMMUBenchmark.ramBytes - VIOMMUBenchmark.pagesAt) >> 12)) << 12
        }
    }

    /// Nanoseconds per request served, for `ios` I/Os; `live` mappings kept in the domain all along.
    func run(host: VIOMMUHost, lazy: Bool, ios: Int, live: Int) throws -> Double {
        let rig = try Rig(host: host)
        rig.post([1, 0, 0, 0] + Rig.le(1, 4) + Rig.le(0x08, 4) + Rig.le(0, 4) + [0, 0, 0, 0]) // ATTACH domain 1
        rig.sync()
        // Live mappings low in the IOVA space, below what the I/Os use.
        for k in 0..<live {
            rig.map(domain: 1, iova: 0x100_0000 + UInt64(k) << 12, phys: rig.page(), size: 0x1000)
        }
        rig.sync()
        rig.served = 0
        rig.nanos = 0
        // iommu-dma allocates IOVAs top-down; 64 I/O slots of 1 MiB, reused.
        let top: UInt64 = 0xFFFF_F000_0000
        var pendingUnmap: UInt64?
        for i in 0..<ios {
            let base = top - UInt64(i % 64 + 1) << 20
            if lazy, let p = pendingUnmap { rig.unmap(domain: 1, iova: p, size: 1 << 20) }
            for j in 0..<Self.ioPages { rig.map(domain: 1, iova: base + UInt64(j) << 12, phys: rig.page(), size: 0x1000) }
            rig.sync() // iotlb_sync_map
            if lazy {
                pendingUnmap = base
            } else {
                rig.unmap(domain: 1, iova: base, size: 1 << 20)
                rig.sync() // iotlb_sync
            }
        }
        return Double(rig.nanos) / Double(rig.served)
    }

    func testBenchmark() throws {
        guard ProcessInfo.processInfo.environment["SWIFTVMM_BENCH"] == "viommu" else {
            throw XCTSkip("a benchmark: scripts/bench-viommu runs it")
        }
        let ios = Int(ProcessInfo.processInfo.environment["BENCH_IOS"] ?? "") ?? 200
        print("vIOMMU request serving, natively (\(ios) I/Os of 1 MiB in 4 KiB pages: 256 MAP + 1 UNMAP each; ns per request, best of 3)")
        print("| variant | live mappings | device alone ns/req | device + emulated endpoint ns/req | ratio | requests/s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for lazy in [false, true] {
            for live in [0, 2048] {
                var alone = Double.infinity, endpoint = Double.infinity
                for _ in 0..<3 {
                    alone = min(alone, try run(host: NullHost(), lazy: lazy, ios: ios, live: live))
                    endpoint = min(endpoint, try run(host: try emulatedEndpoint(), lazy: lazy, ios: ios, live: live))
                }
                print(String(format: "| %@ | %d | %.0f | %.0f | %.2fx | %.0f |", lazy ? "lazy" : "strict", live, alone, endpoint,
                             endpoint / alone, 1e9 / endpoint))
            }
        }
    }

    /// `VIOMMUEndpoints` with one emulated endpoint (00:01.0, ID 0x08) whose
    /// translator reaches all of a RAM of the benchmark's size.
    func emulatedEndpoint() throws -> VIOMMUEndpoints {
        let ram: [(guest: UInt64, size: UInt64)] = [(0, Self.ramBytes)]
        let memory = try GuestRAM(map: GuestMemoryMap(ramBytes: Self.ramBytes))
        let endpoints = VIOMMUEndpoints(ram: ram, domains: nil, initialBypass: true, logger: Logger(label: "bench"))
        let t = DMATranslator(memory: memory)
        try endpoints.addEmulated(at: PCIAddress(device: 1), name: "bench", translator: t) { _, _ in }
        return endpoints
    }
}
