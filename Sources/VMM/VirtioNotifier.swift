import Foundation
import HostSys
import KVM
import Logging
import PCI
import Virtio

/// Virtio queue notifications through KVM ioeventfds: a guest write to a
/// queue's notify address signals an eventfd inside KVM (no exit to the VMM
/// on the vCPU thread), and one thread here turns ready eventfds into
/// `notifyQueue` calls. The ioeventfds follow BAR 0 when the guest moves or
/// stops decoding it. Accesses that don't match (other widths) still reach
/// the device through the ordinary MMIO exit.
final class VirtioNotifier: @unchecked Sendable {
    private struct Queue { let transport: VirtioPCIDevice; let index: Int; let event: EventFD; var address: UInt64? }

    private let vm: any VMInterruptRouting
    private let logger: Logger
    private let poller: EventPoller
    private let lock = NSLock()
    private var queues: [Queue] = []
    private var byDevice: [PCIAddress: [Int]] = [:]
    /// Notifications delivered through ioeventfds so far; read it through
    /// `deliveredCount`, which takes the lock.
    private var delivered = 0
    var queueCount: Int { lock.lock(); defer { lock.unlock() }; return queues.count }
    /// Notify writes are 16-bit queue indices (virtio 1.2 §4.1.5.2).
    static let notifyWidth: UInt32 = 2

    init(vm: any VMInterruptRouting, logger: Logger) throws {
        self.vm = vm
        self.logger = logger
        poller = try EventPoller()
    }

    /// Registers every queue of `transport` at its current BAR 0 address.
    func register(_ transport: VirtioPCIDevice, at address: PCIAddress, bar0: UInt64?) throws {
        lock.lock(); defer { lock.unlock() }
        var ids: [Int] = []
        var i = 0
        while let (bar, _) = transport.notifyAddress(forQueue: i), bar == VirtioPCIDevice.Layout.bar {
            let q = Queue(transport: transport, index: i, event: try EventFD(nonBlocking: true), address: nil)
            try poller.add(q.event.fd, token: UInt64(queues.count))
            ids.append(queues.count)
            queues.append(q)
            i += 1
        }
        byDevice[address] = ids
        for id in ids { move(id, toBar: bar0) }
    }

    /// The root bus reports a BAR move (nil = not decoding).
    func barMoved(device: PCIAddress, bar: Int, to newAddress: UInt64?) {
        guard bar == VirtioPCIDevice.Layout.bar else { return }
        lock.lock(); defer { lock.unlock() }
        for id in byDevice[device] ?? [] { move(id, toBar: newAddress) }
    }

    /// Moves queue `id`'s ioeventfd to `bar0 + notify offset`. Lock held.
    private func move(_ id: Int, toBar bar0: UInt64?) {
        var q = queues[id]
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
        queues[id] = q
    }

    /// Notifications delivered through ioeventfds so far.
    var deliveredCount: Int { lock.lock(); defer { lock.unlock() }; return delivered }

    /// The thread that delivers notifications until `latch` stops the VM.
    func start(latch: StopLatch) {
        let t = Thread { [self] in
            while !latch.isStopped {
                for token in poller.wait(timeoutMs: 200) {
                    lock.lock()
                    let q = Int(exactly: token).flatMap { $0 < queues.count ? queues[$0] : nil }
                    if q != nil { delivered += 1 }
                    lock.unlock()
                    guard let q else { continue }
                    q.event.drain()
                    q.transport.notifyQueue(q.index)
                }
            }
        }
        t.name = "virtio-notify"
        t.start()
    }
}
