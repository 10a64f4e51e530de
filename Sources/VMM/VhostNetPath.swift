import HostSys
import Logging
import Synchronization
import Virtio

/// vhost-net as a NIC's kernel data path: the glue between `VirtioNetKernel`
/// (which knows the rings) and HostSys's `VhostNet` and `TapDevice` (which
/// know the ioctls). One vhost-net instance and one TAP queue per queue
/// pair: data ring `r` is queue `r % 2` of pair `r / 2`.
///
/// The guest's notifications reach vhost straight from KVM: each queue's
/// ioeventfd (owned by `VirtioNotifier`, which keeps it at the queue's
/// notify address) is vhost's kick eventfd, and the device's I/O thread does
/// not watch it. Interrupts go back the same way: a queue with an MSI-X
/// vector at DRIVER_OK gets that vector's irqfd (`KVMMSIRouter`) as its call
/// eventfd, so KVM injects the message (or, while the guest masks the
/// vector, keeps the count until the unmask). Without MSI-X, vhost signals
/// one of `callEvents`, which the NIC's I/O thread watches and turns into
/// the transport's INTx and ISR. A vector the driver moves after DRIVER_OK
/// is not followed (Linux sets them before); the next reset and DRIVER_OK
/// pick it up.
final class VhostNetPath: NetKernelDataPath {
    private let vhosts: [VhostNet]
    private let taps: [TapDevice]
    private let memory: [(guest: UInt64, size: UInt64, host: UInt64)]
    private let logger: Logger
    private let name: String
    /// Set once the transport's queue eventfds exist (`useKicks`).
    private let kicks = Mutex<[EventFD]>([])
    /// The KVM irqfd eventfd of data queue `q`'s MSI-X vector, when it has
    /// one (`useIRQFDs`): vhost then interrupts the guest itself.
    private let irqfd = Mutex<(@Sendable (Int) -> EventFD?)?>(nil)
    /// Signalled by vhost, one per queue.
    let callEvents: [EventFD]

    /// Checksum, segmentation and buffer features this path serves: the
    /// TAP (with its vnet header) takes and gives frames with partial
    /// checksums and unsegmented TCP, and vhost merges receive buffers.
    static let offered = VirtioNetKernel.Feature.checksum | VirtioNetKernel.Feature.guestChecksum
        | VirtioNetKernel.Feature.guestTSO4 | VirtioNetKernel.Feature.guestTSO6
        | VirtioNetKernel.Feature.hostTSO4 | VirtioNetKernel.Feature.hostTSO6
        | VirtioNetKernel.Feature.mergeableRxBuffers
    var offeredFeatures: UInt64 { Self.offered }

    /// The ring and header features vhost itself acts on.
    static let vhostFeatures = VirtioSpec.Feature.version1 | VirtioSpec.Feature.eventIndex
        | VirtioSpec.Feature.indirectDescriptors | VirtioNetKernel.Feature.mergeableRxBuffers

    /// One vhost-net instance and one TAP queue (opened with a vnet header)
    /// per queue pair. `memory`: every RAM region of the guest (guest
    /// physical base, size, host address).
    init(vhosts: [VhostNet], taps: [TapDevice], memory: [(guest: UInt64, size: UInt64, host: UInt64)], name: String,
         logger: Logger) throws {
        precondition(vhosts.count == taps.count && !taps.isEmpty)
        self.vhosts = vhosts
        self.taps = taps
        self.memory = memory
        self.name = name
        self.logger = logger
        callEvents = try (0..<(VhostNet.queueCount * vhosts.count)).map { _ in try EventFD(nonBlocking: true) }
    }

    /// Data rings: 2 per pair.
    var ringCount: Int { VhostNet.queueCount * vhosts.count }

    /// The transport's data queue eventfds (KVM ioeventfds), in queue order.
    func useKicks(_ events: [EventFD]) { kicks.withLock { $0 = events } }

    /// How to find a data queue's MSI-X irqfd at start (nil: none, use the
    /// call eventfds).
    func useIRQFDs(_ lookup: @escaping @Sendable (Int) -> EventFD?) { irqfd.withLock { $0 = lookup } }

    func start(features: UInt64, rings: [NetKernelRing]) throws {
        let kickEvents = kicks.withLock { $0 }
        guard kickEvents.count == ringCount, rings.count == ringCount else {
            throw SysError(errno: 22, operation: "\(name): vhost-net needs \(ringCount) rings and queue eventfds, "
                           + "got \(rings.count) and \(kickEvents.count)")
        }
        // Each queue's call: its vector's irqfd, so KVM injects the MSI-X
        // message without the VMM; or, without MSI-X or a vector, an eventfd
        // the NIC's I/O thread turns into the transport's INTx/ISR.
        let lookup = irqfd.withLock { $0 }
        let calls = rings.map { r in lookup?(r.index) ?? callEvents[r.index] }
        let direct = zip(calls, callEvents).filter { $0 !== $1 }.count
        do {
            let f = VirtioNetKernel.Feature.self
            for (vhost, tap) in zip(vhosts, taps) {
                try vhost.setFeatures(features & Self.vhostFeatures)
                try vhost.setMemoryTable(memory)
                try tap.setOffload(checksum: features & f.guestChecksum != 0, tso4: features & f.guestTSO4 != 0,
                                   tso6: features & f.guestTSO6 != 0)
            }
            for r in rings {
                let vhost = vhosts[r.index / 2], q = r.index % 2
                try vhost.setRing(index: q, size: r.size, base: r.nextAvailable, descriptors: r.descriptors,
                                  available: r.available, used: r.used)
                try vhost.setKick(index: q, kickEvents[r.index])
                try vhost.setCall(index: q, calls[r.index])
                try vhost.setBackend(index: q, tap: taps[r.index / 2].fd)
            }
        } catch {
            stop()
            throw error
        }
        // Buffers the driver posted before DRIVER_OK: have vhost look now.
        for k in kickEvents { k.signal() }
        logger.info("\(name): vhost-net running \(vhosts.count) queue pair\(vhosts.count == 1 ? "" : "s"), \(direct) of \(calls.count) queues interrupting through KVM irqfds; the guest took \(Self.describe(features))")
    }

    /// The offload and buffer features in `features`, by their spec names.
    static func describe(_ features: UInt64) -> String {
        let f = VirtioNetKernel.Feature.self
        let names: [(UInt64, String)] = [(f.checksum, "CSUM"), (f.guestChecksum, "GUEST_CSUM"), (f.hostTSO4, "HOST_TSO4"),
                                         (f.hostTSO6, "HOST_TSO6"), (f.guestTSO4, "GUEST_TSO4"), (f.guestTSO6, "GUEST_TSO6"),
                                         (f.mergeableRxBuffers, "MRG_RXBUF"), (f.multiqueue, "MQ"),
                                         (VirtioSpec.Feature.eventIndex, "EVENT_IDX")]
        let taken = names.filter { features & $0.0 != 0 }.map(\.1)
        return taken.isEmpty ? "no offloads" : taken.joined(separator: " ")
    }

    func stop() {
        for (pair, vhost) in vhosts.enumerated() {
            for q in 0..<VhostNet.queueCount {
                do {
                    try vhost.setBackend(index: q, tap: nil)
                    try vhost.ringBase(index: q)
                } catch {
                    logger.warning("\(name): stopping vhost-net queue \(2 * pair + q): \(error)")
                }
            }
        }
    }

    func kick(queue index: Int) {
        let k = kicks.withLock { $0 }
        if index >= 0, index < k.count { k[index].signal() }
    }
}
