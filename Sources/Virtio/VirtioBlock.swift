import Bits
import GuestMemory
import Synchronization

/// virtio block device (virtio 1.2 §5.2): one request queue; sectors come
/// from a `BlockBackend` (`BlockFile` in the VMM).
///
/// Offers VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH,
/// and VIRTIO_BLK_F_DISCARD with VIRTIO_BLK_F_WRITE_ZEROES for a writable
/// backend or VIRTIO_BLK_F_RO for a read-only one (§5.2.3). Serves
/// VIRTIO_BLK_T_IN, _OUT, _FLUSH, _GET_ID, _DISCARD and _WRITE_ZEROES; every
/// other type gets VIRTIO_BLK_S_UNSUPP (§5.2.6).
///
/// DISCARD and WRITE_ZEROES carry 1 to `maxSegments` 16-byte segments (le64
/// sector, le32 num_sectors, le32 flags) as their data. Both leave their
/// sectors reading as zeros: WRITE_ZEROES must (§5.2.6.2), and DISCARD does
/// so too (the backend punches a hole), so a guest never reads stale data
/// back from a discarded range. The whole request is checked before any
/// sector changes: a flag other than UNMAP, or UNMAP on a DISCARD, gets
/// VIRTIO_BLK_S_UNSUPP (§5.2.6.2); a data length that is not a whole number
/// of segments, too many segments, a segment longer than the configured
/// maximum or one that overflows or ends past the capacity, writable data,
/// or a read-only device get VIRTIO_BLK_S_IOERR.
///
/// A request (§5.2.6) is read as two byte streams, whatever the descriptor
/// boundaries (§2.6.4): the device-readable bytes are the 16-byte header
/// (le32 type, le32 reserved, le64 sector) then, for OUT, the data; the
/// device-writable bytes are, for IN and GET_ID, the data, then the status
/// byte, which is always the last writable byte. The used length is what the
/// device wrote: the data it read into the driver's buffers plus 1.
///
/// What the guest gets for a bad request:
/// - A chain with no complete header (fewer than 16 readable bytes), no
///   writable byte for the status, or a readable buffer after a writable one
///   (§2.7.4.2) cannot be answered within the protocol: the device stops and
///   asks for DEVICE_NEEDS_RESET (`VirtioInterrupt.deviceNeedsReset`), which
///   is also how the VMM gets to log "guest error: ..." for it.
/// - Anything else that is wrong is answered with VIRTIO_BLK_S_IOERR and the
///   device goes on: data in the wrong direction for the type (readable data
///   for IN or GET_ID, writable data besides the status for OUT), a length
///   that is not a multiple of 512 (§5.2.6.1), `sector * 512 + length` that
///   overflows or ends past the capacity, a write to a read-only device
///   (§5.2.6.2: IOERR and no data written), a GET_ID buffer shorter than 20
///   bytes, and any error from the backend. FLUSH ignores its sector and any
///   data (§5.2.6.1 asks the driver for 0 and none).
/// - Behind a vIOMMU, a buffer the device cannot reach (not mapped in the
///   endpoint's domain, or without the permission; the vIOMMU reports the
///   fault to the guest) fails that request with VIRTIO_BLK_S_IOERR; if the
///   status byte is out of reach, the request is returned with used length
///   0. The device goes on either way.
///
/// Data moves between the image and the driver's own buffers in place: no
/// copy, no bounce buffer, so nothing a guest asks for makes the VMM
/// allocate its data. The driver's pages are 4 KiB-aligned, so with
/// `cache = "none"` they go straight to O_DIRECT.
///
/// With a `BlockAsyncIO` (io_uring in the VMM), IN, OUT and FLUSH whose
/// buffers guest memory can lend beyond the call (`lastingHostBuffers`:
/// guest RAM, not behind a vIOMMU) are handed to it and answered from
/// `completionsReady`, in the order they finish, with one notification
/// check per queue per batch; at `maxInFlight` a queue waits for room.
/// Everything else, and every request without one, is served at once,
/// synchronously, on the thread that delivered the notification, with the
/// device lock held (`withHostBuffers`: one `preadv`/`pwritev`).
///
/// `queues` request queues (VIRTIO_BLK_F_MQ when more than one) are served
/// independently, each signalled on its own vector.
public final class VirtioBlock: VirtioDevice {
    /// §5.2.1 "Device ID".
    public static let deviceTypeID: UInt16 = 2
    /// §5.2.2 "Virtqueues": requestq.
    public static let requestQueue = 0
    public static let defaultQueueSize: UInt16 = 256
    /// §5.2.4: `capacity` counts 512-byte sectors, and `sector` in a request
    /// is an offset in 512-byte units (§5.2.6), whatever `blk_size` says.
    public static let sectorSize: UInt64 = 512
    /// VIRTIO_BLK_ID_BYTES (§5.2.6, linux/virtio_blk.h): GET_ID returns 20
    /// bytes, NUL-padded, no terminator when all 20 are used.
    public static let idBytes = 20

