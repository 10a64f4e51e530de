import Bits
import GuestMemory
import Synchronization

/// Where a kernel data path finds one of a virtio-net device's rings: host
/// addresses of the guest's descriptor table, available and used rings.
public struct NetKernelRing: Equatable, Sendable {
    public let index: Int
    public let size: UInt16
    /// The next available index to take (0 for a fresh queue).
    public let nextAvailable: UInt16
    public let descriptors: UInt64
    public let available: UInt64
    public let used: UInt64

    public init(index: Int, size: UInt16, nextAvailable: UInt16, descriptors: UInt64, available: UInt64, used: UInt64) {
        self.index = index
        self.size = size
        self.nextAvailable = nextAvailable
        self.descriptors = descriptors
        self.available = available
        self.used = used
    }
}

/// A host kernel data path that serves a virtio-net device's queues itself
/// (vhost-net in the VMM): it reads and writes the rings and buffers in
/// guest RAM and moves the frames to and from the host's network. The device
/// model keeps the configuration and feature negotiation.
public protocol NetKernelDataPath: AnyObject, Sendable {
    /// Device feature bits (§5.1.3) the data path serves beyond MAC and
    /// STATUS: mergeable receive buffers, checksum and segmentation offloads.
    var offeredFeatures: UInt64 { get }
    /// Starts serving `rings` (receive 0, transmit 1) with the negotiated
    /// `features`. Throwing leaves the data path stopped.
    func start(features: UInt64, rings: [NetKernelRing]) throws
    /// Stops using the rings (the driver reset the device).
    func stop()
    /// A notification of queue `index` that reached the VMM itself (an MMIO
    /// exit rather than the eventfd the kernel watches): passed on.
    func kick(queue index: Int)
}

/// virtio network device (virtio 1.2 §5.1) whose data queues a
/// `NetKernelDataPath` serves: the VMM never touches the frames. It offers
/// VIRTIO_NET_F_MAC and _STATUS as `VirtioNet` does, plus what the data path
/// serves (in the VMM: MRG_RXBUF, CSUM, GUEST_CSUM, HOST_TSO4/6 and
/// GUEST_TSO4/6), which the guest negotiates and the VMM sets on the TAP.
///
/// With `queuePairs` > 1 it also offers VIRTIO_NET_F_MQ with
/// `max_virtqueue_pairs` and the control queue (VIRTIO_NET_F_CTRL_VQ) that
/// MQ needs: the queues are receiveq1, transmitq1, ..., receiveqN,
/// transmitqN, then controlq (§5.1.2). The device itself serves the control
/// queue: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET with 1 to N pairs is acknowledged
/// (VIRTIO_NET_OK; every pair stays served, the guest just spreads its
/// traffic over the ones it chose), anything else, or a pair count out of
/// range, gets VIRTIO_NET_ERR (§5.1.6.5). A command without its 2-byte header
/// or ack byte is a guest error (DEVICE_NEEDS_RESET).
///
/// At DRIVER_OK the data rings' guest addresses become host addresses
/// through `GuestMemoryAccess.lastingHostBuffers` (guest RAM; memory that
/// cannot lend its pages, as behind a vIOMMU, fails the activation: the VMM
/// uses `VirtioNet` for such a NIC). When the data path wants the driver
/// interrupted (its call eventfd fired, in the VMM), `usedBuffers(queue:)`
/// signals that queue's vector.
public final class VirtioNetKernel: VirtioDevice {
    private struct State {
        var memory: GuestMemoryAccess?
        var interrupt: VirtioInterrupt?
        var control: SplitVirtqueue?
        var controlBroken = false
        var started = false
        var starts = 0
        /// Queue pairs the driver asked for (VQ_PAIRS_SET); 1 until then.
        var pairsInUse = 1
    }

    public let mac: MACAddress
    public let queuePairs: Int
    private let dataPath: NetKernelDataPath
    private let queueSize: UInt16
    private let state = Mutex(State())

    /// Most queue pairs offered (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX is 0x8000;
    /// one per vCPU is what the VMM offers).
    public static let maxQueuePairs = 64

