import Bits
import GuestMemory
import Synchronization

/// virtio network device (virtio 1.2 §5.1) with one queue pair and no
/// control queue: receiveq 0 carries frames to the guest, transmitq 1 frames
/// from it (§5.1.2). Offers VIRTIO_NET_F_MAC (the MAC is in the
/// configuration) and VIRTIO_NET_F_STATUS (link state in the configuration,
/// up unless `setLinkUp(false)`); no offloads, so the guest computes
/// checksums and sends frames no larger than its MTU.
///
/// Every buffer starts with the 12-byte `struct virtio_net_hdr` (§5.1.6; with
/// VIRTIO_F_VERSION_1, which the transport requires, `num_buffers` is always
/// present). The backend sees bare Ethernet frames: the device strips the
/// header on transmit and writes one on receive (all zero but
/// `num_buffers` = 1, §5.1.6.4, as VIRTIO_NET_F_MRG_RXBUF is not offered).
///
/// Transmit (on notification): a chain shorter than header + 14-byte
/// Ethernet header, or longer than header + `maxFrameSize`, is dropped and
/// counted, never read whole; a backend error is counted; the chain is
/// returned (used length 0) in every case.
///
/// Receive (`receive(frame:)`, from the NIC's I/O thread in the VMM): the frame goes
/// into the next receive chain with its header. A chain too small for it
/// gets the frame dropped and is returned with used length 0 (the driver
/// counts a length error and reposts; Linux posts 1526-byte buffers, what
/// §5.1.6.3.1 asks without offloads). With no chain available the frame
/// waits in a backlog of at most `rxBacklogLimit` frames, delivered in order
/// when the driver posts buffers; when the backlog is full, or the device is
/// not running, the frame is dropped and counted.
///
/// A chain with a buffer in the wrong direction (§5.1.6.2, §5.1.6.3: transmit
/// buffers device-readable, receive buffers device-writable) is a guest
/// error: DEVICE_NEEDS_RESET, as for the other devices.
public final class VirtioNet: VirtioDevice {
    /// §5.1.1 "Device ID".
    public static let deviceTypeID: UInt16 = 1
    /// §5.1.2 "Virtqueues": receiveq1, transmitq1.
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    public static let defaultQueueSize: UInt16 = 256
    /// §5.1.6 `struct virtio_net_hdr`: u8 flags, u8 gso_type, le16 hdr_len,
    /// le16 gso_size, le16 csum_start, le16 csum_offset, le16 num_buffers.
    public static let headerSize = 12
    static let numBuffersOffset = 10
    /// Largest frame carried either way (64 KiB).
    public static let maxFrameSize = 65536
    /// ETH_HLEN (linux/if_ether.h): a transmitted frame shorter than an
    /// Ethernet header is dropped as malformed.
    public static let minFrameSize = 14
    public static let defaultRxBacklogLimit = 32

    /// §5.1.3 "Feature bits" (bit numbers from the spec, as masks).
    public enum Feature {
        public static let mac: UInt64 = 1 << 5     // VIRTIO_NET_F_MAC
        public static let status: UInt64 = 1 << 16 // VIRTIO_NET_F_STATUS
    }

    /// §5.1.4 `struct virtio_net_config`: `u8 mac[6]; le16 status;`. The
    /// configuration ends there: `max_virtqueue_pairs` and later fields
    /// exist only with features not offered (VIRTIO_NET_F_MQ, _MTU, ...).
    public enum ConfigOffset {
        public static let mac = 0
        public static let status = 6
        public static let size = 8
    }

    /// §5.1.4 `status` bits.
    public static let statusLinkUp: UInt16 = 1 // VIRTIO_NET_S_LINK_UP

