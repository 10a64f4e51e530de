import Foundation
import GuestMemory
import Synchronization
import TestFakes
import Virtio
import XCTest

/// A `VIOMMUHost` that records every call and keeps its own view of the
/// endpoints (what each one translates through), so tests can check that
/// the device and the host agree. Refusals are injected per operation.
final class RecordingVIOMMUHost: VIOMMUHost {
    enum Call: Equatable {
        case attach(endpoint: UInt32, domain: UInt32, bypass: Bool, mappings: [DMAMappingTable.Entry])
        case detach(endpoint: UInt32, bypass: Bool)
        case map(domain: UInt32, entry: DMAMappingTable.Entry)
        case unmap(domain: UInt32, entries: [DMAMappingTable.Entry])
        case domainFreed(UInt32)
        case setUnattachedBypass(Bool)
    }
    enum Op: Hashable { case attach, detach, map, unmap, bypass }
    /// What an endpoint's DMA goes through, as the host sees it.
    enum EndpointState: Equatable {
        case unattached
        case domain(UInt32, bypass: Bool)
    }
    struct Refusal: Error {}

    private struct State {
        var calls: [Call] = []
        var refuse: [Op: any Error] = [:]
        var endpoints: [UInt32: EndpointState] = [:]
        /// Mappings of the domains that have endpoints, in IOVA order.
        var domainMappings: [UInt32: [DMAMappingTable.Entry]] = [:]
        var unattachedBypass: Bool
        var reservedAsked: [UInt32] = []
    }
    private let state: Mutex<State>
    let endpointIDs: Set<UInt32>
    let reserved: [UInt32: [ClosedRange<UInt64>]]

    init(endpoints: Set<UInt32>, reserved: [UInt32: [ClosedRange<UInt64>]] = [:], bypass: Bool = true) {
        endpointIDs = endpoints
        self.reserved = reserved
        var s = State(unattachedBypass: bypass)
        for e in endpoints { s.endpoints[e] = .unattached }
        state = Mutex(s)
    }

    var calls: [Call] { state.withLock { $0.calls } }
    func takeCalls() -> [Call] { state.withLock { s in defer { s.calls = [] }; return s.calls } }
    var endpointStates: [UInt32: EndpointState] { state.withLock { $0.endpoints } }
    var domainMappings: [UInt32: [DMAMappingTable.Entry]] { state.withLock { $0.domainMappings } }
    var unattachedBypass: Bool { state.withLock { $0.unattachedBypass } }
    var reservedAsked: [UInt32] { state.withLock { $0.reservedAsked } }
    func refuse(_ op: Op, with error: (any Error)?) { state.withLock { $0.refuse[op] = error } }

    private func check(_ op: Op, _ s: State) throws {
        if let e = s.refuse[op] { throw e }
    }

    func hasEndpoint(_ endpoint: UInt32) -> Bool { endpointIDs.contains(endpoint) }

    func reservedRegions(endpoint: UInt32) -> [ClosedRange<UInt64>] {
        state.withLock { $0.reservedAsked.append(endpoint) }
        return reserved[endpoint] ?? []
    }

    func attach(endpoint: UInt32, domain: UInt32, bypass: Bool, mappings: [DMAMappingTable.Entry]) throws {
        try state.withLock { s in
            try check(.attach, s)
            s.calls.append(.attach(endpoint: endpoint, domain: domain, bypass: bypass, mappings: mappings))
            XCTAssertTrue(endpointIDs.contains(endpoint))
            if let known = s.domainMappings[domain] {
                XCTAssertEqual(known, mappings, "an existing domain's mappings are what the host holds")
            }
            s.domainMappings[domain] = mappings
            s.endpoints[endpoint] = .domain(domain, bypass: bypass)
        }
    }

    func detach(endpoint: UInt32, bypass: Bool) throws {
        try state.withLock { s in
            try check(.detach, s)
            s.calls.append(.detach(endpoint: endpoint, bypass: bypass))
            s.endpoints[endpoint] = .unattached
        }
    }

    func map(domain: UInt32, entry: DMAMappingTable.Entry) throws {
        try state.withLock { s in
            try check(.map, s)
            s.calls.append(.map(domain: domain, entry: entry))
            XCTAssertNotNil(s.domainMappings[domain], "maps go to domains with endpoints")
            s.domainMappings[domain, default: []].append(entry)
            s.domainMappings[domain]?.sort { $0.iova < $1.iova }
        }
    }

    func unmap(domain: UInt32, entries: [DMAMappingTable.Entry]) throws {
        try state.withLock { s in
            try check(.unmap, s)
            s.calls.append(.unmap(domain: domain, entries: entries))
            XCTAssertFalse(entries.isEmpty)
            let gone = Set(entries.map(\.iova))
            s.domainMappings[domain]?.removeAll { gone.contains($0.iova) }
        }
    }

    func domainFreed(_ domain: UInt32) {
        state.withLock { s in
            s.calls.append(.domainFreed(domain))
            XCTAssertFalse(s.endpoints.values.contains(where: {
                if case let .domain(d, _) = $0 { return d == domain }
                return false
            }), "no endpoint is left in a freed domain")
            s.domainMappings[domain] = nil
        }
    }

    func setUnattachedBypass(_ bypass: Bool) throws {
        try state.withLock { s in
            try check(.bypass, s)
            s.calls.append(.setUnattachedBypass(bypass))
            s.unattachedBypass = bypass
        }
    }
}

/// Little-endian bytes and the §5.13.6 request structs, written out by hand
/// (not with the device's encoders).
enum IOMMUWire {
    static func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
    static func le32(_ v: UInt32) -> [UInt8] { le(UInt64(v), 4) }
    static func le64(_ v: UInt64) -> [UInt8] { le(v, 8) }

    static func attach(domain: UInt32, endpoint: UInt32, flags: UInt32 = 0, reserved: [UInt8] = [0, 0, 0, 0],
                       headReserved: [UInt8] = [0, 0, 0]) -> [UInt8] {
        [1] + headReserved + le32(domain) + le32(endpoint) + le32(flags) + reserved
    }
    static func detach(domain: UInt32, endpoint: UInt32, reserved: [UInt8] = [UInt8](repeating: 0, count: 8)) -> [UInt8] {
        [2, 0, 0, 0] + le32(domain) + le32(endpoint) + reserved
    }
    static func map(domain: UInt32, start: UInt64, end: UInt64, phys: UInt64, flags: UInt32 = 3) -> [UInt8] {
        [3, 0, 0, 0] + le32(domain) + le64(start) + le64(end) + le64(phys) + le32(flags)
    }
    static func unmap(domain: UInt32, start: UInt64, end: UInt64, reserved: [UInt8] = [0, 0, 0, 0]) -> [UInt8] {
        [4, 0, 0, 0] + le32(domain) + le64(start) + le64(end) + reserved
    }
    static func probe(endpoint: UInt32, reserved: [UInt8] = [UInt8](repeating: 0, count: 64)) -> [UInt8] {
        [5, 0, 0, 0] + le32(endpoint) + reserved
    }
    static func resvMem(subtype: UInt8, start: UInt64, end: UInt64) -> [UInt8] {
        [1, 0, 20, 0, subtype, 0, 0, 0] + le64(start) + le64(end)
    }

    static let ok: UInt8 = 0, ioerr: UInt8 = 1, unsupp: UInt8 = 2, deverr: UInt8 = 3, inval: UInt8 = 4,
               range: UInt8 = 5, noent: UInt8 = 6, fault: UInt8 = 7, nomem: UInt8 = 8
}

/// The device on two real split queues in array memory, driven by
/// `FakeDriver`s the way a guest driver would.
final class IOMMUBench {
    let memory = ArrayGuestMemory(size: 0x10_0000)
    let requests: FakeDriver
    let events: FakeDriver
    let irq = RecordingInterrupt()
    let host: RecordingVIOMMUHost
    let device: VirtioIOMMU
    /// Where request bytes and replies go (reused: requests complete at once).
    static let readableAt: UInt64 = 0x8000, writableAt: UInt64 = 0x9000, eventAt: UInt64 = 0xC000
    static let allFeatures: UInt64 = 0x57