    public init(dataPath: NetKernelDataPath, mac: MACAddress, queuePairs: Int = 1,
                queueSize: UInt16 = VirtioNet.defaultQueueSize) {
        self.dataPath = dataPath
        self.mac = mac
        self.queuePairs = min(max(queuePairs, 1), Self.maxQueuePairs)
        self.queueSize = queueSize
    }

    /// §5.1.3 offload, buffer and queue feature bits (masks).
    public enum Feature {
        public static let checksum: UInt64 = 1 << 0        // VIRTIO_NET_F_CSUM
        public static let guestChecksum: UInt64 = 1 << 1   // VIRTIO_NET_F_GUEST_CSUM
        public static let guestTSO4: UInt64 = 1 << 7       // VIRTIO_NET_F_GUEST_TSO4
        public static let guestTSO6: UInt64 = 1 << 8       // VIRTIO_NET_F_GUEST_TSO6
        public static let hostTSO4: UInt64 = 1 << 11       // VIRTIO_NET_F_HOST_TSO4
        public static let hostTSO6: UInt64 = 1 << 12       // VIRTIO_NET_F_HOST_TSO6
        public static let mergeableRxBuffers: UInt64 = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF
        public static let controlQueue: UInt64 = 1 << 17   // VIRTIO_NET_F_CTRL_VQ
        public static let multiqueue: UInt64 = 1 << 22     // VIRTIO_NET_F_MQ
    }

    /// §5.1.6.5 control commands and acks.
    public enum Control {
        public static let classMQ: UInt8 = 4      // VIRTIO_NET_CTRL_MQ
        public static let pairsSet: UInt8 = 0     // VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
        public static let ok: UInt8 = 0           // VIRTIO_NET_OK
        public static let error: UInt8 = 1       // VIRTIO_NET_ERR
    }

    /// Data queues: 2 per pair.
    public var dataQueueCount: Int { 2 * queuePairs }
    /// The control queue's index, when there is one (after the data queues).
    public var controlQueue: Int? { queuePairs > 1 ? dataQueueCount : nil }

    public var deviceType: UInt16 { VirtioNet.deviceTypeID }
    public var deviceFeatures: UInt64 {
        VirtioNet.Feature.mac | VirtioNet.Feature.status | dataPath.offeredFeatures
            | (queuePairs > 1 ? Feature.multiqueue | Feature.controlQueue : 0)
    }
    public var queueMaxSizes: [UInt16] {
        Array(repeating: queueSize, count: dataQueueCount) + (controlQueue == nil ? [] : [Self.controlQueueSize])
    }
    /// Commands are small and synchronous: a short control queue does.
    public static let controlQueueSize: UInt16 = 64
    /// With MQ, `max_virtqueue_pairs` (le16) follows `status`.
    public var configSize: Int { queuePairs > 1 ? VirtioNet.ConfigOffset.size + 2 : VirtioNet.ConfigOffset.size }