    /// §5.2.3 "Feature bits" (bit numbers from the spec, as masks).
    public enum Feature {
        public static let sizeMax: UInt64 = 1 << 1  // VIRTIO_BLK_F_SIZE_MAX (not offered: any segment size)
        public static let segMax: UInt64 = 1 << 2   // VIRTIO_BLK_F_SEG_MAX
        public static let readOnly: UInt64 = 1 << 5 // VIRTIO_BLK_F_RO
        public static let blockSize: UInt64 = 1 << 6 // VIRTIO_BLK_F_BLK_SIZE
        public static let flush: UInt64 = 1 << 9    // VIRTIO_BLK_F_FLUSH
        public static let discard: UInt64 = 1 << 13 // VIRTIO_BLK_F_DISCARD
        public static let writeZeroes: UInt64 = 1 << 14 // VIRTIO_BLK_F_WRITE_ZEROES
        public static let multiqueue: UInt64 = 1 << 12 // VIRTIO_BLK_F_MQ
    }

    /// §5.2.6 request types (`type` field).
    public enum RequestType {
        public static let `in`: UInt32 = 0     // VIRTIO_BLK_T_IN
        public static let out: UInt32 = 1      // VIRTIO_BLK_T_OUT
        public static let flush: UInt32 = 4    // VIRTIO_BLK_T_FLUSH
        public static let getID: UInt32 = 8    // VIRTIO_BLK_T_GET_ID
        public static let discard: UInt32 = 11 // VIRTIO_BLK_T_DISCARD
        public static let writeZeroes: UInt32 = 13 // VIRTIO_BLK_T_WRITE_ZEROES
    }

    /// §5.2.6 `struct virtio_blk_discard_write_zeroes`: le64 sector, le32
    /// num_sectors, le32 flags; its one flag (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP).
    public static let segmentSize: UInt64 = 16
    public static let unmapFlag: UInt32 = 1
    /// Segments per DISCARD or WRITE_ZEROES request (`max_discard_seg`,
    /// `max_write_zeroes_seg`; Linux sends at most 256).
    public static let maxSegments: UInt32 = 256
    /// Sectors per segment (`max_discard_sectors`, `max_write_zeroes_sectors`): 2 GiB.
    public static let maxSegmentSectors: UInt32 = 1 << 22
    /// `discard_sector_alignment`, in sectors: 4 KiB, a file system block.
    public static let discardAlignmentSectors: UInt32 = 8

    /// §5.2.6 status values (the last byte of the request).
    public enum Status {
        public static let ok: UInt8 = 0     // VIRTIO_BLK_S_OK
        public static let ioError: UInt8 = 1 // VIRTIO_BLK_S_IOERR
        public static let unsupported: UInt8 = 2 // VIRTIO_BLK_S_UNSUPP
    }