    /// Counters, for tests and the VMM's statistics.
    public struct Statistics: Equatable, Sendable {
        public var txFrames: UInt64 = 0
        public var txBytes: UInt64 = 0
        /// Transmit chains longer than header + `maxFrameSize`.
        public var txDroppedOversize: UInt64 = 0
        /// Transmit chains shorter than header + Ethernet header.
        public var txDroppedMalformed: UInt64 = 0
        /// Frames the backend refused.
        public var txErrors: UInt64 = 0
        public var rxFrames: UInt64 = 0
        public var rxBytes: UInt64 = 0
        /// Frames dropped because no receive buffer came in time (backlog
        /// full) or the device was not running.
        public var rxDroppedNoBuffer: UInt64 = 0
        /// Frames larger than `maxFrameSize`, or empty.
        public var rxDroppedOversize: UInt64 = 0
        /// Frames larger than the receive chain they were given.
        public var rxDroppedBufferTooSmall: UInt64 = 0
        /// Transmit and receive buffers the device could not reach (behind
        /// a vIOMMU: unmapped, or mapped without the access): the frame is
        /// dropped, the buffer returned with length 0, the device goes on.
        public var dmaFailures: UInt64 = 0
        public init() {}
    }

    private struct Active {
        let memory: GuestMemoryAccess
        var queues: [SplitVirtqueue]
        let interrupt: VirtioInterrupt
        let features: UInt64
        var broken = false
    }

    private struct State {
        var active: Active?
        var linkUp = true
        var backlog: [[UInt8]] = []
        var statistics = Statistics()
    }

    private let backend: NetBackend
    public let mac: MACAddress
    private let queueSize: UInt16
    public let rxBacklogLimit: Int
    private let state = Mutex(State())

    public init(backend: NetBackend, mac: MACAddress, queueSize: UInt16 = VirtioNet.defaultQueueSize,
                rxBacklogLimit: Int = VirtioNet.defaultRxBacklogLimit) {
        self.backend = backend
        self.mac = mac
        self.queueSize = queueSize
        self.rxBacklogLimit = max(0, rxBacklogLimit)
    }

    public var deviceType: UInt16 { Self.deviceTypeID }
    public var deviceFeatures: UInt64 { Feature.mac | Feature.status }
    public var queueMaxSizes: [UInt16] { [queueSize, queueSize] }
    public var configSize: Int { ConfigOffset.size }