    init(host: RecordingVIOMMUHost = RecordingVIOMMUHost(endpoints: [0x08, 0x10, 0x18]),
         features: UInt64 = IOMMUBench.allFeatures, activate: Bool = true,
         make: (RecordingVIOMMUHost) -> VirtioIOMMU = { VirtioIOMMU(host: $0) }) throws {
        self.host = host
        device = make(host)
        requests = FakeDriver(memory: memory, size: 16, base: 0x1000)
        events = FakeDriver(memory: memory, size: 8, base: 0x3000)
        if activate {
            try device.activate(memory: memory, features: features | VirtioSpec.Feature.version1,
                                queues: [requests.makeQueue(), events.makeQueue()], interrupt: irq)
        }
    }

    struct Reply {
        let usedLength: UInt32
        /// The writable part after the request (0xAA where the device wrote nothing).
        let writable: [UInt8]
        var status: UInt8? { usedLength >= 4 ? writable[Int(usedLength) - 4] : nil }
    }

    /// Posts one request (readable bytes, then `writable` bytes of room, in
    /// one descriptor each unless split), notifies, returns what came back.
    func send(_ readable: [UInt8], writable: Int = 4, splitReadableAt: Int? = nil) -> Reply {
        try! memory.writeBytes(readable, at: GuestAddress(Self.readableAt))
        try! memory.writeBytes([UInt8](repeating: 0xAA, count: writable), at: GuestAddress(Self.writableAt))
        var chain: [(addr: UInt64, len: UInt32, writable: Bool)] = []
        if let k = splitReadableAt {
            chain.append((Self.readableAt, UInt32(k), false))
            chain.append((Self.readableAt + UInt64(k), UInt32(readable.count - k), false))
        } else {
            chain.append((Self.readableAt, UInt32(readable.count), false))
        }
        chain.append((Self.writableAt, UInt32(writable), true))
        let head = requests.post(chain)
        device.queueNotified(VirtioIOMMU.requestQueue)
        let used = requests.takeUsed()
        XCTAssertEqual(used.count, 1)
        XCTAssertEqual(used.first?.id, UInt32(head))
        return Reply(usedLength: used.first?.len ?? 0,
                     writable: try! memory.readBytes(at: GuestAddress(Self.writableAt), count: writable))
    }

    /// The status of a request with a 4-byte tail (nil: used length 0).
    func status(_ readable: [UInt8]) -> UInt8? {
        let r = send(readable)
        if r.usedLength != 0 { XCTAssertEqual(r.usedLength, 4) }
        if let s = r.status { XCTAssertEqual(r.writable, [s, 0, 0, 0], "tail reserved bytes are zero") }
        return r.status
    }

    func config() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: device.configSize)
        out.withUnsafeMutableBytes { device.readConfig(offset: 0, data: $0) }
        return out
    }

    func writeConfig(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { device.writeConfig(offset: offset, data: $0) }
    }
}

final class VirtioIOMMUTests: XCTestCase {
    typealias W = IOMMUWire
    typealias Entry = DMAMappingTable.Entry

    // MARK: polling