    /// §5.2.4 `struct virtio_blk_config`: offsets of the fields the offered
    /// features make valid. The device configuration ends after
    /// `write_zeroes_may_unmap` and its padding; the fields between
    /// `blk_size` and the discard ones (topology, writeback) belong to
    /// features not offered and read 0, except `num_queues`.
    public enum ConfigOffset {
        public static let capacity = 0  // le64, 512-byte sectors
        public static let sizeMax = 8   // le32 (VIRTIO_BLK_F_SIZE_MAX; reads 0)
        public static let segMax = 12   // le32 (VIRTIO_BLK_F_SEG_MAX)
        public static let geometry = 16 // le16 cylinders, u8 heads, u8 sectors (reads 0)
        public static let blockSize = 20 // le32 (VIRTIO_BLK_F_BLK_SIZE)
        public static let numQueues = 34 // le16 (VIRTIO_BLK_F_MQ)
        public static let maxDiscardSectors = 36 // le32 (VIRTIO_BLK_F_DISCARD)
        public static let maxDiscardSegments = 40 // le32
        public static let discardSectorAlignment = 44 // le32
        public static let maxWriteZeroesSectors = 48 // le32 (VIRTIO_BLK_F_WRITE_ZEROES)
        public static let maxWriteZeroesSegments = 52 // le32
        public static let writeZeroesMayUnmap = 56 // u8, then 3 unused bytes
        public static let size = 60
    }

    /// §5.2.6 request header: le32 type, le32 reserved, le64 sector.
    static let headerSize: UInt64 = 16

    /// Counters, for tests and the VMM's statistics.
    public struct Statistics: Equatable, Sendable {
        public var reads: UInt64 = 0
        public var writes: UInt64 = 0
        public var flushes: UInt64 = 0
        /// DISCARD and WRITE_ZEROES requests served, and the bytes they zeroed.
        public var discards: UInt64 = 0
        public var writeZeroes: UInt64 = 0
        public var bytesZeroed: UInt64 = 0
        public var bytesRead: UInt64 = 0
        public var bytesWritten: UInt64 = 0
        /// Requests answered VIRTIO_BLK_S_IOERR because the request was
        /// invalid (range, length, direction, read-only).
        public var invalidRequests: UInt64 = 0
        /// Requests answered VIRTIO_BLK_S_IOERR because the backend failed.
        public var backendErrors: UInt64 = 0
        /// Requests answered VIRTIO_BLK_S_UNSUPP.
        public var unsupportedRequests: UInt64 = 0
        /// Requests that failed because a buffer could not be reached (an
        /// IOVA the guest's vIOMMU domain does not map, or maps without the
        /// permission): answered VIRTIO_BLK_S_IOERR, or not at all (used
        /// length 0) when the status byte itself is out of reach.
        public var dmaFailures: UInt64 = 0
        /// Requests taken from each request queue.
        public var requestsPerQueue: [UInt64] = []
        /// The most requests the asynchronous backend had in flight at once.
        public var peakInFlight: Int = 0
        public init() {}
    }

    private struct Active {
        let memory: GuestMemoryAccess
        /// One per request queue; nil for one the driver left disabled.
        var queues: [SplitVirtqueue?]
        let interrupt: VirtioInterrupt
        var broken = false
    }

    /// A request handed to the asynchronous backend, waiting for its result.
    private struct InFlight {
        enum Kind { case read, write, flush }
        let queue: Int
        let head: UInt16
        let kind: Kind
        let length: UInt64
        /// At the status byte (the last writable byte).
        var status: BlockSegmentCursor
    }

    private struct State {
        var active: Active?
        var statistics = Statistics()
        /// By tag.
        var inFlight: [UInt64: InFlight] = [:]
        var nextTag: UInt64 = 1
        /// Queues that stopped taking requests because `maxInFlight` were in
        /// flight: served again when some complete.
        var stalled: Set<Int> = []
        /// A reset waiting for the requests in flight to end
        /// (`reset(then:)`): called when the last one does.
        var resetDone: (@Sendable () -> Void)?
    }

    /// What became of a request.
    private enum Outcome {
        /// Answered now: the status, and the bytes written into the driver's
        /// buffers before it.
        case status(UInt8)
        /// Handed to the asynchronous backend under this tag.
        case submitted(InFlight.Kind, length: UInt64)
    }

    private let backend: BlockBackend
    /// Asynchronous I/O on the backend, or nil: every request is served at
    /// once, synchronously.
    private let async: BlockAsyncIO?
    private let queueSize: UInt16
    /// Request queues (`num_queues`).
    public let queueCount: Int
    private let readOnly: Bool
    /// Whole sectors of the backend, fixed at creation.
    public let capacitySectors: UInt64
    private let serial: [UInt8]
    private let config: [UInt8]
    private let state = Mutex(State())

    /// Most request queues offered (VIRTIO_BLK_F_MQ); Linux uses up to one
    /// per CPU.
    public static let maxQueues = 64

