import Bits
import GuestMemory
import Synchronization

/// virtio-iommu device (virtio 1.2 §5.13, device type 23): the guest's IOMMU
/// for the endpoints a `VIOMMUHost` puts behind it. Two queues: requestq (0),
/// where the driver sends ATTACH, DETACH, MAP, UNMAP and PROBE requests, and
/// eventq (1), where the device reports faults (`reportFault`).
///
/// Offers VIRTIO_IOMMU_F_INPUT_RANGE, _DOMAIN_RANGE, _MAP_UNMAP,
/// _BYPASS_CONFIG and, when `probeSize` is not 0, _PROBE. Not offered:
/// VIRTIO_IOMMU_F_BYPASS (superseded, §5.13.3.2) and VIRTIO_IOMMU_F_MMIO (a
/// MAP with VIRTIO_IOMMU_MAP_F_MMIO gets INVAL).
///
/// The device owns the canonical state: domains (ID -> a `DMAMappingTable`,
/// a bypass flag, a set of endpoints) and, for each endpoint, its domain.
/// Every request is checked against it before the host is asked; a host
/// refusal becomes an error status and the state stays as it was. A domain
/// is created by the first ATTACH to it and freed, mappings and all, when
/// its last endpoint leaves (§5.13.6.3: "it ceases to exist").
///
/// A request is the device-readable bytes (4-byte head, then the type's
/// fields) followed by the device-writable bytes (for PROBE, `probe_size`
/// bytes of properties first; then the 4-byte tail), whatever the descriptor
/// boundaries. The tail is written at the start of the writable part (after
/// the properties for PROBE); the used length is what was written: 4, or
/// `probe_size` + 4 for PROBE. What the guest gets for a bad request:
/// - No room to answer (fewer than 4 readable or 4 writable bytes), or a type
///   the device does not recognize (unknown, or MAP/UNMAP/PROBE whose feature
///   was not negotiated): the buffers go back unwritten with used length 0
///   (§5.13.6: "If a request type is not recognized, the device SHOULD NOT
///   write the buffer and SHOULD set the used length to zero"; Linux reads
///   that as IOERR). Counted in `Statistics.unanswered`.
/// - A readable buffer after a writable one (§2.7.4.2): DEVICE_NEEDS_RESET,
///   as for any broken ring.
/// - Fewer readable bytes than the type's struct: INVAL (QEMU's answer).
/// - Everything else gets the status the spec names; see `handle` for the
///   order of the checks and README.md for the table.
///
/// Caps (`maxDomains`, `maxMappingsPerDomain`, `maxMappings`) bound what a
/// guest can make the VMM hold: past them ATTACH or MAP gets NOMEM.
/// Requests are served synchronously on the notifying thread, in ring order.
///
/// Locking: the request lock guards the canonical state, the request queue
/// and the `bypass` byte; the host is called with it held. The event lock
/// guards the event queue, so `reportFault` (any thread) never waits behind
/// a slow host call. Order: request lock -> event lock.
public final class VirtioIOMMU: VirtioDevice {
    /// §5.13.2 "Virtqueues".
    public static let requestQueue = 0
    public static let eventQueue = 1
    public static let defaultQueueSize: UInt16 = 256
    /// 4 KiB pages (the granule: Linux's driver takes the lowest set bit and
    /// refuses a granule above its page size) and 2 MiB blocks as a hint.
    public static let defaultPageSizeMask: UInt64 = 0x1000 | 0x20_0000
    /// 48-bit IOVAs: what x86 IOMMUs with 4-level tables translate.
    public static let defaultInputRange: ClosedRange<UInt64> = 0...0xFFFF_FFFF_FFFF
    /// Any 32-bit domain ID (QEMU's default); `maxDomains` bounds how many exist.
    public static let defaultDomainRange: ClosedRange<UInt32> = 0...UInt32.max
    /// QEMU's VIOMMU_PROBE_SIZE: room for 21 RESV_MEM properties.
    public static let defaultProbeSize: UInt32 = 512
    /// The largest `probeSize` accepted (the PROBE reply is built in memory).
    public static let maxProbeSize: UInt32 = 64 * 1024
    public static let defaultMaxDomains = 1024
    public static let defaultMaxMappingsPerDomain = DMAMappingTable.defaultLimit
    public static let defaultMaxMappings = 1 << 18
    /// The x86 MSI address window (Intel SDM vol. 3, "Message Address
    /// Register Format": 0xFEEx_xxxx), reported by PROBE as a RESV_MEM
    /// property of subtype MSI for every endpoint, as QEMU does on x86. MSI
    /// writes are not translated; MAP requests that overlap it get INVAL.
    public static let msiWindow: ClosedRange<UInt64> = 0xFEE0_0000...0xFEEF_FFFF

