import Dispatch
import FoundationEssentials
import HostSys
import KVM
import Logging
import PCI
import Synchronization
import Virtio

/// Virtio queue notifications through KVM ioeventfds, and the I/O thread
/// of each virtio device. A guest write to a queue's notify address signals
/// an eventfd inside KVM (no exit to the VMM on the vCPU thread); the
/// device's own `DeviceIOLoop` thread owns those eventfds and turns them
/// into `notifyQueue` calls. The ioeventfds follow BAR 0 when the guest
/// moves it or stops decoding it. Notify writes that still exit (another
/// width, an ioeventfd KVM refused, the PCI_CFG window) reach the transport
/// on the vCPU thread, which passes them to the same I/O thread.
final class VirtioNotifier: Sendable {
    private struct Queue { let transport: VirtioPCIDevice; let index: Int; let event: EventFD; var address: UInt64? }
    private struct State {
        var queues: [Queue] = []
        var byDevice: [PCIAddress: [Int]] = [:]
        var loops: [DeviceIOLoop] = []
    }

    private let vm: any VMInterruptRouting
    private let logger: Logger
    /// Held across each ioeventfd move, so a queue's registration in KVM
    /// always matches its recorded address.
    private let state = Mutex(State())
    var queueCount: Int { state.withLock { $0.queues.count } }
    /// The I/O threads, one per registered device, in registration order.
    var ioLoops: [DeviceIOLoop] { state.withLock { $0.loops } }
    /// Notify writes are 16-bit queue indices (virtio 1.2 §4.1.5.2).
    static let notifyWidth: UInt32 = 2
    /// How long `stop` waits for all I/O threads together. A loop ends when
    /// the handler it is in returns; only a device stuck in a host call (a
    /// disk image on a server that stopped answering) takes longer.
    static let stopTimeoutSeconds = 2.0

    init(vm: any VMInterruptRouting, logger: Logger) {
        self.vm = vm
        self.logger = logger
    }

    /// Registers every queue of `transport` at its current BAR 0 address,
    /// on a new I/O thread named `thread` (not started until `start`), to
    /// which the transport also routes its MMIO notify writes. Returns the
    /// thread's loop, so the device can watch other descriptors there. The
    /// loop does not watch the eventfds of the queues in `kernelQueues`: a
    /// kernel data path (vhost) reads them (`event(device:queue:)`).
    @discardableResult
    func register(_ transport: VirtioPCIDevice, at address: PCIAddress, bar0: UInt64?, thread: String,
                  kernelQueues: Range<Int> = 0..<0) throws -> DeviceIOLoop {
        let loop = try DeviceIOLoop(name: thread) { [weak transport] in transport?.notifyQueue($0) }
        try state.withLock { s in
            var ids: [Int] = []
            var i = 0
            while let (bar, _) = transport.notifyAddress(forQueue: i), bar == VirtioPCIDevice.Layout.bar {
                let q = Queue(transport: transport, index: i, event: try EventFD(nonBlocking: true), address: nil)
                if !kernelQueues.contains(i) { try loop.addQueue(i, event: q.event) }
                ids.append(s.queues.count)
                s.queues.append(q)
                i += 1
            }
            transport.routeNotifyWrites { loop.notifyByMMIO($0) }
            s.loops.append(loop)
            s.byDevice[address] = ids
            for id in ids { move(id, toBar: bar0, in: &s) }
        }
        return loop
    }

    /// The eventfd of queue `queue` of the device at `device` (tests signal
    /// it as KVM would).
    func event(device: PCIAddress, queue: Int) -> EventFD? {
        state.withLock { s in
            (s.byDevice[device] ?? []).map { s.queues[$0] }.first { $0.index == queue }?.event
        }
    }

    /// The root bus reports a BAR move (nil = not decoding).
    func barMoved(device: PCIAddress, bar: Int, to newAddress: UInt64?) {
        guard bar == VirtioPCIDevice.Layout.bar else { return }
        state.withLock { s in
            for id in s.byDevice[device] ?? [] { move(id, toBar: newAddress, in: &s) }
        }
    }

    /// Moves queue `id`'s ioeventfd to `bar0 + notify offset` (`s` is the
    /// locked state).
    private func move(_ id: Int, toBar bar0: UInt64?, in s: inout State) {
        var q = s.queues[id]
        guard let (_, offset) = q.transport.notifyAddress(forQueue: q.index) else { return }
        let new = bar0.flatMap { $0.addingReportingOverflow(offset).overflow ? nil : $0 + offset }
        guard new != q.address else { return }
        if let old = q.address {
            try? vm.unregisterIOEventFD(q.event, address: old, length: Self.notifyWidth)
        }
        q.address = nil
        if let a = new {
            do {
                try vm.registerIOEventFD(q.event, address: a, length: Self.notifyWidth)
                q.address = a
            } catch {
                logger.warning("ioeventfd for queue \(q.index) at 0x\(String(a, radix: 16)): \(error); notifications take the MMIO exit")
            }
        }
        s.queues[id] = q
    }

    /// Notifications delivered through ioeventfds so far, over all devices.
    var deliveredCount: Int { ioLoops.reduce(0) { $0 + $1.ioeventfdNotifications } }

    /// Starts every device's I/O thread.
    func start() {
        for loop in ioLoops { loop.start() }
    }

    /// Stops every I/O thread and joins them, waiting at most `timeout`
    /// seconds for all of them together; returns the names of those still
    /// running then (stuck in their device's I/O), which the process exit
    /// ends.
    func stop(timeout: Double = VirtioNotifier.stopTimeoutSeconds) -> [String] {
        let all = ioLoops
        for loop in all { loop.stop() }
        let deadline = DispatchTime.now() + timeout
        return all.filter { !$0.join(until: deadline) }.map(\.name)
    }
}