    /// `serial` is what GET_ID returns (ASCII; its first 20 bytes are used,
    /// NUL-padded). `queueSize` is each request queue's maximum (a power of
    /// 2); `queues` request queues (1 to `maxQueues`; more than 1 offers
    /// VIRTIO_BLK_F_MQ), each with its own MSI-X vector. With `async`, reads,
    /// writes and flushes go to it and complete later (see the type's
    /// documentation).
    public init(backend: BlockBackend, serial: String = "", queueSize: UInt16 = VirtioBlock.defaultQueueSize,
                queues: Int = 1, async: BlockAsyncIO? = nil) {
        self.backend = backend
        self.async = async
        self.queueSize = queueSize
        queueCount = min(max(queues, 1), Self.maxQueues)
        readOnly = backend.isReadOnly
        capacitySectors = backend.capacity / Self.sectorSize
        var id = [UInt8](repeating: 0, count: Self.idBytes)
        for (i, b) in serial.utf8.prefix(Self.idBytes).enumerated() { id[i] = b }
        self.serial = id

        var c = [UInt8](repeating: 0, count: ConfigOffset.size)
        LE.put(capacitySectors, into: &c, at: ConfigOffset.capacity)
        // seg_max: data segments per request. The header and the status take
        // a descriptor each, so at most queueSize - 2 are left for data when
        // the chain is direct (QEMU offers the same).
        LE.put(UInt32(max(Int(queueSize) - 2, 1)), into: &c, at: ConfigOffset.segMax)
        LE.put(UInt32(Self.sectorSize), into: &c, at: ConfigOffset.blockSize)
        LE.put(UInt16(queueCount), into: &c, at: ConfigOffset.numQueues)
        if !readOnly {
            LE.put(Self.maxSegmentSectors, into: &c, at: ConfigOffset.maxDiscardSectors)
            LE.put(Self.maxSegments, into: &c, at: ConfigOffset.maxDiscardSegments)
            LE.put(Self.discardAlignmentSectors, into: &c, at: ConfigOffset.discardSectorAlignment)
            LE.put(Self.maxSegmentSectors, into: &c, at: ConfigOffset.maxWriteZeroesSectors)
            LE.put(Self.maxSegments, into: &c, at: ConfigOffset.maxWriteZeroesSegments)
            // A WRITE_ZEROES with UNMAP may punch a hole.
            c[ConfigOffset.writeZeroesMayUnmap] = 1
        }
        config = c
    }

    public var deviceType: UInt16 { Self.deviceTypeID }
    public var deviceFeatures: UInt64 {
        Feature.segMax | Feature.blockSize | Feature.flush
            | (readOnly ? Feature.readOnly : Feature.discard | Feature.writeZeroes)
            | (queueCount > 1 ? Feature.multiqueue : 0)
    }
    public var queueMaxSizes: [UInt16] { Array(repeating: queueSize, count: queueCount) }
    public var configSize: Int { ConfigOffset.size }