    public func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        copyConfig(Self.configImage(mac: mac, linkUp: state.withLock { $0.linkUp }), offset: offset, into: data)
    }

    /// §5.1.4 `struct virtio_net_config` as bytes: the MAC, then `status`.
    public static func configImage(mac: MACAddress, linkUp: Bool) -> [UInt8] {
        mac.bytes + LE.bytes(UInt64(linkUp ? statusLinkUp : 0), count: 2)
    }

    /// The configuration is driver-read-only here (`mac` is writable only
    /// with legacy drivers or VIRTIO_NET_F_CTRL_MAC_ADDR): writes are ignored.
    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {}

    /// Also sends frames posted before DRIVER_OK.
    public func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue],
                         interrupt: VirtioInterrupt) throws {
        guard queues.count == 2 else { throw VirtqueueError.device("network device needs exactly 2 queues") }
        state.withLock { s in
            s.active = Active(memory: memory, queues: queues, interrupt: interrupt, features: features)
            process(&s)
        }
    }

    /// Drops the queues and the receive backlog (frames for the old driver).
    public func reset() {
        state.withLock { s in
            s.active = nil
            s.backlog.removeAll()
        }
    }

    public func queueNotified(_ index: Int) {
        guard index == Self.receiveQueue || index == Self.transmitQueue else { return }
        state.withLock { process(&$0) }
    }

    /// Offers one frame from the host to the guest. Returns false when no
    /// receive buffer was available: the frame then waits in the backlog, or
    /// is dropped when the backlog is full or the device is not running
    /// (either way it must not be offered again). Returns true when the frame
    /// was written into a receive buffer, or dropped for its size (see the
    /// type's documentation).
    @discardableResult
    public func receive(frame: [UInt8]) -> Bool {
        state.withLock { s in
            guard !frame.isEmpty, frame.count <= Self.maxFrameSize else {
                s.statistics.rxDroppedOversize += 1
                return true
            }
            guard let active = s.active, !active.broken else {
                s.statistics.rxDroppedNoBuffer += 1
                return false
            }
            // Behind any frames already waiting, so the order is kept.
            s.backlog.append(frame)
            deliverBacklog(&s)
            if s.backlog.isEmpty { return true }
            // Not delivered: it is the backlog's last entry.
            if s.backlog.count > rxBacklogLimit {
                s.backlog.removeLast()
                s.statistics.rxDroppedNoBuffer += 1
            }
            return false
        }
    }

    /// Sets the link state; with VIRTIO_NET_F_STATUS negotiated the driver
    /// gets a configuration change notification (§5.1.4).
    public func setLinkUp(_ up: Bool) {
        state.withLock { s in
            guard s.linkUp != up else { return }
            s.linkUp = up
            if let a = s.active, !a.broken, a.features & Feature.status != 0 {
                a.interrupt.signalConfigChange()
            }
        }
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Frames waiting for receive buffers.
    public var backlogCount: Int { state.withLock { $0.backlog.count } }

    // MARK: - Queues

    private func process(_ s: inout State) {
        transmit(&s)
        deliverBacklog(&s)
    }

    /// Runs `body` on the active queues; a thrown error breaks the device.
    private func withActive(_ s: inout State, _ body: (inout Active, inout State) throws -> Void) {
        guard var a = s.active, !a.broken else { return }
        do {
            try body(&a, &s)
        } catch {
            a.broken = true
            a.interrupt.deviceNeedsReset(after: error)
        }
        s.active = a
    }

    private func transmit(_ s: inout State) {
        withActive(&s) { a, s in
            let q = Self.transmitQueue
            var completed = false
            while let chain = try a.queues[q].popAvailable(memory: a.memory) {
                try chain.requireReadableOnly()
                let total = chain.readableLength
                if total > UInt64(Self.headerSize + Self.maxFrameSize) {
                    s.statistics.txDroppedOversize += 1
                } else if total < UInt64(Self.headerSize + Self.minFrameSize) {
                    s.statistics.txDroppedMalformed += 1
                } else {
                    do {
                        let bytes = try chain.readReadable(memory: a.memory, limit: Int(total))
                        let frame = Array(bytes[Self.headerSize...])
                        do {
                            try backend.send(frame: frame)
                            s.statistics.txFrames += 1
                            s.statistics.txBytes += UInt64(frame.count)
                        } catch {
                            s.statistics.txErrors += 1
                        }
                    } catch VirtqueueError.memory {
                        s.statistics.dmaFailures += 1
                    }
                }
                try a.queues[q].addUsed(head: chain.head, len: 0, memory: a.memory)
                completed = true
            }
            if completed, try a.queues[q].needsNotification(memory: a.memory) {
                a.interrupt.signalUsedQueue(q)
            }
        }
    }

    /// Moves backlog frames into receive chains, in order, while there are
    /// chains.
    private func deliverBacklog(_ s: inout State) {
        guard !s.backlog.isEmpty else { return }
        withActive(&s) { a, s in
            let q = Self.receiveQueue
            var completed = false
            var delivered = 0
            defer { s.backlog.removeFirst(delivered) }
            while delivered < s.backlog.count, let chain = try a.queues[q].popAvailable(memory: a.memory) {
                try chain.requireWritableOnly()
                let frame = s.backlog[delivered]
                var used: UInt32 = 0
                if chain.writableLength < UInt64(Self.headerSize + frame.count) {
                    s.statistics.rxDroppedBufferTooSmall += 1
                } else {
                    var header = [UInt8](repeating: 0, count: Self.headerSize)
                    header[Self.numBuffersOffset] = 1 // le16 num_buffers = 1 (§5.1.6.4)
                    do {
                        let written = try chain.writeWritable(header + frame, memory: a.memory)
                        used = UInt32(clamping: written)
                        s.statistics.rxFrames += 1
                        s.statistics.rxBytes += UInt64(frame.count)
                    } catch VirtqueueError.memory {
                        s.statistics.dmaFailures += 1
                    }
                }
                delivered += 1
                try a.queues[q].addUsed(head: chain.head, len: used, memory: a.memory)
                completed = true
            }
            if completed, try a.queues[q].needsNotification(memory: a.memory) {
                a.interrupt.signalUsedQueue(q)
            }
        }
    }
}