    /// Counters, for tests and the VMM's exit log.
    public struct Statistics: Equatable, Sendable {
        /// Requests answered OK, by type.
        public var attaches: UInt64 = 0
        public var detaches: UInt64 = 0
        public var maps: UInt64 = 0
        public var unmaps: UInt64 = 0
        public var probes: UInt64 = 0
        /// Requests answered with an error status, by status.
        public var errors: [Status: UInt64] = [:]
        /// Of those, the ones the host refused (the device's checks passed).
        public var hostRefusals: UInt64 = 0
        /// Host calls that threw outside a request (reset, bypass changes).
        public var hostErrors: UInt64 = 0
        /// Requests returned with used length 0 and nothing written: no room
        /// for head or tail, or a type the device does not recognize.
        public var unanswered: UInt64 = 0
        /// Fault events written to the event queue.
        public var faultsReported: UInt64 = 0
        /// Fault events dropped: no event buffer (or one too small), or the
        /// device not running.
        public var faultsDropped: UInt64 = 0
        /// Requests found by polling the request queue (`pollWindow`), with
        /// no notification from the driver.
        public var polled: UInt64 = 0
        /// Time spent serving requests (parsing, checks, the host's map and
        /// unmap, the reply), in nanoseconds: what the device cost the guest,
        /// whose driver waits on each batch. Polling an empty queue is not counted.
        public var servingNanoseconds: UInt64 = 0

        public init() {}

        /// Every request the device has answered or returned.
        public var requests: UInt64 {
            attaches + detaches + maps + unmaps + probes + unanswered + errors.values.reduce(0, +)
        }
    }

    /// A domain as the device holds it (`domains`).
    public struct Domain: Equatable, Sendable {
        public let id: UInt32
        /// Attached with VIRTIO_IOMMU_ATTACH_F_BYPASS: identity, no mappings.
        public let bypass: Bool
        /// Sorted.
        public let endpoints: [UInt32]
        /// In IOVA order.
        public let mappings: [DMAMappingTable.Entry]

        public init(id: UInt32, bypass: Bool, endpoints: [UInt32], mappings: [DMAMappingTable.Entry]) {
            self.id = id
            self.bypass = bypass
            self.endpoints = endpoints
            self.mappings = mappings
        }
    }

    private struct DomainState {
        let bypass: Bool
        var table: DMAMappingTable
        var endpoints: Set<UInt32> = []
    }

    private struct RequestSide {
        let memory: GuestMemoryAccess
        var queue: SplitVirtqueue
        let interrupt: VirtioInterrupt
        let features: UInt64
        var broken = false
    }

    private struct State {
        var active: RequestSide?
        var domains: [UInt32: DomainState] = [:]
        var endpointDomain: [UInt32: UInt32] = [:]
        /// Sum of the domains' table sizes (for `maxMappings`).
        var mappingCount = 0
        var bypass: Bool
        /// `host.reservedRegions`, asked once per endpoint that exists.
        var reserved: [UInt32: [ClosedRange<UInt64>]] = [:]
        var statistics = Statistics()
    }

    private struct EventSide {
        let memory: GuestMemoryAccess
        var queue: SplitVirtqueue
        let interrupt: VirtioInterrupt
        var broken = false
    }

    private struct Events {
        var active: EventSide?
        var reported: UInt64 = 0
        var dropped: UInt64 = 0
    }

    private let host: VIOMMUHost
    public let pageSizeMask: UInt64
    /// The lowest bit of `pageSizeMask`: MAP addresses and sizes are multiples of it.
    public let granule: UInt64
    public let inputRange: ClosedRange<UInt64>
    public let domainRange: ClosedRange<UInt32>
    public let probeSize: UInt32
    /// What `bypass` starts as, and returns to on `systemReset`.
    public let initialBypass: Bool
    public let maxDomains: Int
    public let maxMappingsPerDomain: Int
    public let maxMappings: Int
    private let queueSize: UInt16
    /// How long the request queue is polled after a request, with the
    /// driver's notifications off (zero: never). Linux's driver waits for
    /// every request and posts the next one soon after; each notification
    /// is a VM exit, which costs more than the request itself.
    public let pollWindow: Duration
    /// The longest one stretch of polling lasts, however busy the guest.
    public let maxPollBurst: Duration
    public static let defaultMaxPollBurst: Duration = .milliseconds(100)
    private let state: Mutex<State>
    private let events = Mutex(Events())