    /// With a poll window, the device keeps serving the request queue after
    /// a notification, with the driver's notifications off (used.flags
    /// NO_NOTIFY): a request posted then, with no notification, is answered;
    /// once nothing has come for the window, notifications are on again.
    func testRequestsPostedWhileThePollWindowIsOpenAreServedWithoutANotification() throws {
        let b = try IOMMUBench { VirtioIOMMU(host: $0, pollWindow: .milliseconds(400), maxPollBurst: .seconds(5)) }
        XCTAssertEqual(b.device.pollWindow, .milliseconds(400))
        let usedFlags = GuestAddress(b.requests.usedRing)
        try b.memory.writeBytes(W.attach(domain: 1, endpoint: 0x08), at: GuestAddress(IOMMUBench.readableAt))
        b.requests.post([(IOMMUBench.readableAt, 20, false), (IOMMUBench.writableAt, 4, true)])
        // While the device polls (this thread is inside queueNotified), a
        // second request arrives without a notification, as the driver does
        // when used.flags says NO_NOTIFY.
        let flagsSeen = Mutex<UInt16?>(nil)
        let posted = Mutex(false)
        let memory = b.memory, driver = b.requests // Sendable, unlike the bench
        let later = Thread {
            Thread.sleep(forTimeInterval: 0.05)
            flagsSeen.withLock { $0 = try? memory.readInteger(UInt16.self, at: usedFlags) }
            try? memory.writeBytes(W.map(domain: 1, start: 0x10_0000, end: 0x10_0FFF, phys: 0x2_0000),
                                   at: GuestAddress(IOMMUBench.readableAt + 0x100))
            driver.post([(IOMMUBench.readableAt + 0x100, 40, false), (IOMMUBench.writableAt + 0x100, 4, true)])
            posted.withLock { $0 = true }
        }
        later.start()
        let t0 = ContinuousClock.now
        b.device.queueNotified(VirtioIOMMU.requestQueue)
        let took = ContinuousClock.now - t0
        XCTAssertTrue(posted.withLock { $0 })
        XCTAssertEqual(flagsSeen.withLock { $0 }, 1, "VIRTQ_USED_F_NO_NOTIFY while polling")
        XCTAssertEqual(b.requests.takeUsed().map(\.len), [4, 4], "both answered")
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(IOMMUBench.writableAt + 0x100), count: 1), [W.ok])
        XCTAssertEqual(b.device.statistics.polled, 1)
        XCTAssertEqual(b.device.statistics.maps, 1)
        XCTAssertGreaterThanOrEqual(took, .milliseconds(440), "polled for the window after the last request")
        XCTAssertEqual(try b.memory.readInteger(UInt16.self, at: usedFlags), 0, "notifications on again")
    }

    /// A guest that never stops sending keeps the device polling no longer
    /// than `maxPollBurst` at a time: then notifications are on again and
    /// the I/O thread is free (to stop, or to reset the device).
    func testPollingStopsAfterTheLongestBurstHoweverBusyTheGuest() throws {
        let b = try IOMMUBench { VirtioIOMMU(host: $0, pollWindow: .milliseconds(50)) }
        try b.memory.writeBytes(W.attach(domain: 1, endpoint: 0x08), at: GuestAddress(IOMMUBench.readableAt))
        b.requests.post([(IOMMUBench.readableAt, 20, false), (IOMMUBench.writableAt, 4, true)])
        let memory = b.memory, driver = b.requests
        let stop = Mutex(false)
        let busy = Thread {
            // A request every 10 ms (inside the 50 ms window) for up to 2 s.
            for _ in 0..<200 where !stop.withLock({ $0 }) {
                Thread.sleep(forTimeInterval: 0.01)
                try? memory.writeBytes(W.attach(domain: 1, endpoint: 0x08), at: GuestAddress(IOMMUBench.readableAt))
                driver.post([(IOMMUBench.readableAt, 20, false), (IOMMUBench.writableAt, 4, true)])
                _ = driver.takeUsed()
            }
        }
        busy.start()
        let t0 = ContinuousClock.now
        b.device.queueNotified(VirtioIOMMU.requestQueue)
        let took = ContinuousClock.now - t0
        stop.withLock { $0 = true }
        XCTAssertGreaterThanOrEqual(took, b.device.maxPollBurst)
        XCTAssertEqual(b.device.maxPollBurst, VirtioIOMMU.defaultMaxPollBurst)
        XCTAssertLessThan(took, b.device.maxPollBurst + .milliseconds(300), "returned after the burst, not when the guest paused")
        XCTAssertGreaterThan(b.device.statistics.polled, 3)
        XCTAssertEqual(try b.memory.readInteger(UInt16.self, at: GuestAddress(b.requests.usedRing)), 0, "notifications on again")
    }

    /// Without a window (the default) the device serves what is there and
    /// returns: a request posted later waits for its notification.
    func testWithoutAPollWindowALaterRequestWaitsForItsNotification() throws {
        let b = try IOMMUBench()
        XCTAssertEqual(b.device.pollWindow, .zero)
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 0x08)), W.ok)
        b.requests.post([(IOMMUBench.readableAt, 20, false), (IOMMUBench.writableAt, 4, true)])
        XCTAssertEqual(b.requests.takeUsed().count, 0)
        b.device.queueNotified(VirtioIOMMU.requestQueue)
        XCTAssertEqual(b.requests.takeUsed().count, 1)
        XCTAssertEqual(b.device.statistics.polled, 0)
    }

    // MARK: identity and configuration

    func testIdentityFeaturesAndConfigBytes() throws {
        let b = try IOMMUBench(activate: false)
        XCTAssertEqual(b.device.deviceType, 23)
        XCTAssertEqual(b.device.deviceFeatures, 0b101_0111, "INPUT_RANGE, DOMAIN_RANGE, MAP_UNMAP, PROBE, BYPASS_CONFIG")
        XCTAssertEqual(b.device.queueMaxSizes, [256, 256])
        XCTAssertEqual(b.device.configSize, 40)
        XCTAssertEqual(b.config(),
                       W.le64(0x20_1000) + W.le64(0) + W.le64(0xFFFF_FFFF_FFFF) + W.le32(0) + W.le32(0xFFFF_FFFF)
                           + W.le32(512) + [1, 0, 0, 0])
        XCTAssertEqual(b.device.granule, 0x1000)

        let c = try IOMMUBench(activate: false) {
            VirtioIOMMU(host: $0, pageSizeMask: 0x4000_3000, inputRange: 0x1000...0xFFFF_FFFF,
                        domainRange: 1...63, probeSize: 0, initialBypass: false)
        }
        XCTAssertEqual(c.device.deviceFeatures, 0b100_0111, "no PROBE when probe_size is 0")
        XCTAssertEqual(c.config(),
                       W.le64(0x4000_3000) + W.le64(0x1000) + W.le64(0xFFFF_FFFF) + W.le32(1) + W.le32(63)
                           + W.le32(0) + [0, 0, 0, 0])
        XCTAssertEqual(c.device.granule, 0x1000, "the lowest bit of page_size_mask")

        // Reads at any offset and width; past the end reads 0.
        var part = [UInt8](repeating: 0xFF, count: 6)
        part.withUnsafeMutableBytes { c.device.readConfig(offset: 36, data: $0) }
        XCTAssertEqual(part, [0, 0, 0, 0, 0, 0])
    }

    func testOnlyTheBypassByteIsWritableAndOnlyWith0Or1() throws {
        let b = try IOMMUBench()
        b.writeConfig([0], at: 36)
        XCTAssertEqual(b.config()[36], 0)
        XCTAssertFalse(b.device.bypass)
        XCTAssertEqual(b.host.takeCalls(), [.setUnattachedBypass(false)])
        b.writeConfig([2], at: 36)
        b.writeConfig([0xFF], at: 36)
        XCTAssertEqual(b.config()[36], 0, "the device never presents anything but 0 or 1 (§5.13.4.2)")
        b.writeConfig([0], at: 36)
        XCTAssertEqual(b.host.takeCalls(), [], "no change, no host call")
        let before = b.config()
        b.writeConfig([0xAB, 0xCD, 0xEF, 0x01], at: 0)
        b.writeConfig([9, 9, 9, 9], at: 32)
        XCTAssertEqual(b.config(), before, "other fields are read-only")
        b.writeConfig([1, 7, 7, 7], at: 36) // a 4-byte write covering bypass and reserved
        XCTAssertEqual(b.config()[36...], [1, 0, 0, 0])
        XCTAssertEqual(b.host.takeCalls(), [.setUnattachedBypass(true)])

        b.host.refuse(.bypass, with: RecordingVIOMMUHost.Refusal())
        b.writeConfig([0], at: 36)
        XCTAssertTrue(b.device.bypass, "a refused change keeps the old value")
        XCTAssertEqual(b.device.statistics.hostErrors, 1)
    }

    /// Through the virtio-pci transport, as Linux's virtio_pci_modern and
    /// virtio-iommu drivers see it.
    func testOverVirtioPCI() throws {
        let memory = ArrayGuestMemory(size: 0x10_0000)
        let host = RecordingVIOMMUHost(endpoints: [0x08])
        let d = try PCIDriver(VirtioIOMMU(host: host), memory: memory)
        XCTAssertEqual(d.cfgRead(0x02, 2), 0x1057, "0x1040 + 23 (§4.1.2)")
        XCTAssertEqual(d.cfgRead(0x09, 3), 0xFF_00_00)
        XCTAssertEqual(d.deviceFeatures & 0xFF_FFFF, 0x57)
        XCTAssertEqual(d.barRead(0x2000, 8), 0x20_1000, "page_size_mask")
        XCTAssertEqual(d.barRead(0x2000 + 16, 8), 0xFFFF_FFFF_FFFF, "input_range.end")
        XCTAssertEqual(d.barRead(0x2000 + 32, 4), 512, "probe_size")
        XCTAssertEqual(d.barRead(0x2000 + 36, 1), 1, "bypass")

        let rq = FakeDriver(memory: memory, size: 8, base: 0x1000)
        let eq = FakeDriver(memory: memory, size: 8, base: 0x3000)
        XCTAssertTrue(d.initialize(features: VirtioSpec.Feature.version1 | 0x57, queues: [(0, rq, 0xFFFF), (1, eq, 0xFFFF)]))
        d.barWrite(0x2000 + 36, 0, 1)
        XCTAssertEqual(d.barRead(0x2000 + 36, 1), 0)
        try memory.writeBytes(IOMMUWire.attach(domain: 1, endpoint: 8), at: GuestAddress(0x8000))
        try memory.writeBytes([0xAA, 0xAA, 0xAA, 0xAA], at: GuestAddress(0x9000))
        rq.post([(0x8000, 20, false), (0x9000, 4, true)])
        d.notify(0)
        XCTAssertEqual(rq.takeUsed().map(\.len), [4])
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0x9000), count: 4), [0, 0, 0, 0])
        d.status = 0 // device reset: the endpoint leaves its domain
        XCTAssertEqual(host.calls, [.setUnattachedBypass(false), .attach(endpoint: 8, domain: 1, bypass: false, mappings: []),
                                    .detach(endpoint: 8, bypass: false), .domainFreed(1)])
        XCTAssertEqual(d.barRead(0x2000 + 36, 1), 0, "bypass survives the device reset")
        XCTAssertEqual(d.guestErrors, [])
    }

    // MARK: requests that succeed

    func testEveryRequestTypeOnItsOKPath() throws {
        let b = try IOMMUBench()
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 0x08)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x10_0000, end: 0x10_FFFF, phys: 0x4_0000, flags: 1)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0x8000, flags: 3)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x2000, end: 0x2FFF, phys: 0x9000, flags: 2)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 0x10)), W.ok)
        XCTAssertEqual(b.status(W.unmap(domain: 1, start: 0x2000, end: 0x2FFF)), W.ok)
        let probe = b.send(W.probe(endpoint: 0x18), writable: 512 + 4)
        XCTAssertEqual(probe.usedLength, 516)
        XCTAssertEqual(probe.status, W.ok)
        XCTAssertEqual(b.status(W.detach(domain: 1, endpoint: 0x08)), W.ok)

        let low = Entry(iova: 0x1000, size: 0x1000, guestAddress: 0x8000, permissions: .readWrite)
        let high = Entry(iova: 0x10_0000, size: 0x1_0000, guestAddress: 0x4_0000, permissions: .read)
        let writeOnly = Entry(iova: 0x2000, size: 0x1000, guestAddress: 0x9000, permissions: .write)
        XCTAssertEqual(b.host.takeCalls(), [
            .attach(endpoint: 0x08, domain: 1, bypass: false, mappings: []),
            .map(domain: 1, entry: high),
            .map(domain: 1, entry: low),
            .map(domain: 1, entry: writeOnly),
            .attach(endpoint: 0x10, domain: 1, bypass: false, mappings: [low, writeOnly, high]),
            .unmap(domain: 1, entries: [writeOnly]),
            .detach(endpoint: 0x08, bypass: true),
        ])
        XCTAssertEqual(b.device.domains, [VirtioIOMMU.Domain(id: 1, bypass: false, endpoints: [0x10], mappings: [low, high])])
        XCTAssertEqual(b.device.domain(of: 0x10), 1)
        XCTAssertNil(b.device.domain(of: 0x08))
        let st = b.device.statistics
        XCTAssertEqual([st.attaches, st.detaches, st.maps, st.unmaps, st.probes], [2, 1, 3, 1, 1])
        XCTAssertEqual(st.errors, [:])
        XCTAssertEqual(st.requests, 8)
        XCTAssertEqual(b.irq.usedQueues, Array(repeating: 0, count: 8), "one interrupt per notification")
        XCTAssertTrue(b.irq.errors.isEmpty)
        XCTAssertGreaterThan(st.servingNanoseconds, 0, "the time spent serving them is counted")
        b.device.queueNotified(VirtioIOMMU.requestQueue)
        XCTAssertEqual(b.device.statistics.servingNanoseconds, st.servingNanoseconds, "a notification with nothing posted serves nothing")
    }

    func testABatchGetsOneInterruptAndRequestsSplitAcrossDescriptors() throws {
        let b = try IOMMUBench()
        let r = W.attach(domain: 7, endpoint: 0x10)
        try b.memory.writeBytes(r, at: GuestAddress(0x8000))
        try b.memory.writeBytes(W.map(domain: 7, start: 0, end: 0xFFF, phys: 0), at: GuestAddress(0x8100))
        // The attach in three readable pieces; the tail across two writable ones.
        b.requests.post([(0x8000, 1, false), (0x8001, 10, false), (0x800B, UInt32(r.count - 11), false),
                         (0x9000, 1, true), (0x9100, 3, true)])
        b.requests.post([(0x8100, 36, false), (0x9200, 4, true)])
        b.device.queueNotified(0)
        XCTAssertEqual(b.requests.takeUsed().map(\.len), [4, 4])
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(0x9000), count: 1), [0])
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(0x9100), count: 3), [0, 0, 0])
        XCTAssertEqual(b.irq.usedQueues, [0])
        XCTAssertEqual(b.device.domains.first?.mappings.count, 1)
        b.device.queueNotified(0) // nothing new: no interrupt
        b.device.queueNotified(1) // the event queue: nothing to do
        b.device.queueNotified(5)
        XCTAssertEqual(b.irq.usedQueues, [0])
    }

    func testProbeReportsTheMSIWindowThenTheHostRegionsThenZeros() throws {
        let host = RecordingVIOMMUHost(endpoints: [0x08, 0x10],
                                       reserved: [0x08: [0x0...0xFFF]])
        let b = try IOMMUBench(host: host) { VirtioIOMMU(host: $0, probeSize: 64) }
        let r = b.send(W.probe(endpoint: 0x08), writable: 68)
        XCTAssertEqual(r.usedLength, 68)
        XCTAssertEqual(r.writable,
                       W.resvMem(subtype: 1, start: 0xFEE0_0000, end: 0xFEEF_FFFF)
                           + W.resvMem(subtype: 0, start: 0, end: 0xFFF)
                           + [UInt8](repeating: 0, count: 16) + [0, 0, 0, 0])
        let other = b.send(W.probe(endpoint: 0x10), writable: 68)
        XCTAssertEqual(other.writable,
                       W.resvMem(subtype: 1, start: 0xFEE0_0000, end: 0xFEEF_FFFF) + [UInt8](repeating: 0, count: 40)
                           + [0, 0, 0, 0])
        // Reserved bytes of the request are ignored (§5.13.6.7.2 MUST); the
        // host is asked once per endpoint.
        let again = b.send(W.probe(endpoint: 0x10, reserved: [UInt8](repeating: 0x5A, count: 64)), writable: 68)
        XCTAssertEqual(again.writable, other.writable)
        XCTAssertEqual(host.reservedAsked, [0x08, 0x10])
        // A bigger writable part: properties then the tail where probe_size says.
        let big = b.send(W.probe(endpoint: 0x10), writable: 100)
        XCTAssertEqual(big.usedLength, 68)
        XCTAssertEqual(Array(big.writable[64..<68]), [0, 0, 0, 0])
        XCTAssertEqual(Array(big.writable[68...]), [UInt8](repeating: 0xAA, count: 32))
        XCTAssertEqual(b.device.statistics.probes, 4)
    }

    func testProbeErrors() throws {
        let host = RecordingVIOMMUHost(endpoints: [0x08, 0x10],
                                       reserved: [0x10: [0x0...0xFFF, 0x1_0000...0x1_FFFF]])
        let b = try IOMMUBench(host: host) { VirtioIOMMU(host: $0, probeSize: 64) }
        // Unknown endpoint: NOENT, properties zero.
        let noent = b.send(W.probe(endpoint: 0x99), writable: 68)
        XCTAssertEqual(noent.usedLength, 68)
        XCTAssertEqual(noent.writable, [UInt8](repeating: 0, count: 64) + [W.noent, 0, 0, 0])
        // Three properties do not fit in 64 bytes: INVAL, none written (QEMU's answer).
        let full = b.send(W.probe(endpoint: 0x10), writable: 68)
        XCTAssertEqual(full.writable, [UInt8](repeating: 0, count: 64) + [W.inval, 0, 0, 0])
        // Room for fewer than probe_size bytes of properties: INVAL in a tail
        // at the end of the writable part, no property (§5.13.6.7.2).
        let short = b.send(W.probe(endpoint: 0x08), writable: 40)
        XCTAssertEqual(short.usedLength, 40)
        XCTAssertEqual(short.writable, [UInt8](repeating: 0, count: 36) + [W.inval, 0, 0, 0])
        // Readable part shorter than the struct (endpoint + reserved[64]): INVAL.
        let trunc = b.send(Array(W.probe(endpoint: 0x08).prefix(40)), writable: 68)
        XCTAssertEqual(trunc.writable, [UInt8](repeating: 0, count: 64) + [W.inval, 0, 0, 0])
        XCTAssertEqual(b.device.statistics.errors, [.noEntry: 1, .invalid: 3])
        XCTAssertEqual(b.device.statistics.probes, 0)
    }

    // MARK: malformed requests

    func testChainsWithNoRoomForHeadOrTailAndUnknownTypesComeBackUnwritten() throws {
        let b = try IOMMUBench()
        for (readable, writable) in [([UInt8]([1, 0, 0]), 4), (W.attach(domain: 1, endpoint: 8), 3),
                                     (W.attach(domain: 1, endpoint: 8), 0), ([0, 0, 0, 0], 4),
                                     ([6] + [UInt8](repeating: 0, count: 80), 8), ([0xFF, 0, 0, 0], 4)] {
            let r = b.send(readable, writable: writable)
            XCTAssertEqual(r.usedLength, 0, "\(readable.prefix(4)) with \(writable) writable bytes")
            XCTAssertEqual(r.writable, [UInt8](repeating: 0xAA, count: writable), "nothing written")
        }
        // A request in device-writable buffers only: no readable head.
        b.requests.post([(0x9000, 32, true)])
        b.device.queueNotified(0)
        XCTAssertEqual(b.requests.takeUsed().map(\.len), [0])
        XCTAssertEqual(b.device.statistics.unanswered, 7)
        XCTAssertEqual(b.device.statistics.requests, 7)
        XCTAssertEqual(b.host.calls, [])
        XCTAssertTrue(b.irq.errors.isEmpty, "the device goes on")
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8)), W.ok)
    }

    func testRequestsWhoseFeatureWasNotNegotiatedAreNotRecognized() throws {
        let b = try IOMMUBench(features: VirtioIOMMU.Feature.inputRange)
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8)), W.ok)
        XCTAssertNil(b.status(W.map(domain: 1, start: 0, end: 0xFFF, phys: 0)))
        XCTAssertNil(b.status(W.unmap(domain: 1, start: 0, end: 0xFFF)))
        XCTAssertEqual(b.send(W.probe(endpoint: 8), writable: 516).usedLength, 0)
        XCTAssertEqual(b.status(W.attach(domain: 2, endpoint: 8, flags: 1)), W.inval,
                       "ATTACH_F_BYPASS needs VIRTIO_IOMMU_F_BYPASS_CONFIG")
        XCTAssertEqual(b.device.statistics.unanswered, 3)
    }

    func testShortPayloadsAreInvalAndNeverTrap() throws {
        let b = try IOMMUBench()
        for full in [W.attach(domain: 1, endpoint: 8), W.detach(domain: 1, endpoint: 8),
                     W.map(domain: 1, start: 0, end: 0xFFF, phys: 0), W.unmap(domain: 1, start: 0, end: 0xFFF)] {
            for n in 4..<full.count {
                XCTAssertEqual(b.status(Array(full.prefix(n))), W.inval, "type \(full[0]), \(n) bytes")
            }
        }
        XCTAssertEqual(b.host.calls, [])
        // Extra readable bytes past the struct are ignored.
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8) + [1, 2, 3, 4, 5]), W.ok)
        // A bigger writable part still gets a 4-byte tail at its start.
        let r = b.send(W.detach(domain: 1, endpoint: 8), writable: 12)
        XCTAssertEqual(r.usedLength, 4)
        XCTAssertEqual(r.writable, [0, 0, 0, 0] + [UInt8](repeating: 0xAA, count: 8))
    }

    func testAReadableBufferAfterAWritableOneNeedsAReset() throws {
        let b = try IOMMUBench()
        try b.memory.writeBytes(W.attach(domain: 1, endpoint: 8), at: GuestAddress(0x8000))
        b.requests.post([(0x8000, 8, false), (0x9000, 4, true), (0x8008, 12, false)])
        b.device.queueNotified(0)
        XCTAssertEqual(b.irq.errors, [.readableAfterWritable(head: 0)])
        XCTAssertEqual(b.host.calls, [])
        // Stopped: neither queue is used any more.
        b.requests.post([(0x8000, 20, false), (0x9000, 4, true)])
        b.device.queueNotified(0)
        XCTAssertEqual(b.requests.takeUsed().count, 0)
        b.events.post([(0xC000, 24, true)])
        XCTAssertFalse(b.device.reportFault(endpoint: 8, address: nil, reason: .unknown))
    }

    func testReservedFields() throws {
        let b = try IOMMUBench()
        // ATTACH: reserved and unknown flags MUST be rejected with INVAL.
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8, reserved: [0, 0, 1, 0])), W.inval)
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8, flags: 2)), W.inval)
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8, flags: 0x8000_0000)), W.inval)
        XCTAssertEqual(b.host.calls, [])
        // The head's reserved bytes MUST be ignored.
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8, headReserved: [1, 2, 3])), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0, end: 0xFFF, phys: 0)), W.ok)
        // UNMAP: non-zero reserved gets INVAL and unmaps nothing.
        XCTAssertEqual(b.status(W.unmap(domain: 1, start: 0, end: 0xFFF, reserved: [0, 0, 0, 9])), W.inval)
        XCTAssertEqual(b.device.domains.first?.mappings.count, 1)
        // DETACH: reserved MUST be ignored.
        XCTAssertEqual(b.status(W.detach(domain: 1, endpoint: 8, reserved: [UInt8](repeating: 0xEE, count: 8))), W.ok)
        XCTAssertEqual(b.device.domains, [])
    }

    func testUnknownEndpointsAndDomains() throws {
        let b = try IOMMUBench { VirtioIOMMU(host: $0, domainRange: 1...100) }
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 0x20)), W.noent)
        XCTAssertEqual(b.status(W.detach(domain: 1, endpoint: 0x20)), W.noent)
        XCTAssertEqual(b.status(W.attach(domain: 0, endpoint: 8)), W.range)
        XCTAssertEqual(b.status(W.attach(domain: 101, endpoint: 8)), W.range)
        XCTAssertEqual(b.status(W.map(domain: 101, start: 0, end: 0xFFF, phys: 0)), W.range)
        XCTAssertEqual(b.status(W.unmap(domain: 0, start: 0, end: 0xFFF)), W.range)
        XCTAssertEqual(b.status(W.detach(domain: 0xFFFF_FFFF, endpoint: 8)), W.range)
        XCTAssertEqual(b.status(W.map(domain: 5, start: 0, end: 0xFFF, phys: 0)), W.noent)
        XCTAssertEqual(b.status(W.unmap(domain: 5, start: 0, end: 0xFFF)), W.noent)
        XCTAssertEqual(b.status(W.detach(domain: 5, endpoint: 8)), W.inval, "not attached to that domain")
        XCTAssertEqual(b.status(W.attach(domain: 5, endpoint: 8)), W.ok)
        XCTAssertEqual(b.status(W.detach(domain: 6, endpoint: 8)), W.inval)
        XCTAssertEqual(b.status(W.detach(domain: 5, endpoint: 0x10)), W.inval)
        XCTAssertEqual(b.host.takeCalls(), [.attach(endpoint: 8, domain: 5, bypass: false, mappings: [])])
        let st = b.device.statistics
        XCTAssertEqual(st.errors, [.noEntry: 4, .range: 5, .invalid: 3])
        XCTAssertEqual(st.hostRefusals, 0)
    }

    func testMapChecks() throws {
        let host = RecordingVIOMMUHost(endpoints: [0x08, 0x10], reserved: [0x10: [0x7000_0000...0x7000_FFFF]])
        let b = try IOMMUBench(host: host) { VirtioIOMMU(host: $0, inputRange: 0x1000...0xFFFF_FFFF) }
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 2, endpoint: 0x10, flags: 1)), W.ok) // bypass domain
        _ = host.takeCalls()
        let cases: [([UInt8], UInt8, String)] = [
            (W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0, flags: 4), W.inval, "MMIO (F_MMIO not offered)"),
            (W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0, flags: 8), W.inval, "unknown flag"),
            (W.map(domain: 2, start: 0x1000, end: 0x1FFF, phys: 0), W.inval, "bypass domain"),
            (W.map(domain: 1, start: 0x2000, end: 0x1FFF, phys: 0), W.inval, "virt_end < virt_start"),
            (W.map(domain: 1, start: 0x1800, end: 0x2FFF, phys: 0), W.range, "virt_start misaligned"),
            (W.map(domain: 1, start: 0x1000, end: 0x1FFE, phys: 0), W.range, "virt_end + 1 misaligned"),
            (W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0x10), W.range, "phys_start misaligned"),
            (W.map(domain: 1, start: 0, end: 0xFFF, phys: 0), W.range, "below input_range"),
            (W.map(domain: 1, start: 0xFFFF_F000, end: 0x1_0000_0FFF, phys: 0), W.range, "past input_range"),
            (W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0xFFFF_FFFF_FFFF_F000), W.ok, "ends at 2^64 - 1"),
            (W.map(domain: 1, start: 0x2000, end: 0x3FFF, phys: 0xFFFF_FFFF_FFFF_F000), W.range, "phys wraps"),
            (W.map(domain: 1, start: 0xFEE0_0000, end: 0xFEE0_0FFF, phys: 0), W.inval, "MSI window"),
            (W.map(domain: 1, start: 0xFEC0_0000, end: 0xFEFF_FFFF, phys: 0), W.inval, "around the MSI window"),
            (W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0x5000), W.inval, "overlaps a mapping"),
            (W.map(domain: 1, start: 0x7000_F000, end: 0x7001_0FFF, phys: 0), W.ok, "reserved only for 0x10"),
        ]
        for (request, status, what) in cases {
            XCTAssertEqual(b.status(request), status, what)
        }
        XCTAssertEqual(host.takeCalls(), [
            .map(domain: 1, entry: Entry(iova: 0x1000, size: 0x1000, guestAddress: 0xFFFF_FFFF_FFFF_F000)),
            .map(domain: 1, entry: Entry(iova: 0x7000_F000, size: 0x2000, guestAddress: 0)),
        ])
        // 0x10 may not join domain 1 now: a mapping lies in its reserved region.
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 0x10)), W.unsupp)
        XCTAssertEqual(b.status(W.unmap(domain: 1, start: 0x7000_F000, end: 0x7001_0FFF)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 0x10)), W.ok)
        // Now a MAP into 0x10's reserved region is refused for domain 1.
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x7000_0000, end: 0x7000_0FFF, phys: 0)), W.inval)
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x6FFF_F000, end: 0x6FFF_FFFF, phys: 0)), W.ok)
    }

    func testUnmapFollowsTheSpecExamples() throws {
        // Granule 1 byte (page_size_mask bit 0) so the spec's own numbers work.
        let b = try IOMMUBench { VirtioIOMMU(host: $0, pageSizeMask: 1, inputRange: 0...UInt64.max) }
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8)), W.ok)
        func map(_ s: UInt64, _ e: UInt64) { XCTAssertEqual(b.status(W.map(domain: 1, start: s, end: e, phys: 0x100 &+ s)), W.ok) }
        func unmap(_ s: UInt64, _ e: UInt64) -> UInt8? { b.status(W.unmap(domain: 1, start: s, end: e)) }
        var ranges: [ClosedRange<UInt64>] { (b.device.domains.first?.mappings ?? []).map(\.iovaRange) }
        _ = b.host.takeCalls()

        XCTAssertEqual(unmap(0, 4), W.ok, "(1) succeeds, unmaps nothing")
        XCTAssertEqual(b.host.takeCalls(), [], "nothing to tell the host")
        map(0, 9)
        XCTAssertEqual(unmap(0, 9), W.ok, "(2)")
        XCTAssertEqual(ranges, [])
        map(0, 4); map(5, 9)
        XCTAssertEqual(unmap(0, 9), W.ok, "(3) unmaps a and b")
        XCTAssertEqual(ranges, [])
        map(0, 9)
        _ = b.host.takeCalls()
        XCTAssertEqual(unmap(0, 4), W.range, "(4) would split: fails")
        XCTAssertEqual(ranges, [0...9], "and unmaps nothing")
        XCTAssertEqual(b.host.takeCalls(), [])
        XCTAssertEqual(unmap(0, 9), W.ok)
        map(0, 4); map(5, 9)
        XCTAssertEqual(unmap(0, 4), W.ok, "(5) unmaps a")
        XCTAssertEqual(ranges, [5...9])
        XCTAssertEqual(unmap(5, 9), W.ok)
        map(0, 4)
        XCTAssertEqual(unmap(0, 9), W.ok, "(6)")
        XCTAssertEqual(ranges, [])
        map(0, 4); map(10, 14)
        _ = b.host.takeCalls()
        XCTAssertEqual(unmap(0, 14), W.ok, "(7) unmaps a and b")
        XCTAssertEqual(b.host.takeCalls(), [.unmap(domain: 1, entries: [
            Entry(iova: 0, size: 5, guestAddress: 0x100), Entry(iova: 10, size: 5, guestAddress: 0x10A)])])
        // The whole 64-bit space, and virt_end < virt_start.
        map(0, 0); map(UInt64.max, UInt64.max)
        XCTAssertEqual(unmap(0, UInt64.max), W.ok)
        XCTAssertEqual(ranges, [])
        XCTAssertEqual(unmap(9, 8), W.inval)
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0, end: UInt64.max, phys: 0)), W.range,
                       "2^64 bytes cannot be one mapping")
    }

    func testCapsGiveNoMem() throws {
        let host = RecordingVIOMMUHost(endpoints: [1, 2, 3, 4])
        let b = try IOMMUBench(host: host) {
            VirtioIOMMU(host: $0, maxDomains: 2, maxMappingsPerDomain: 2, maxMappings: 3)
        }
        XCTAssertEqual(b.status(W.attach(domain: 10, endpoint: 1)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 20, endpoint: 2)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 30, endpoint: 3)), W.nomem, "a third domain")
        XCTAssertEqual(b.status(W.attach(domain: 20, endpoint: 3)), W.ok, "an existing one is fine")
        XCTAssertEqual(b.status(W.attach(domain: 30, endpoint: 1)), W.ok, "moving frees domain 10: still 2")
        XCTAssertEqual(b.device.domains.map(\.id), [20, 30])
        XCTAssertEqual(b.status(W.map(domain: 20, start: 0x1000, end: 0x1FFF, phys: 0)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 20, start: 0x2000, end: 0x2FFF, phys: 0)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 20, start: 0x3000, end: 0x3FFF, phys: 0)), W.nomem, "per domain")
        XCTAssertEqual(b.status(W.map(domain: 30, start: 0x3000, end: 0x3FFF, phys: 0)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 30, start: 0x4000, end: 0x4FFF, phys: 0)), W.nomem, "in all")
        XCTAssertEqual(b.status(W.unmap(domain: 20, start: 0x1000, end: 0x1FFF)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 30, start: 0x4000, end: 0x4FFF, phys: 0)), W.ok, "room again")
        // Freeing a domain returns its mappings to the total.
        XCTAssertEqual(b.status(W.detach(domain: 30, endpoint: 1)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 40, endpoint: 1)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 40, start: 0x1000, end: 0x1FFF, phys: 0)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 40, start: 0x2000, end: 0x2FFF, phys: 0)), W.ok)
        XCTAssertEqual(b.device.statistics.errors, [.noMemory: 3])
    }

    // MARK: the host

    func testHostRefusalsBecomeStatusesAndChangeNothing() throws {
        let b = try IOMMUBench()
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0x1000)), W.ok)
        let before = b.device.domains
        _ = b.host.takeCalls()

        b.host.refuse(.map, with: DMAMappingError.notGuestRAM(guestAddress: 0x4000_0000, size: 0x1000))
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x2000, end: 0x2FFF, phys: 0x4000_0000)), W.inval)
        b.host.refuse(.map, with: VIOMMUHostError.noResources("pinning"))
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x2000, end: 0x2FFF, phys: 0)), W.nomem)
        b.host.refuse(.map, with: nil)

        b.host.refuse(.unmap, with: RecordingVIOMMUHost.Refusal())
        XCTAssertEqual(b.status(W.unmap(domain: 1, start: 0, end: 0xFFFF)), W.deverr)
        b.host.refuse(.attach, with: VIOMMUHostError.unsupported("no such IOMMU domain"))
        XCTAssertEqual(b.status(W.attach(domain: 2, endpoint: 8)), W.unsupp)
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 0x10)), W.unsupp)
        b.host.refuse(.detach, with: VIOMMUHostError.invalid("busy"))
        XCTAssertEqual(b.status(W.detach(domain: 1, endpoint: 8)), W.inval)

        XCTAssertEqual(b.device.domains, before, "the canonical state is unchanged")
        XCTAssertEqual(b.device.domain(of: 8), 1)
        XCTAssertEqual(b.host.calls, [], "the refused calls left nothing behind")
        let st = b.device.statistics
        XCTAssertEqual(st.hostRefusals, 6)
        XCTAssertEqual(st.errors, [.invalid: 2, .noMemory: 1, .deviceError: 1, .unsupported: 2])
        XCTAssertEqual(b.host.domainMappings[1], before.first?.mappings)
    }

    func testAttachMovesAnEndpointAndFreesTheDomainItLeftEmpty() throws {
        let b = try IOMMUBench()
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0x1000)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 2, endpoint: 0x10)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 2, start: 0x5000, end: 0x6FFF, phys: 0x2000, flags: 1)), W.ok)
        _ = b.host.takeCalls()

        XCTAssertEqual(b.status(W.attach(domain: 2, endpoint: 8)), W.ok)
        let d2 = [Entry(iova: 0x5000, size: 0x2000, guestAddress: 0x2000, permissions: .read)]
        XCTAssertEqual(b.host.takeCalls(), [.attach(endpoint: 8, domain: 2, bypass: false, mappings: d2), .domainFreed(1)])
        XCTAssertEqual(b.device.domains, [VirtioIOMMU.Domain(id: 2, bypass: false, endpoints: [8, 0x10], mappings: d2)])

        // Attaching again to the same domain changes nothing (no host call).
        XCTAssertEqual(b.status(W.attach(domain: 2, endpoint: 8)), W.ok)
        XCTAssertEqual(b.host.takeCalls(), [])
        // Domain 1 is gone with its mappings: attaching to it makes a new, empty one.
        XCTAssertEqual(b.status(W.map(domain: 1, start: 0x1000, end: 0x1FFF, phys: 0)), W.noent)
        XCTAssertEqual(b.status(W.attach(domain: 1, endpoint: 8)), W.ok)
        XCTAssertEqual(b.host.takeCalls(), [.attach(endpoint: 8, domain: 1, bypass: false, mappings: [])])

        // Bypass domains: identity, no mappings; the flag must match the domain.
        XCTAssertEqual(b.status(W.attach(domain: 3, endpoint: 0x18, flags: 1)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 3, endpoint: 8)), W.inval, "not a bypass ATTACH")
        XCTAssertEqual(b.status(W.attach(domain: 2, endpoint: 8, flags: 1)), W.inval, "domain 2 translates")
        XCTAssertEqual(b.device.domain(of: 8), 1, "a refused ATTACH leaves the endpoint where it was")
        XCTAssertEqual(b.status(W.attach(domain: 3, endpoint: 8, flags: 1)), W.ok)
        XCTAssertEqual(b.host.takeCalls(), [
            .attach(endpoint: 0x18, domain: 3, bypass: true, mappings: []),
            .attach(endpoint: 8, domain: 3, bypass: true, mappings: []), .domainFreed(1),
        ])
        XCTAssertEqual(b.status(W.unmap(domain: 3, start: 0, end: 0xFFF)), W.inval, "UNMAP on a bypass domain")
        // DETACH: the global bypass decides what the endpoint gets.
        b.writeConfig([0], at: 36)
        XCTAssertEqual(b.status(W.detach(domain: 3, endpoint: 8)), W.ok)
        XCTAssertEqual(b.status(W.detach(domain: 3, endpoint: 0x18)), W.ok)
        XCTAssertEqual(b.host.takeCalls(), [.setUnattachedBypass(false), .detach(endpoint: 8, bypass: false),
                                            .detach(endpoint: 0x18, bypass: false), .domainFreed(3)])
        XCTAssertEqual(b.host.endpointStates, [8: .unattached, 0x10: .domain(2, bypass: false), 0x18: .unattached])
    }

    func testResetDetachesEverythingAndKeepsBypassUntilASystemReset() throws {
        let b = try IOMMUBench()
        XCTAssertEqual(b.status(W.attach(domain: 4, endpoint: 0x10)), W.ok)
        XCTAssertEqual(b.status(W.attach(domain: 3, endpoint: 8)), W.ok)
        XCTAssertEqual(b.status(W.map(domain: 3, start: 0x1000, end: 0x1FFF, phys: 0)), W.ok)
        b.writeConfig([0], at: 36)
        _ = b.host.takeCalls()
        b.device.reset()
        XCTAssertEqual(b.host.takeCalls(), [.detach(endpoint: 8, bypass: false), .detach(endpoint: 0x10, bypass: false),
                                            .domainFreed(3), .domainFreed(4)])
        XCTAssertEqual(b.device.domains, [])
        XCTAssertFalse(b.device.bypass, "§5.13.4.2: bypass SHOULD NOT change on device reset")
        XCTAssertEqual(b.config()[36], 0)
        // Not running: requests wait, faults are dropped.
        b.requests.post([(0x8000, 20, false), (0x9000, 4, true)])
        b.device.queueNotified(0)
        XCTAssertEqual(b.requests.takeUsed().count, 0)
        XCTAssertFalse(b.device.reportFault(endpoint: 8, address: nil, reason: .unknown))
        b.device.systemReset()
        XCTAssertTrue(b.device.bypass, "restored on system reset")
        XCTAssertEqual(b.host.takeCalls(), [.setUnattachedBypass(true)])
        XCTAssertEqual(b.device.statistics.faultsDropped, 1)
    }

    // MARK: the event queue

    func testFaultEventsAreWrittenToTheEventQueue() throws {
        let b = try IOMMUBench()
        b.events.post([(0xC000, 24, true)])
        b.events.post([(0xC100, 8, true), (0xC200, 16, true)])
        XCTAssertTrue(b.device.reportFault(endpoint: 0x10, address: 0x1234_5678_9000, reason: .mapping, flags: [.write]))
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(0xC000), count: 24),
                       [2, 0, 0, 0] + W.le32(0x102) + W.le32(0x10) + W.le32(0) + W.le64(0x1234_5678_9000))
        XCTAssertTrue(b.device.reportFault(endpoint: 8, address: nil, reason: .domain, flags: [.read, .address]))
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(0xC100), count: 8), [1, 0, 0, 0] + W.le32(1))
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(0xC200), count: 16), W.le32(8) + W.le32(0) + W.le64(0),
                       "no address: F_ADDRESS clear, address 0")
        XCTAssertEqual(b.events.takeUsed().map(\.len), [24, 24])
        XCTAssertEqual(b.irq.usedQueues, [1, 1])
        // No buffer: dropped.
        XCTAssertFalse(b.device.reportFault(endpoint: 8, address: 0, reason: .unknown))
        // Too small: returned unwritten, dropped.
        b.events.post([(0xC300, 16, true)])
        try b.memory.writeBytes([UInt8](repeating: 0xAA, count: 16), at: GuestAddress(0xC300))
        XCTAssertFalse(b.device.reportFault(endpoint: 8, address: 0, reason: .unknown))
        XCTAssertEqual(b.events.takeUsed().map(\.len), [0])
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(0xC300), count: 16), [UInt8](repeating: 0xAA, count: 16))
        // A DMATranslator's fault, as the VMM forwards it.
        b.events.post([(0xC400, 24, true)])
        XCTAssertTrue(b.device.reportFault(endpoint: 0x18, DMAFault(iova: 0xABC000, length: 4, access: .write, reason: .denied)))
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(0xC400), count: 24),
                       [2, 0, 0, 0] + W.le32(0x102) + W.le32(0x18) + W.le32(0) + W.le64(0xABC000))
        b.events.post([(0xC400, 24, true)])
        XCTAssertTrue(b.device.reportFault(endpoint: 0x18, DMAFault(iova: 0x1000, length: 4, access: .read, reason: .detached)))
        XCTAssertEqual(try b.memory.readBytes(at: GuestAddress(0xC400), count: 8), [1, 0, 0, 0] + W.le32(0x101))
        let st = b.device.statistics
        XCTAssertEqual(st.faultsReported, 4)
        XCTAssertEqual(st.faultsDropped, 2)
        // A device-readable event buffer breaks §2.7.4: DEVICE_NEEDS_RESET.
        b.events.post([(0xC500, 24, false)])
        XCTAssertFalse(b.device.reportFault(endpoint: 8, address: nil, reason: .unknown))
        XCTAssertEqual(b.irq.errors, [.wrongDirection(head: 6, expectedWritable: true)])
    }

    func testFaultsBeforeActivationAreDropped() throws {
        let b = try IOMMUBench(activate: false)
        XCTAssertFalse(b.device.reportFault(endpoint: 8, address: 0x1000, reason: .mapping))
        XCTAssertEqual(b.device.statistics.faultsDropped, 1)
    }

    func testFaultsFromAnotherThreadWhileRequestsAreServed() throws {
        let b = try IOMMUBench()
        for i in 0..<8 { b.events.post([(0xC000 + 0x20 * UInt64(i), 24, true)]) }
        let reports = 400
        let device = b.device
        let reporter = Thread {
            for i in 0..<reports { device.reportFault(endpoint: 8, address: UInt64(i) << 12, reason: .mapping) }
        }
        reporter.start()
        for i in 0..<200 {
            let domain = UInt32(i % 3 + 1)
            _ = b.status(W.attach(domain: domain, endpoint: 8))
            _ = b.status(W.map(domain: domain, start: 0x1000, end: 0x1FFF, phys: 0))
        }
        while !reporter.isFinished { Thread.sleep(forTimeInterval: 0.001) }
        let st = b.device.statistics
        XCTAssertEqual(st.faultsReported + st.faultsDropped, UInt64(reports))
        XCTAssertEqual(st.faultsReported, 8, "one per posted buffer")
        XCTAssertEqual(st.requests, 400)
        XCTAssertTrue(b.irq.errors.isEmpty)
    }

    // MARK: fuzz

    /// Random requests, some well-formed, many not, with random host
    /// refusals, config writes and fault reports: the device never traps,
    /// answers every chain once, keeps its counters consistent, stays within
    /// its caps and agrees with the host about every endpoint and domain.
    func testRandomRequestsKeepTheDeviceAndTheHostConsistent() throws {
        var rng = SplitMix64(seed: 0x5EED_10_3300)
        let endpoints: [UInt32] = [0x08, 0x10, 0x18, 0x20]
        let host = RecordingVIOMMUHost(endpoints: Set(endpoints), reserved: [0x18: [0x8000...0xFFFF]])
        let b = try IOMMUBench(host: host) {
            VirtioIOMMU(host: $0, inputRange: 0...0xF_FFFF, domainRange: 0...6, probeSize: 128,
                        maxDomains: 3, maxMappingsPerDomain: 24, maxMappings: 40)
        }
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }
        func page() -> UInt64 { (rng.next() % 0x100) << 12 }
        var sent: UInt64 = 0, reports: UInt64 = 0, eventsOutstanding = 0
        for _ in 0..<4000 {
            let domain = UInt32(rng.next() % 8)
            let endpoint = chance(90) ? pick(endpoints) : UInt32(truncatingIfNeeded: rng.next())
            let start = chance(90) ? page() : rng.next() % 0x10_0000
            let end = chance(85) ? start &+ (rng.next() % 4 + 1) * 0x1000 &- 1 : rng.next()
            var request: [UInt8]
            switch rng.next() % 7 {
            case 0: request = W.attach(domain: domain, endpoint: endpoint, flags: chance(85) ? 0 : UInt32(rng.next() % 4),
                                       reserved: chance(95) ? [0, 0, 0, 0] : [1, 0, 0, 0])
            case 1: request = W.detach(domain: domain, endpoint: endpoint)
            case 2, 3: request = W.map(domain: domain, start: start, end: end, phys: chance(90) ? page() : rng.next(),
                                       flags: chance(90) ? UInt32(rng.next() % 4) : UInt32(truncatingIfNeeded: rng.next()))
            case 4: request = W.unmap(domain: domain, start: start, end: end,
                                      reserved: chance(95) ? [0, 0, 0, 0] : [0, 1, 0, 0])
            case 5: request = W.probe(endpoint: endpoint)
            default: request = (0..<(rng.next() % 80)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            if chance(5) { request = Array(request.prefix(Int(rng.next() % UInt64(request.count + 1)))) }
            var writable = request.first == 5 ? 132 : 4
            if chance(5) { writable = Int(rng.next() % 140) }
            for op in [RecordingVIOMMUHost.Op.attach, .detach, .map, .unmap, .bypass] {
                host.refuse(op, with: chance(3) ? VIOMMUHostError.failed("random") : nil)
            }
            if chance(2) { b.writeConfig([UInt8(rng.next() % 3)], at: 36) }
            if chance(3), eventsOutstanding < Int(b.events.size) {
                b.events.post([(0xC000, UInt32(rng.next() % 32), true)])
                eventsOutstanding += 1
            }
            if chance(3) {
                b.device.reportFault(endpoint: endpoint, address: start, reason: .mapping)
                reports += 1
                eventsOutstanding -= b.events.takeUsed().count
            }

            let reply = b.send(request, writable: writable)
            sent += 1
            XCTAssertTrue([0, 4, 132, UInt32(writable)].contains(reply.usedLength), "used length \(reply.usedLength)")
            if let s = reply.status { XCTAssertLessThanOrEqual(s, 8) }
        }
        XCTAssertTrue(b.irq.errors.isEmpty, "\(b.irq.errors)")
        let st = b.device.statistics
        XCTAssertEqual(st.requests, sent, "every chain answered or returned once")
        XCTAssertGreaterThan(st.maps, 50)
        XCTAssertGreaterThan(st.unmaps, 20)
        XCTAssertGreaterThan(st.attaches, 50)
        XCTAssertGreaterThan(st.detaches, 10)
        XCTAssertGreaterThan(st.probes, 50)
        XCTAssertGreaterThan(st.hostRefusals, 10)
        for status in [VirtioIOMMU.Status.invalid, .range, .noEntry, .noMemory, .deviceError] {
            XCTAssertGreaterThan(st.errors[status] ?? 0, 0, "\(status) reached")
        }
        XCTAssertEqual(st.faultsReported + st.faultsDropped, reports)
        XCTAssertGreaterThan(st.faultsReported, 10)
        XCTAssertGreaterThan(st.faultsDropped, 10)
        assertAgree(b)
        for op in [RecordingVIOMMUHost.Op.attach, .detach, .map, .unmap, .bypass] { host.refuse(op, with: nil) }
        b.device.reset()
        assertAgree(b)
        XCTAssertEqual(b.device.domains, [])
    }

    /// The device's domains and the host's view describe the same thing.
    private func assertAgree(_ b: IOMMUBench, file: StaticString = #filePath, line: UInt = #line) {
        let domains = b.device.domains
        XCTAssertLessThanOrEqual(domains.count, b.device.maxDomains, file: file, line: line)
        XCTAssertLessThanOrEqual(domains.reduce(0) { $0 + $1.mappings.count }, b.device.maxMappings, file: file, line: line)
        var expected: [UInt32: RecordingVIOMMUHost.EndpointState] = [:]
        for e in b.host.endpointIDs { expected[e] = .unattached }
        for d in domains {
            XCTAssertFalse(d.endpoints.isEmpty, "a domain with no endpoint was freed", file: file, line: line)
            XCTAssertLessThanOrEqual(d.mappings.count, b.device.maxMappingsPerDomain, file: file, line: line)
            XCTAssertTrue(!d.bypass || d.mappings.isEmpty, file: file, line: line)
            for e in d.endpoints {
                expected[e] = .domain(d.id, bypass: d.bypass)
                XCTAssertEqual(b.device.domain(of: e), d.id, file: file, line: line)
            }
            XCTAssertEqual(b.host.domainMappings[d.id], d.mappings, "domain \(d.id)", file: file, line: line)
        }
        XCTAssertEqual(b.host.endpointStates, expected, file: file, line: line)
        XCTAssertEqual(Set(b.host.domainMappings.keys), Set(domains.map(\.id)), file: file, line: line)
        XCTAssertEqual(b.host.unattachedBypass, b.device.bypass, file: file, line: line)
    }
}