    /// The MAC, a link that is always up and, with MQ, the queue pairs.
    public func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        var image = VirtioNet.configImage(mac: mac, linkUp: true)
        if queuePairs > 1 { image += LE.bytes(UInt64(queuePairs), count: 2) }
        copyConfig(image, offset: offset, into: data)
    }

    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {}

    /// Hands the data rings to the data path. The driver must have enabled
    /// every data queue; a ring that guest memory cannot lend is refused.
    /// Serves control commands posted before DRIVER_OK.
    public func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue],
                         interrupt: VirtioInterrupt) throws {
        guard queues.count == queueMaxSizes.count else {
            throw VirtqueueError.device("network device has \(queueMaxSizes.count) queues, got \(queues.count)")
        }
        var rings: [NetKernelRing] = []
        for (i, q) in queues.prefix(dataQueueCount).enumerated() {
            guard q.isEnabled else { throw VirtqueueError.device("network queue \(i) is not enabled") }
            let n = UInt64(q.size)
            // §2.7: descriptor table 16 * n, available ring 6 + 2n, used ring
            // 6 + 8n bytes (with the event index fields).
            let ranges = [GuestRange(q.descriptorTable, 16 * n), GuestRange(q.availRing, 6 + 2 * n),
                          GuestRange(q.usedRing, 6 + 8 * n)]
            let buffers: [UnsafeMutableRawBufferPointer]?
            do { buffers = try memory.lastingHostBuffers(ranges, for: .write) } catch {
                throw VirtqueueError.memory("network queue \(i) rings: \(error)")
            }
            guard let b = buffers, b.count == 3 else {
                throw VirtqueueError.device("network queue \(i): guest memory cannot lend its rings to the kernel data path")
            }
            let address = { (p: UnsafeMutableRawBufferPointer) in UInt64(UInt(bitPattern: p.baseAddress)) }
            rings.append(NetKernelRing(index: i, size: q.size, nextAvailable: q.nextAvail, descriptors: address(b[0]),
                                       available: address(b[1]), used: address(b[2])))
        }
        try state.withLock { s in
            if s.started { dataPath.stop() }
            s.started = false
            do { try dataPath.start(features: features, rings: rings) } catch {
                throw VirtqueueError.device("kernel data path: \(error)")
            }
            s.memory = memory
            s.interrupt = interrupt
            s.control = controlQueue.map { queues[$0] }.flatMap { $0.isEnabled ? $0 : nil }
            s.controlBroken = false
            s.pairsInUse = 1
            s.started = true
            s.starts += 1
            serveControl(&s)
        }
    }

    public func reset() {
        state.withLock { s in
            if s.started { dataPath.stop() }
            s = State(starts: s.starts)
        }
    }

    public func queueNotified(_ index: Int) {
        state.withLock { s in
            guard s.started else { return }
            if index == controlQueue {
                serveControl(&s)
            } else if index >= 0, index < dataQueueCount {
                dataPath.kick(queue: index)
            }
        }
    }

    /// The data path asks for a used buffer notification of data queue
    /// `queue` (it has already applied the driver's suppression, EVENT_IDX
    /// or the flag).
    public func usedBuffers(queue: Int) {
        state.withLock { s in
            guard s.started, queue >= 0, queue < dataQueueCount else { return }
            s.interrupt?.signalUsedQueue(queue)
        }
    }

    /// Times the data path was started (one per DRIVER_OK).
    public var starts: Int { state.withLock { $0.starts } }
    /// Queue pairs the driver chose (VQ_PAIRS_SET), 1 until it does.
    public var pairsInUse: Int { state.withLock { $0.pairsInUse } }

    /// Answers every command on the control queue (see the type's
    /// documentation), then notifies once if the driver wants it.
    private func serveControl(_ s: inout State) {
        guard var q = s.control, !s.controlBroken, let memory = s.memory, let index = controlQueue else { return }
        do {
            var answered = false
            while let chain = try q.popAvailable(memory: memory) {
                try chain.requireReadableBeforeWritable()
                let (r, w) = chain.readableThenWritable
                var readable = BlockSegmentCursor(r)
                var writable = BlockSegmentCursor(w)
                guard readable.remaining >= 2, writable.remaining >= 1 else {
                    throw VirtqueueError.device("network control command at head \(chain.head): "
                                                + "\(readable.remaining) readable bytes (a 2-byte header is needed) "
                                                + "and \(writable.remaining) writable (an ack byte is needed), §5.1.6.5")
                }
                var header = [UInt8](repeating: 0, count: 2)
                try header.withUnsafeMutableBytes { try readable.read(into: $0, memory: memory) }
                var ack = Control.error
                if header[0] == Control.classMQ, header[1] == Control.pairsSet, readable.remaining >= 2 {
                    var n = [UInt8](repeating: 0, count: 2)
                    try n.withUnsafeMutableBytes { try readable.read(into: $0, memory: memory) }
                    let pairs = Int(n[0]) | Int(n[1]) << 8
                    if pairs >= 1, pairs <= queuePairs {
                        s.pairsInUse = pairs
                        ack = Control.ok
                    }
                }
                writable.skip(writable.remaining - 1)
                try [ack].withUnsafeBytes { try writable.write($0, memory: memory) }
                try q.addUsed(head: chain.head, len: 1, memory: memory)
                answered = true
            }
            if answered, try q.needsNotification(memory: memory) { s.interrupt?.signalUsedQueue(index) }
        } catch {
            s.controlBroken = true
            s.interrupt?.deviceNeedsReset(after: error)
        }
        s.control = q
    }
}