    /// `pageSizeMask` must have a bit set (§5.13.4.2: MUST); `probeSize` is
    /// at most `maxProbeSize` (0: PROBE not offered); the caps are at least 1.
    /// `initialBypass` true (QEMU's `boot-bypass` default, §5.13.4.2: "MAY
    /// initialize the bypass field to 1") lets endpoints DMA to guest RAM
    /// until the driver attaches them, as firmware and early boot expect.
    /// These are the VMM's values, not the guest's: a bad one traps.
    public init(host: VIOMMUHost,
                pageSizeMask: UInt64 = VirtioIOMMU.defaultPageSizeMask,
                inputRange: ClosedRange<UInt64> = VirtioIOMMU.defaultInputRange,
                domainRange: ClosedRange<UInt32> = VirtioIOMMU.defaultDomainRange,
                probeSize: UInt32 = VirtioIOMMU.defaultProbeSize,
                initialBypass: Bool = true,
                maxDomains: Int = VirtioIOMMU.defaultMaxDomains,
                maxMappingsPerDomain: Int = VirtioIOMMU.defaultMaxMappingsPerDomain,
                maxMappings: Int = VirtioIOMMU.defaultMaxMappings,
                queueSize: UInt16 = VirtioIOMMU.defaultQueueSize,
                pollWindow: Duration = .zero,
                maxPollBurst: Duration = VirtioIOMMU.defaultMaxPollBurst) {
        precondition(pageSizeMask != 0, "virtio-iommu: page_size_mask needs a bit (§5.13.4.2)")
        precondition(probeSize <= Self.maxProbeSize, "virtio-iommu: probe_size above \(Self.maxProbeSize)")
        precondition(maxDomains >= 1 && maxMappingsPerDomain >= 1 && maxMappings >= 1, "virtio-iommu: caps must be >= 1")
        self.host = host
        self.pageSizeMask = pageSizeMask
        granule = UInt64(1) << UInt64(pageSizeMask.trailingZeroBitCount)
        self.inputRange = inputRange
        self.domainRange = domainRange
        self.probeSize = probeSize
        self.initialBypass = initialBypass
        self.maxDomains = maxDomains
        self.maxMappingsPerDomain = maxMappingsPerDomain
        self.maxMappings = maxMappings
        self.queueSize = queueSize
        self.pollWindow = max(pollWindow, .zero)
        self.maxPollBurst = max(maxPollBurst, .zero)
        state = Mutex(State(bypass: initialBypass))
    }

    public var deviceType: UInt16 { VirtioSpec.DeviceType.iommu }
    public var deviceFeatures: UInt64 {
        Feature.inputRange | Feature.domainRange | Feature.mapUnmap | Feature.bypassConfig
            | (probeSize > 0 ? Feature.probe : 0)
    }
    public var queueMaxSizes: [UInt16] { [queueSize, queueSize] }
    public var configSize: Int { ConfigOffset.size }

    /// The config's `bypass` byte: whether endpoints in no domain have
    /// identity DMA.
    public var bypass: Bool { state.withLock { $0.bypass } }