    public func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        copyConfig(config, offset: offset, into: data)
    }

    /// The configuration is read-only for this device (`writeback` needs
    /// VIRTIO_BLK_F_CONFIG_WCE, not offered): writes are ignored.
    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {}

    /// Also serves any requests posted before DRIVER_OK.
    public func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue],
                         interrupt: VirtioInterrupt) throws {
        guard queues.count == queueCount else {
            throw VirtqueueError.device("block device has \(queueCount) request queues, got \(queues.count)")
        }
        state.withLock { s in
            s.active = Active(memory: memory, queues: queues.map { $0.isEnabled ? $0 : nil }, interrupt: interrupt)
            if s.statistics.requestsPerQueue.count != queueCount {
                s.statistics.requestsPerQueue = Array(repeating: 0, count: queueCount)
            }
            for q in 0..<queueCount { process(q, &s) }
        }
    }

    /// Waits for the requests in flight (their results are dropped: the
    /// driver has let go of the queues) before the device forgets them.
    public func reset() {
        let done = state.withLock { s -> (@Sendable () -> Void)? in
            s.active = nil
            if !s.inFlight.isEmpty { async?.waitForAll() }
            s.inFlight = [:]
            s.stalled = []
            defer { s.resetDone = nil }
            return s.resetDone
        }
        done?()
    }

    /// Stops at once; `done` runs when the requests in flight have ended
    /// (from `completionsReady`, on the I/O thread), their results dropped,
    /// or at once when none is. A second reset before then replaces `done`
    /// after running the first one's (the driver reset twice; both are done
    /// at the same moment).
    public func reset(then done: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> (@Sendable () -> Void)? in
            s.active = nil
            s.stalled = []
            let all: @Sendable () -> Void
            if let earlier = s.resetDone { all = { earlier(); done() } } else { all = done }
            s.resetDone = s.inFlight.isEmpty ? nil : all
            return s.inFlight.isEmpty ? all : nil
        }
        now?()
    }

    public func queueNotified(_ index: Int) {
        guard index >= 0, index < queueCount else { return }
        state.withLock { process(index, &$0) }
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Requests handed to the asynchronous backend and not yet answered.
    public var requestsInFlight: Int { state.withLock { $0.inFlight.count } }

    /// The asynchronous backend has results waiting (its completion event
    /// fired): answers every finished request in its queue's used ring,
    /// signals each queue that got answers once, if the driver wants it
    /// (VIRTIO_F_EVENT_IDX), and serves queues that had stopped for room.
    public func completionsReady() {
        guard let async else { return }
        let resetDone = state.withLock { s -> (@Sendable () -> Void)? in
            // Bit q: queue q got answers (at most `maxQueues`, 64, queues).
            var answered: UInt64 = 0
            async.reap { tag, error in
                guard let f = s.inFlight.removeValue(forKey: tag) else { return }
                finish(f, failed: error != nil, &s)
                answered |= 1 << UInt64(f.queue)
            }
            if s.active == nil, s.inFlight.isEmpty, let done = s.resetDone {
                s.resetDone = nil
                return done
            }
            guard var a = s.active, !a.broken else { return nil }
            do {
                while answered != 0 {
                    let q = answered.trailingZeroBitCount
                    answered &= answered - 1
                    guard var vq = a.queues[q] else { continue }
                    if try vq.needsNotification(memory: a.memory) { a.interrupt.signalUsedQueue(q) }
                    a.queues[q] = vq
                }
            } catch {
                a.broken = true
                a.interrupt.deviceNeedsReset(after: error)
            }
            s.active = a
            let stalled = s.stalled.sorted()
            s.stalled = []
            for q in stalled { process(q, &s) }
            return nil
        }
        resetDone?()
    }

    /// Answers one request the asynchronous backend finished: its status
    /// byte and its used element (no notification: the caller sends one per
    /// batch).
    private func finish(_ f: InFlight, failed: Bool, _ s: inout State) {
        guard var a = s.active, !a.broken, var vq = a.queues[f.queue] else { return }
        if failed {
            s.statistics.backendErrors += 1
        } else {
            switch f.kind {
            case .read:
                s.statistics.reads += 1
                s.statistics.bytesRead += f.length
            case .write:
                s.statistics.writes += 1
                s.statistics.bytesWritten += f.length
            case .flush:
                s.statistics.flushes += 1
            }
        }
        let written = !failed && f.kind == .read ? f.length : 0
        var status = f.status
        let len = answer(failed ? Status.ioError : Status.ok, at: &status, written: written, memory: a.memory,
                         statistics: &s.statistics)
        do {
            try vq.addUsed(head: f.head, len: len, memory: a.memory)
            a.queues[f.queue] = vq
        } catch {
            a.broken = true
            a.interrupt.deviceNeedsReset(after: error)
        }
        s.active = a
    }

    private func process(_ q: Int, _ s: inout State) {
        guard var a = s.active, !a.broken, var vq = a.queues[q] else { return }
        do {
            var completed = false
            // The driver need not notify while the queue is being drained
            // (§2.7.10): each notification it skips is a VM exit saved.
            // Re-armed before returning, and whatever arrived meanwhile is
            // drained too, so none is left without a notification coming.
            try vq.disableNotifications(memory: a.memory)
            drain: while true {
                if let async, s.inFlight.count >= async.maxInFlight {
                    // Completions serve this queue again (`stalled`).
                    s.stalled.insert(q)
                    _ = try vq.enableNotifications(memory: a.memory)
                    break
                }
                guard let chain = try vq.popAvailable(memory: a.memory) else {
                    if try vq.enableNotifications(memory: a.memory) {
                        try vq.disableNotifications(memory: a.memory)
                        continue drain
                    }
                    break
                }
                s.statistics.requestsPerQueue[q] += 1
                if let len = try handle(chain, queue: q, memory: a.memory, &s) {
                    try vq.addUsed(head: chain.head, len: len, memory: a.memory)
                    completed = true
                }
            }
            async?.commit()
            if completed, try vq.needsNotification(memory: a.memory) {
                a.interrupt.signalUsedQueue(q)
            }
            a.queues[q] = vq
        } catch {
            a.broken = true
            a.interrupt.deviceNeedsReset(after: error)
        }
        s.active = a
    }

    /// Serves one request: returns the used length when it is answered now,
    /// nil when it went to the asynchronous backend. Throws (and the device
    /// goes to DEVICE_NEEDS_RESET) only when the chain cannot carry an
    /// answer or guest memory fails.
    private func handle(_ chain: DescriptorChain, queue: Int, memory: GuestMemoryAccess,
                        _ s: inout State) throws -> UInt32? {
        try chain.requireReadableBeforeWritable()
        let (r, w) = chain.readableThenWritable
        var readable = BlockSegmentCursor(r)
        var writable = BlockSegmentCursor(w)
        guard readable.remaining >= Self.headerSize else {
            throw VirtqueueError.device("virtio-blk request at head \(chain.head): \(readable.remaining)-byte header, "
                                        + "§5.2.6 needs \(Self.headerSize) device-readable bytes")
        }
        guard writable.remaining >= 1 else {
            throw VirtqueueError.device("virtio-blk request at head \(chain.head): no device-writable status byte (§5.2.6)")
        }
        var written: UInt64 = 0
        var outcome: Outcome
        let tag = s.nextTag
        do {
            outcome = try serve(readable: &readable, writable: &writable, memory: memory, written: &written,
                                tag: tag, statistics: &s.statistics)
        } catch VirtqueueError.memory {
            // A buffer out of reach (only behind a vIOMMU: otherwise every
            // buffer was checked when the chain was taken).
            s.statistics.dmaFailures += 1
            outcome = .status(Status.ioError)
            written = 0
        }

        // The status is the last writable byte, whatever data came before it.
        writable.skip(writable.remaining - 1)
        switch outcome {
        case let .status(status):
            return answer(status, at: &writable, written: written, memory: memory, statistics: &s.statistics)
        case let .submitted(kind, length):
            s.nextTag &+= 1
            s.inFlight[tag] = InFlight(queue: queue, head: chain.head, kind: kind, length: length, status: writable)
            s.statistics.peakInFlight = max(s.statistics.peakInFlight, s.inFlight.count)
            return nil
        }
    }

    /// Writes `status` at `cursor` (the status byte); returns the used
    /// length: `written` bytes of data and the status, or 0 when the status
    /// byte is out of reach.
    private func answer(_ status: UInt8, at cursor: inout BlockSegmentCursor, written: UInt64,
                        memory: GuestMemoryAccess, statistics: inout Statistics) -> UInt32 {
        do {
            try withUnsafeBytes(of: status) { try cursor.write($0, memory: memory) }
        } catch {
            if status != Status.ioError { statistics.dmaFailures += 1 }
            return 0
        }
        return UInt32(clamping: written + 1)
    }

    /// Reads the header and does the request, or hands it to the
    /// asynchronous backend under `tag`.
    private func serve(readable: inout BlockSegmentCursor, writable: inout BlockSegmentCursor,
                       memory: GuestMemoryAccess, written: inout UInt64, tag: UInt64,
                       statistics: inout Statistics) throws -> Outcome {
        // The 16-byte header as two little-endian words, on the stack:
        // type (low 32 bits) and reserved, then sector.
        var words: (UInt64, UInt64) = (0, 0)
        try withUnsafeMutableBytes(of: &words) { try readable.read(into: $0, memory: memory) }
        let type = UInt32(truncatingIfNeeded: UInt64(littleEndian: words.0))
        let sector = UInt64(littleEndian: words.1)
        // Data the driver gave the device (OUT), and room it gave for data
        // (IN, GET_ID): everything but the header and the status byte.
        let dataOut = readable.remaining
        let dataIn = writable.remaining - 1

        let status: UInt8
        switch type {
        case RequestType.in:
            if dataOut == 0, let offset = byteOffset(sector: sector, length: dataIn) {
                var at = writable
                if let async, let buffers = try lasting(&at, dataIn, .write, memory: memory, for: async),
                   async.submitRead(at: offset, into: buffers, tag: tag) {
                    writable = at
                    return .submitted(.read, length: dataIn)
                }
                status = try readIn(offset: offset, length: dataIn, to: &writable, memory: memory,
                                    written: &written, statistics: &statistics)
            } else {
                status = Status.ioError
                statistics.invalidRequests += 1
            }
        case RequestType.out:
            if dataIn == 0, !readOnly, let offset = byteOffset(sector: sector, length: dataOut) {
                var at = readable
                if let async, let buffers = try lasting(&at, dataOut, .read, memory: memory, for: async),
                   async.submitWrite(at: offset, from: buffers.map { UnsafeRawBufferPointer($0) }, tag: tag) {
                    readable = at
                    return .submitted(.write, length: dataOut)
                }
                status = try writeOut(offset: offset, length: dataOut, from: &readable, memory: memory,
                                      statistics: &statistics)
            } else {
                status = Status.ioError
                statistics.invalidRequests += 1
            }
        case RequestType.flush:
            if let async, async.submitFlush(tag: tag) { return .submitted(.flush, length: 0) }
            do {
                try backend.flush()
                statistics.flushes += 1
                status = Status.ok
            } catch {
                statistics.backendErrors += 1
                status = Status.ioError
            }
        case RequestType.getID:
            if dataOut == 0, dataIn >= UInt64(Self.idBytes) {
                try serial.withUnsafeBytes { try writable.write($0, memory: memory) }
                written = UInt64(Self.idBytes)
                status = Status.ok
            } else {
                status = Status.ioError
                statistics.invalidRequests += 1
            }
        case RequestType.discard, RequestType.writeZeroes:
            if dataIn == 0 {
                status = try zero(discard: type == RequestType.discard, from: &readable, memory: memory,
                                  statistics: &statistics)
            } else {
                status = Status.ioError
                statistics.invalidRequests += 1
            }
        default:
            status = Status.unsupported
            statistics.unsupportedRequests += 1
        }
        return .status(status)
    }

    /// The driver's next `length` bytes at `cursor` (which moves past them)
    /// as host buffers that stay valid until the asynchronous backend is
    /// done with them, or nil when the request is to be served synchronously: no
    /// data, more buffers than the backend takes in one request, or memory
    /// that cannot promise lasting buffers (behind a vIOMMU). Throws
    /// `VirtqueueError.memory` when a buffer is out of reach.
    private func lasting(_ cursor: inout BlockSegmentCursor, _ length: UInt64, _ access: DMAPermissions,
                         memory: GuestMemoryAccess, for async: BlockAsyncIO) throws -> [UnsafeMutableRawBufferPointer]? {
        guard length > 0 else { return nil }
        let ranges = try cursor.take(length)
        guard ranges.count <= async.maxSegments else { return nil }
        do { return try memory.lastingHostBuffers(ranges, for: access) } catch {
            throw VirtqueueError.memory("\(error)")
        }
    }

    /// DISCARD (`discard`) or WRITE_ZEROES: reads every segment, checks them
    /// all, then zeroes each range (see the type's documentation).
    private func zero(discard: Bool, from readable: inout BlockSegmentCursor, memory: GuestMemoryAccess,
                      statistics: inout Statistics) throws -> UInt8 {
        let length = readable.remaining
        guard !readOnly, length > 0, length % Self.segmentSize == 0,
              length / Self.segmentSize <= UInt64(Self.maxSegments) else {
            statistics.invalidRequests += 1
            return Status.ioError
        }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        try bytes.withUnsafeMutableBytes { try readable.read(into: $0, memory: memory) }
        var ranges: [(offset: UInt64, length: UInt64, unmap: Bool)] = []
        var invalid = false
        for at in stride(from: 0, to: bytes.count, by: Int(Self.segmentSize)) {
            // Each segment is 16 bytes inside `bytes`: the reads succeed.
            let sector = LE.u64(bytes, at) ?? 0
            let sectors = LE.u32(bytes, at + 8) ?? 0
            let flags = LE.u32(bytes, at + 12) ?? 0
            guard flags & ~Self.unmapFlag == 0, !(discard && flags & Self.unmapFlag != 0) else {
                statistics.unsupportedRequests += 1
                return Status.unsupported
            }
            let n = UInt64(sectors) * Self.sectorSize
            if sectors > Self.maxSegmentSectors { invalid = true }
            if let offset = byteOffset(sector: sector, length: n) {
                ranges.append((offset, n, discard || flags & Self.unmapFlag != 0))
            } else {
                invalid = true
            }
        }
        guard !invalid else {
            statistics.invalidRequests += 1
            return Status.ioError
        }
        for r in ranges where r.length > 0 {
            do {
                try backend.zero(at: r.offset, length: r.length, deallocate: r.unmap)
            } catch {
                statistics.backendErrors += 1
                return Status.ioError
            }
            statistics.bytesZeroed += r.length
        }
        if discard { statistics.discards += 1 } else { statistics.writeZeroes += 1 }
        return Status.ok
    }

    /// `sector * 512` when `[sector * 512, + length)` is a whole number of
    /// sectors inside the capacity, computed without overflow; nil otherwise.
    private func byteOffset(sector: UInt64, length: UInt64) -> UInt64? {
        guard length % Self.sectorSize == 0 else { return nil }
        let (start, o1) = sector.multipliedReportingOverflow(by: Self.sectorSize)
        let (end, o2) = start.addingReportingOverflow(length)
        // capacitySectors * 512 <= backend.capacity: no overflow.
        guard !o1, !o2, end <= capacitySectors * Self.sectorSize else { return nil }
        return start
    }

    /// A backend failure inside `withHostBuffers`, told apart from guest
    /// memory that cannot be reached.
    private struct BackendFailure: Error {}

    /// Runs `transfer` on the guest's buffers in place (`ranges`, for
    /// `access`); returns the status: OK, or IOERR when the backend failed.
    /// A buffer out of reach throws `VirtqueueError.memory`.
    private func inPlace(_ ranges: [GuestRange], _ access: DMAPermissions, memory: GuestMemoryAccess,
                         statistics: inout Statistics,
                         _ transfer: ([UnsafeMutableRawBufferPointer]) throws -> Void) throws -> UInt8 {
        do {
            try memory.withHostBuffers(ranges, for: access) { buffers in
                do { try transfer(buffers) } catch { throw BackendFailure() }
            }
            return Status.ok
        } catch is BackendFailure {
            statistics.backendErrors += 1
            return Status.ioError
        } catch {
            throw VirtqueueError.memory("\(error)")
        }
    }

    /// IN: backend -> guest, straight into the driver's buffers (`preadv`).
    private func readIn(offset: UInt64, length: UInt64, to writable: inout BlockSegmentCursor,
                        memory: GuestMemoryAccess, written: inout UInt64,
                        statistics: inout Statistics) throws -> UInt8 {
        let ranges = try writable.take(length)
        // offset + length is inside the capacity, checked by byteOffset.
        let status = try inPlace(ranges, .write, memory: memory, statistics: &statistics) {
            try backend.read(at: offset, into: $0)
        }
        guard status == Status.ok else { return status }
        written = length
        statistics.reads += 1
        statistics.bytesRead += length
        return Status.ok
    }

    /// OUT: guest -> backend, straight from the driver's buffers (`pwritev`).
    private func writeOut(offset: UInt64, length: UInt64, from readable: inout BlockSegmentCursor,
                          memory: GuestMemoryAccess, statistics: inout Statistics) throws -> UInt8 {
        let ranges = try readable.take(length)
        let status = try inPlace(ranges, .read, memory: memory, statistics: &statistics) {
            try backend.write(at: offset, from: $0.map { UnsafeRawBufferPointer($0) })
        }
        guard status == Status.ok else { return status }
        statistics.writes += 1
        statistics.bytesWritten += length
        return Status.ok
    }
}
