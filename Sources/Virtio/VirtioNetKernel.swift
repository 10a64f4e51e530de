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

/// virtio network device (virtio 1.2 §5.1), one queue pair, whose queues a
/// `NetKernelDataPath` serves: the VMM never touches the frames. It offers
/// VIRTIO_NET_F_MAC and _STATUS as `VirtioNet` does, plus what the data path
/// serves (in the VMM: MRG_RXBUF, CSUM, GUEST_CSUM, HOST_TSO4/6 and
/// GUEST_TSO4/6), which the guest negotiates and the VMM sets on the TAP.
///
/// At DRIVER_OK the rings' guest addresses become host addresses through
/// `GuestMemoryAccess.lastingHostBuffers` (guest RAM; memory that cannot
/// lend its pages, as behind a vIOMMU, fails the activation: the VMM uses
/// `VirtioNet` for such a NIC). When the data path wants the driver
/// interrupted (its call eventfd fired, in the VMM), `usedBuffers(queue:)`
/// signals that queue's vector.
public final class VirtioNetKernel: VirtioDevice {
    private struct State {
        var interrupt: VirtioInterrupt?
        var started = false
        var starts = 0
    }

    public let mac: MACAddress
    private let dataPath: NetKernelDataPath
    private let queueSize: UInt16
    private let state = Mutex(State())

    public init(dataPath: NetKernelDataPath, mac: MACAddress, queueSize: UInt16 = VirtioNet.defaultQueueSize) {
        self.dataPath = dataPath
        self.mac = mac
        self.queueSize = queueSize
    }

    /// §5.1.3 offload and buffer feature bits (masks).
    public enum Feature {
        public static let checksum: UInt64 = 1 << 0        // VIRTIO_NET_F_CSUM
        public static let guestChecksum: UInt64 = 1 << 1   // VIRTIO_NET_F_GUEST_CSUM
        public static let guestTSO4: UInt64 = 1 << 7       // VIRTIO_NET_F_GUEST_TSO4
        public static let guestTSO6: UInt64 = 1 << 8       // VIRTIO_NET_F_GUEST_TSO6
        public static let hostTSO4: UInt64 = 1 << 11       // VIRTIO_NET_F_HOST_TSO4
        public static let hostTSO6: UInt64 = 1 << 12       // VIRTIO_NET_F_HOST_TSO6
        public static let mergeableRxBuffers: UInt64 = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF
    }

    public var deviceType: UInt16 { VirtioNet.deviceTypeID }
    public var deviceFeatures: UInt64 { VirtioNet.Feature.mac | VirtioNet.Feature.status | dataPath.offeredFeatures }
    public var queueMaxSizes: [UInt16] { [queueSize, queueSize] }
    public var configSize: Int { VirtioNet.ConfigOffset.size }

    /// The MAC and a link that is always up.
    public func readConfig(offset: Int, data: UnsafeMutableRawBufferPointer) {
        copyConfig(VirtioNet.configImage(mac: mac, linkUp: true), offset: offset, into: data)
    }

    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {}

    /// Hands the rings to the data path. The driver must have enabled both
    /// queues; a ring that guest memory cannot lend is refused.
    public func activate(memory: GuestMemoryAccess, features: UInt64, queues: [SplitVirtqueue],
                         interrupt: VirtioInterrupt) throws {
        guard queues.count == 2 else { throw VirtqueueError.device("network device needs exactly 2 queues") }
        var rings: [NetKernelRing] = []
        for (i, q) in queues.enumerated() {
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
            s.interrupt = interrupt
            s.started = true
            s.starts += 1
        }
    }

    public func reset() {
        state.withLock { s in
            if s.started { dataPath.stop() }
            s.started = false
            s.interrupt = nil
        }
    }

    public func queueNotified(_ index: Int) {
        guard index == VirtioNet.receiveQueue || index == VirtioNet.transmitQueue else { return }
        if state.withLock({ $0.started }) { dataPath.kick(queue: index) }
    }

    /// The data path asks for a used buffer notification of `queue` (it has
    /// already applied the driver's suppression, EVENT_IDX or the flag).
    public func usedBuffers(queue: Int) {
        state.withLock { s in
            guard s.started, queue >= 0, queue < 2 else { return }
            s.interrupt?.signalUsedQueue(queue)
        }
    }

    /// Times the data path was started (one per DRIVER_OK).
    public var starts: Int { state.withLock { $0.starts } }
}