    private func configBytes(bypass: Bool) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: ConfigOffset.size)
        LE.put(pageSizeMask, into: &c, at: ConfigOffset.pageSizeMask)
        LE.put(inputRange.lowerBound, into: &c, at: ConfigOffset.inputRangeStart)
        LE.put(inputRange.upperBound, into: &c, at: ConfigOffset.inputRangeEnd)
        LE.put(domainRange.lowerBound, into: &c, at: ConfigOffset.domainRangeStart)
        LE.put(domainRange.upperBound, into: &c, at: ConfigOffset.domainRangeEnd)
        LE.put(probeSize, into: &c, at: ConfigOffset.probeSize)
        c[ConfigOffset.bypass] = bypass ? 1 : 0
        return c
    }

    public func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        copyConfig(configBytes(bypass: bypass), offset: offset, into: data)
    }

    /// Only `bypass` is writable (§5.13.4.1: "The driver MUST NOT write to any
    /// other device configuration field"), and only with 0 or 1; any other
    /// value, and writes to other bytes, are ignored. A write that covers
    /// the byte among others (e.g. 4 bytes at 36) takes the byte. A change
    /// goes to the host (`setUnattachedBypass`); if it throws the byte keeps
    /// its old value. The transport does not tell the device what was
    /// negotiated before DRIVER_OK, so the write is taken whether or not
    /// VIRTIO_IOMMU_F_BYPASS_CONFIG was.
    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {
        let (index, overflow) = ConfigOffset.bypass.subtractingReportingOverflow(offset)
        guard !overflow, index >= 0, index < data.count else { return }
        let value = data[index]
        guard value <= 1 else { return }
        state.withLock { s in setBypass(value == 1, &s) }
    }

    private func setBypass(_ new: Bool, _ s: inout State) {
        guard new != s.bypass else { return }
        do {
            try host.setUnattachedBypass(new)
            s.bypass = new
        } catch {
            s.statistics.hostErrors += 1
        }
    }

    /// Also serves any requests posted before DRIVER_OK.
    public func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue],
                         interrupt: VirtioInterrupt) throws {
        guard queues.count == 2 else { throw VirtqueueError.device("virtio-iommu needs exactly 2 queues") }
        state.withLock { s in
            events.withLock { e in
                e.active = EventSide(memory: memory, queue: queues[Self.eventQueue], interrupt: interrupt)
            }
            s.active = RequestSide(memory: memory, queue: queues[Self.requestQueue], interrupt: interrupt,
                                   features: features)
            process(&s)
        }
    }

    /// Device reset (§5.13.5: "When the device is reset, endpoints are not
    /// attached to any domain"): every attached endpoint is detached on the
    /// host and every domain freed. `bypass` is kept (§5.13.4.2: "SHOULD NOT
    /// change on device reset").
    public func reset() {
        state.withLock { s in
            events.withLock { $0.active = nil }
            s.active = nil
            for endpoint in s.endpointDomain.keys.sorted() {
                do { try host.detach(endpoint: endpoint, bypass: s.bypass) } catch { s.statistics.hostErrors += 1 }
            }
            for domain in s.domains.keys.sorted() { host.domainFreed(domain) }
            s.domains = [:]
            s.endpointDomain = [:]
            s.mappingCount = 0
        }
    }

    /// A system reset (the VM reset, not the driver's): the device reset,
    /// then `bypass` back to `initialBypass` (§5.13.4.2: "SHOULD be restored
    /// to its initial value on system reset"). The VMM calls it after
    /// resetting the transport.
    public func systemReset() {
        reset()
        state.withLock { s in
            guard s.bypass != initialBypass else { return }
            do { try host.setUnattachedBypass(initialBypass) } catch { s.statistics.hostErrors += 1 }
            s.bypass = initialBypass
        }
    }

    public func queueNotified(_ index: Int) {
        // The event queue needs nothing on a notification: its buffers are
        // taken when there is a fault to report.
        guard index == Self.requestQueue else { return }
        guard state.withLock({ process(&$0) }) > 0, pollWindow > .zero else { return }
        poll()
    }

    /// Serves requests as the driver posts them, with its notifications
    /// off, until none has come for `pollWindow`; then turns notifications
    /// back on and serves what arrived meanwhile (whose notification the
    /// driver skipped).
    private func poll() {
        let clock = ContinuousClock()
        let off = state.withLock { s in
            running(&s) { a in try a.queue.disableNotifications(memory: a.memory) } != nil
        }
        guard off else { return }
        let start = clock.now
        var last = start
        // A guest that never pauses would keep the thread here for good: give
        // the loop back (stop, reset) at least every `maxPollBurst`.
        while clock.now - last < pollWindow, clock.now - start < maxPollBurst {
            let n = state.withLock { s in
                let n = process(&s)
                if n > 0 { s.statistics.polled &+= UInt64(n) }
                return n
            }
            if n < 0 { return } // reset or broken: notifications are the next driver's business
            if n > 0 { last = clock.now }
        }
        state.withLock { s in
            let arrived = running(&s) { a in try a.queue.enableNotifications(memory: a.memory) }
            if arrived == true { process(&s) }
        }
    }

    /// `body` on the running request side; nil when the device is not
    /// running, or broke in `body` (then it needs a reset).
    private func running<T>(_ s: inout State, _ body: (inout RequestSide) throws -> T) -> T? {
        guard var a = s.active, !a.broken else { return nil }
        defer { s.active = a }
        do { return try body(&a) } catch {
            breakDevice(&a, error)
            return nil
        }
    }

    public var statistics: Statistics {
        state.withLock { s in
            var st = s.statistics
            events.withLock { e in
                st.faultsReported = e.reported
                st.faultsDropped = e.dropped
            }
            return st
        }
    }

    /// The domains, by ID.
    public var domains: [Domain] {
        state.withLock { s in
            s.domains.keys.sorted().compactMap { id in
                s.domains[id].map { Domain(id: id, bypass: $0.bypass, endpoints: $0.endpoints.sorted(),
                                           mappings: $0.table.entries) }
            }
        }
    }

    /// The domain `endpoint` is attached to, if any.
    public func domain(of endpoint: UInt32) -> UInt32? {
        state.withLock { $0.endpointDomain[endpoint] }
    }

    // MARK: - Request queue

    /// Serves every request posted; returns how many (-1 when the device is
    /// not running or broke on the way).
    @discardableResult
    private func process(_ s: inout State) -> Int {
        guard var a = s.active, !a.broken else { return -1 }
        var served = 0
        let clock = ContinuousClock()
        var started: ContinuousClock.Instant?
        defer {
            if let started, served != 0 {
                let d = (clock.now - started).components
                s.statistics.servingNanoseconds &+= UInt64(clamping: d.seconds) &* 1_000_000_000 &+ UInt64(clamping: d.attoseconds / 1_000_000_000)
            }
        }
        do {
            while let chain = try a.queue.popAvailable(memory: a.memory) {
                if started == nil { started = clock.now }
                let reply = try serve(chain, features: a.features, memory: a.memory, &s)
                let written = try chain.writeWritable(reply, memory: a.memory)
                try a.queue.addUsed(head: chain.head, len: UInt32(clamping: written), memory: a.memory)
                served += 1
            }
            if served > 0, try a.queue.needsNotification(memory: a.memory) {
                a.interrupt.signalUsedQueue(Self.requestQueue)
            }
        } catch {
            breakDevice(&a, error)
            served = -1
        }
        s.active = a
        return served
    }

    private func breakDevice(_ a: inout RequestSide, _ error: any Error) {
        a.broken = true
        events.withLock { e in e.active?.broken = true }
        a.interrupt.deviceNeedsReset(after: error)
    }

    /// Serves one request; returns the bytes to write from the start of its
    /// writable part (empty: used length 0). Throws only for a readable
    /// buffer after a writable one and guest memory errors.
    private func serve(_ chain: DescriptorChain, features: UInt64, memory: GuestMemoryAccess,
                       _ s: inout State) throws -> [UInt8] {
        try chain.requireReadableBeforeWritable()
        let readable = try chain.readReadable(memory: memory, limit: Self.headSize + VIOMMURequest.maxPayloadSize)
        let writable = chain.writableLength
        guard readable.count >= Self.headSize, writable >= UInt64(Self.tailSize) else {
            s.statistics.unanswered += 1
            return []
        }
        // head.reserved is ignored (§5.13.6.1: "The device MUST ignore field
        // reserved of struct virtio_iommu_req_head").
        let type = readable[0]
        let recognized: Bool
        switch type {
        case RequestType.attach, RequestType.detach: recognized = true
        case RequestType.map, RequestType.unmap: recognized = features & Feature.mapUnmap != 0
        case RequestType.probe: recognized = probeSize > 0 && features & Feature.probe != 0
        default: recognized = false
        }
        guard recognized else {
            s.statistics.unanswered += 1
            return []
        }

        if type == RequestType.probe {
            // §5.13.6.7.2: properties smaller than probe_size -> no property, INVAL.
            guard writable >= UInt64(probeSize) + UInt64(Self.tailSize) else {
                count(.invalid, type: type, &s)
                // The tail is where the driver expects it, at the end of the
                // writable part; the bytes before it are zeroed. Bounded:
                // writable < probeSize + 4 <= 64 KiB + 4.
                return [UInt8](repeating: 0, count: Int(writable) - Self.tailSize) + VIOMMUWire.tail(.invalid)
            }
        }

        let payload = Array(readable[Self.headSize...])
        let status: Status
        var properties: [UInt8] = []
        if let request = VIOMMURequest(type: type, payload: payload) {
            status = handle(request, features: features, properties: &properties, &s)
        } else {
            status = .invalid // fewer readable bytes than the type's struct
        }
        count(status, type: type, &s)
        if type == RequestType.probe {
            // properties.count <= probeSize (handle checks); the rest is zeros,
            // which reads as a NONE property: the end of the list (§5.13.6.7.2).
            properties += [UInt8](repeating: 0, count: Int(probeSize) - properties.count)
            return properties + VIOMMUWire.tail(status)
        }
        return VIOMMUWire.tail(status)
    }

    private func count(_ status: Status, type: UInt8, _ s: inout State) {
        guard status == .ok else {
            s.statistics.errors[status, default: 0] += 1
            return
        }
        switch type {
        case RequestType.attach: s.statistics.attaches += 1
        case RequestType.detach: s.statistics.detaches += 1
        case RequestType.map: s.statistics.maps += 1
        case RequestType.unmap: s.statistics.unmaps += 1
        default: s.statistics.probes += 1
        }
    }

    /// The checks, in order, and the state change. Each returns before
    /// touching the host or the state when a check fails.
    private func handle(_ request: VIOMMURequest, features: UInt64, properties: inout [UInt8],
                        _ s: inout State) -> Status {
        switch request {
        case let .attach(domain, endpoint, flags, reserved):
            return attach(domain: domain, endpoint: endpoint, flags: flags, reserved: reserved, features: features, &s)
        case let .detach(domain, endpoint):
            return detach(domain: domain, endpoint: endpoint, &s)
        case let .map(domain, virtStart, virtEnd, physStart, flags):
            return map(domain: domain, virtStart: virtStart, virtEnd: virtEnd, physStart: physStart, flags: flags, &s)
        case let .unmap(domain, virtStart, virtEnd, reserved):
            return unmap(domain: domain, virtStart: virtStart, virtEnd: virtEnd, reserved: reserved, &s)
        case let .probe(endpoint):
            return probe(endpoint: endpoint, properties: &properties, &s)
        }
    }

    /// §5.13.6.2. INVAL: unknown flag bits or non-zero reserved (MUSTs), the
    /// bypass flag without VIRTIO_IOMMU_F_BYPASS_CONFIG, or a bypass flag that
    /// differs from the existing domain's; NOENT: unknown endpoint (MUST);
    /// RANGE: domain outside `domain_range`; UNSUPP: the domain has a mapping
    /// inside one of the endpoint's reserved regions (incompatible
    /// properties); NOMEM: a new domain past `maxDomains`. An endpoint
    /// already in the domain stays (OK, nothing changes: a DETACH then ATTACH
    /// would free a sole endpoint's domain and its mappings). Otherwise the
    /// endpoint moves: it leaves its old domain, which is freed if empty.
    private func attach(domain: UInt32, endpoint: UInt32, flags: UInt32, reserved: UInt32, features: UInt64,
                        _ s: inout State) -> Status {
        guard flags & ~AttachFlag.bypass == 0, reserved == 0 else { return .invalid }
        let bypass = flags & AttachFlag.bypass != 0
        guard !bypass || features & Feature.bypassConfig != 0 else { return .invalid }
        guard host.hasEndpoint(endpoint) else { return .noEntry }
        guard domainRange.contains(domain) else { return .range }
        let old = s.endpointDomain[endpoint]
        if let d = s.domains[domain] {
            guard d.bypass == bypass else { return .invalid }
            if old == domain { return .ok }
            if !d.bypass,
               reservedRegions(of: endpoint, &s).contains(where: { Self.tableOverlaps(d.table, $0) }) {
                return .unsupported
            }
        } else {
            let freesOld = old.map { s.domains[$0]?.endpoints.count == 1 } ?? false
            guard s.domains.count - (freesOld ? 1 : 0) < maxDomains else { return .noMemory }
        }
        let mappings = s.domains[domain]?.table.entries ?? []
        do {
            try host.attach(endpoint: endpoint, domain: domain, bypass: bypass, mappings: mappings)
        } catch {
            return refused(error, &s)
        }
        if let old { leave(endpoint, old, &s) }
        s.domains[domain, default: DomainState(bypass: bypass, table: DMAMappingTable(limit: maxMappingsPerDomain))]
            .endpoints.insert(endpoint)
        s.endpointDomain[endpoint] = domain
        return .ok
    }

    /// §5.13.6.3. NOENT: unknown endpoint (MUST); RANGE: domain outside
    /// `domain_range`; INVAL: the endpoint is not in that domain (MAY).
    /// The reserved bytes are ignored (MUST).
    private func detach(domain: UInt32, endpoint: UInt32, _ s: inout State) -> Status {
        guard host.hasEndpoint(endpoint) else { return .noEntry }
        guard domainRange.contains(domain) else { return .range }
        guard s.endpointDomain[endpoint] == domain else { return .invalid }
        do {
            try host.detach(endpoint: endpoint, bypass: s.bypass)
        } catch {
            return refused(error, &s)
        }
        leave(endpoint, domain, &s)
        s.endpointDomain[endpoint] = nil
        return .ok
    }

    /// Takes `endpoint` out of `domain`; frees the domain when it was the last.
    private func leave(_ endpoint: UInt32, _ domain: UInt32, _ s: inout State) {
        guard var d = s.domains[domain] else { return }
        d.endpoints.remove(endpoint)
        if d.endpoints.isEmpty {
            s.mappingCount -= d.table.entries.count
            s.domains[domain] = nil
            host.domainFreed(domain)
        } else {
            s.domains[domain] = d
        }
    }

    /// §5.13.6.4. In order: INVAL for a flag other than READ and WRITE (MUST;
    /// MMIO is not offered); RANGE for a domain outside `domain_range`;
    /// NOENT for a domain that does not exist; INVAL for a bypass domain;
    /// INVAL when `virt_end < virt_start`; RANGE when `virt_start`,
    /// `virt_end + 1` or `phys_start` is not a multiple of the granule, when
    /// the range leaves `input_range`, is all 2^64 addresses, or `phys_start`
    /// + size wraps; INVAL when it overlaps the MSI window or a reserved
    /// region of an endpoint in the domain (§5.13.6.8.1.2: "SHOULD reject")
    /// or an existing mapping; NOMEM past `maxMappings` or
    /// `maxMappingsPerDomain`. Then the host maps it.
    private func map(domain: UInt32, virtStart: UInt64, virtEnd: UInt64, physStart: UInt64, flags: UInt32,
                     _ s: inout State) -> Status {
        guard flags & ~(MapFlag.read | MapFlag.write) == 0 else { return .invalid }
        guard domainRange.contains(domain) else { return .range }
        // Out of the dictionary while it changes, so that its table is not
        // shared, and a change does not copy all of it (copy on write).
        guard var d = s.domains.removeValue(forKey: domain) else { return .noEntry }
        defer { s.domains[domain] = d }
        guard !d.bypass else { return .invalid }
        guard virtEnd >= virtStart else { return .invalid }
        let mask = granule - 1
        guard virtStart & mask == 0, (virtEnd &+ 1) & mask == 0, physStart & mask == 0 else { return .range }
        guard inputRange.contains(virtStart), inputRange.contains(virtEnd) else { return .range }
        let (size, whole) = (virtEnd - virtStart).addingReportingOverflow(1)
        guard !whole else { return .range }
        let (_, wraps) = physStart.addingReportingOverflow(size - 1)
        guard !wraps else { return .range }
        let range = virtStart...virtEnd
        guard !range.overlaps(Self.msiWindow) else { return .invalid }
        for endpoint in d.endpoints.sorted() where reservedRegions(of: endpoint, &s).contains(where: { range.overlaps($0) }) {
            return .invalid
        }
        guard s.mappingCount < maxMappings else { return .noMemory }
        var permissions: DMAPermissions = []
        if flags & MapFlag.read != 0 { permissions.insert(.read) }
        if flags & MapFlag.write != 0 { permissions.insert(.write) }
        let entry: DMAMappingTable.Entry
        do {
            entry = try d.table.checkMap(iova: virtStart, size: size, guestAddress: physStart, permissions: permissions)
        } catch {
            return Self.status(for: error)
        }
        do {
            try host.map(domain: domain, entry: entry)
        } catch {
            return refused(error, &s)
        }
        do {
            try d.table.map(iova: entry.iova, size: entry.size, guestAddress: entry.guestAddress,
                            permissions: entry.permissions)
        } catch {
            // checkMap passed on this very table: cannot happen.
            return .deviceError
        }
        s.mappingCount += 1
        return .ok
    }

    /// §5.13.6.6. INVAL for non-zero reserved bytes (MAY; nothing is
    /// unmapped then); RANGE for a domain outside `domain_range`; NOENT for
    /// a domain that does not exist; INVAL for a bypass domain or
    /// `virt_end < virt_start`; RANGE, unmapping nothing, when the range
    /// would split a mapping. A range with no mapping in it is OK.
    private func unmap(domain: UInt32, virtStart: UInt64, virtEnd: UInt64, reserved: UInt32,
                       _ s: inout State) -> Status {
        guard reserved == 0 else { return .invalid }
        guard domainRange.contains(domain) else { return .range }
        // Out of the dictionary while it changes (see `map`).
        guard var d = s.domains.removeValue(forKey: domain) else { return .noEntry }
        defer { s.domains[domain] = d }
        guard !d.bypass else { return .invalid }
        guard virtEnd >= virtStart else { return .invalid }
        let gone: [DMAMappingTable.Entry]
        let (size, whole) = (virtEnd - virtStart).addingReportingOverflow(1)
        if whole {
            gone = d.table.entries // [0, 2^64 - 1] splits nothing
        } else {
            do {
                gone = try d.table.checkUnmap(iova: virtStart, size: size)
            } catch {
                return Self.status(for: error)
            }
        }
        guard !gone.isEmpty else { return .ok }
        do {
            try host.unmap(domain: domain, entries: gone)
        } catch {
            return refused(error, &s)
        }
        d.table.remove(gone)
        s.mappingCount -= gone.count
        return .ok
    }

    /// §5.13.6.7. NOENT for an unknown endpoint (SHOULD); the reserved bytes
    /// are ignored (MUST). The properties: the MSI window (RESV_MEM, subtype
    /// MSI), then each of the host's reserved regions (subtype RESERVED).
    /// When they do not all fit in `probe_size`: INVAL, no property (QEMU
    /// does the same; reporting only some would let the guest map a
    /// reserved range).
    private func probe(endpoint: UInt32, properties: inout [UInt8], _ s: inout State) -> Status {
        guard host.hasEndpoint(endpoint) else { return .noEntry }
        let regions = reservedRegions(of: endpoint, &s)
        let (count, o1) = regions.count.addingReportingOverflow(1)
        let (bytes, o2) = count.multipliedReportingOverflow(by: ProbeProperty.resvMemSize)
        guard !o1, !o2, bytes <= Int(probeSize) else { return .invalid }
        properties = VIOMMUWire.resvMem(subtype: ProbeProperty.msi, range: Self.msiWindow)
        for r in regions { properties += VIOMMUWire.resvMem(subtype: ProbeProperty.reserved, range: r) }
        return .ok
    }

    private func reservedRegions(of endpoint: UInt32, _ s: inout State) -> [ClosedRange<UInt64>] {
        if let r = s.reserved[endpoint] { return r }
        let r = host.reservedRegions(endpoint: endpoint)
        s.reserved[endpoint] = r
        return r
    }

    /// Whether `table` has a mapping with an IOVA in `range`.
    private static func tableOverlaps(_ table: DMAMappingTable, _ range: ClosedRange<UInt64>) -> Bool {
        let (size, whole) = (range.upperBound - range.lowerBound).addingReportingOverflow(1)
        if whole { return !table.entries.isEmpty }
        do {
            return try !table.checkUnmap(iova: range.lowerBound, size: size).isEmpty
        } catch {
            return true // a mapping reaches into the range from outside
        }
    }

    /// A host refusal: counted, and turned into a status.
    private func refused(_ error: Error, _ s: inout State) -> Status {
        s.statistics.hostRefusals += 1
        return Self.status(for: error)
    }

    /// The status for an error the table or the host threw (see `VIOMMUHostError`).
    static func status(for error: Error) -> Status {
        switch error {
        case let e as VIOMMUHostError:
            switch e {
            case .unsupported: return .unsupported
            case .noResources: return .noMemory
            case .invalid: return .invalid
            case .failed: return .deviceError
            }
        case let e as DMAMappingError:
            switch e {
            case .notGuestRAM, .overlaps: return .invalid
            case .tooManyMappings: return .noMemory
            case .splits, .empty, .wraps: return .range
            }
        default:
            return .deviceError
        }
    }

    // MARK: - Event queue

    /// Reports a fault on the event queue (§5.13.6.9): takes the next event
    /// buffer, writes a `struct virtio_iommu_fault` (24 bytes; with
    /// VIRTIO_IOMMU_FAULT_F_ADDRESS and `address` when one is given) and
    /// signals the driver. Returns false when the event was dropped: the
    /// device is not running, the driver posted no buffer (§5.13.6.9: "the
    /// device can either wait for one to be consumed, or drop the event"),
    /// or the buffer is shorter than 24 bytes (it goes back unwritten, used
    /// length 0: "SHOULD NOT use multiple buffers"). A buffer with a
    /// device-readable part puts the device in DEVICE_NEEDS_RESET.
    ///
    /// Any thread (an emulated device's I/O thread, from a `DMATranslator`
    /// fault handler); takes only the event lock.
    @discardableResult
    public func reportFault(endpoint: UInt32, address: UInt64?, reason: FaultReason, flags: FaultFlags = []) -> Bool {
        var f = flags.subtracting(.address)
        if address != nil { f.insert(.address) }
        let event = VIOMMUWire.fault(reason: reason, flags: f.rawValue, endpoint: endpoint, address: address ?? 0)
        return events.withLock { e in
            guard var a = e.active, !a.broken else {
                e.dropped += 1
                return false
            }
            defer { e.active = a }
            do {
                guard let chain = try a.queue.popAvailable(memory: a.memory) else {
                    e.dropped += 1
                    return false
                }
                try chain.requireWritableOnly()
                var delivered = false
                if chain.writableLength >= UInt64(Self.faultSize) {
                    let n = try chain.writeWritable(event, memory: a.memory)
                    try a.queue.addUsed(head: chain.head, len: UInt32(clamping: n), memory: a.memory)
                    delivered = true
                } else {
                    try a.queue.addUsed(head: chain.head, len: 0, memory: a.memory)
                }
                if try a.queue.needsNotification(memory: a.memory) {
                    a.interrupt.signalUsedQueue(Self.eventQueue)
                }
                if delivered { e.reported += 1 } else { e.dropped += 1 }
                return delivered
            } catch {
                a.broken = true
                e.dropped += 1
                a.interrupt.deviceNeedsReset(after: error)
                return false
            }
        }
    }

    /// Reports a fault a `DMATranslator` saw for `endpoint` (its fault
    /// handler): a detached endpoint is a DOMAIN fault, an unmapped or
    /// refused access a MAPPING fault, at the access's IOVA.
    @discardableResult
    public func reportFault(endpoint: UInt32, _ fault: DMAFault) -> Bool {
        let reason: FaultReason = fault.reason == .detached ? .domain : .mapping
        var flags: FaultFlags = []
        if fault.access.contains(.read) { flags.insert(.read) }
        if fault.access.contains(.write) { flags.insert(.write) }
        return reportFault(endpoint: endpoint, address: fault.iova, reason: reason, flags: flags)
    }
}
