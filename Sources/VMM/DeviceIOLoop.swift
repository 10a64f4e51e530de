import Dispatch
import FoundationEssentials
import HostSys
import Synchronization

/// One device's I/O thread: an epoll loop over the device's queue eventfds
/// (KVM ioeventfds, see `VirtioNotifier`), any other descriptor the device
/// reads from (a TAP), and a wake eventfd for the notifications vCPUs pass
/// on (`notifyByMMIO`) and for shutdown.
///
/// Every call of `deliver` happens on this thread, one at a time, whether the
/// notification came through an ioeventfd or an MMIO exit; so a device's
/// notification handling never runs on two threads at once, and a device
/// whose handler is slow (virtio-blk's pwrite and fsync) delays only its own
/// queues. (The device still locks its state: its `activate`, `reset` and
/// host-side input such as `VirtioNet.receive` come from other threads.)
///
/// Shutdown: `stop()` sets a flag and signals the wake eventfd; the loop
/// looks at the flag before each handler, so it ends as soon as the handler
/// running now returns, and `join(until:)` waits for that with a deadline. A
/// handler stuck in the kernel cannot be interrupted: past the deadline the
/// caller gives up on the thread and says so.
final class DeviceIOLoop: Sendable {
    /// What a ready descriptor means.
    private enum Source {
        /// Queue `index` was notified: drain `event`, call `deliver(index)`.
        case queue(index: Int, event: EventFD)
        /// `fd` is readable: call `handler`, which returns false to stop
        /// watching `fd` (its error is the handler's to report).
        case readable(fd: FileDescriptor, handler: @Sendable () -> Bool)
    }

    private struct State {
        /// Indexed by token - 1; nil once a readable source is dropped.
        var sources: [Source?] = []
        /// Queues notified by MMIO and not yet delivered, in arrival order,
        /// each at most once (a notification says "look at the queue";
        /// two of them before the device looks mean the same).
        var forwarded: [Int] = []
        var started = false
        var stopping = false
        var ioeventfdNotifications = 0
    }

    /// The thread's name (`io-blk0`, `io-net0`, `io-console`, `io-rng`).
    let name: String
    private let deliver: @Sendable (Int) -> Void
    private let poller: EventPoller
    private let wake: EventFD
    private let state = Mutex(State())
    private let finished = DispatchSemaphore(value: 0)
    /// The wake eventfd's token; source i has token i + 1.
    private static let wakeToken: UInt64 = 0

    /// A loop named `name` that hands each queue notification to `deliver`
    /// (the transport's `notifyQueue`). No thread runs until `start()`.
    init(name: String, deliver: @escaping @Sendable (Int) -> Void) throws {
        self.name = name
        self.deliver = deliver
        poller = try EventPoller()
        wake = try EventFD(nonBlocking: true)
        try poller.add(wake.fd, token: Self.wakeToken)
    }

    /// Watches `event` (non-blocking) for notifications of queue `index`.
    func addQueue(_ index: Int, event: EventFD) throws {
        try add(.queue(index: index, event: event), fd: event.fd)
    }

    /// Calls `handler` on this thread whenever `fd` is readable, until it
    /// returns false.
    func addReadable(_ fd: FileDescriptor, handler: @escaping @Sendable () -> Bool) throws {
        try add(.readable(fd: fd, handler: handler), fd: fd)
    }

    private func add(_ source: Source, fd: FileDescriptor) throws {
        try state.withLock { s in
            try poller.add(fd, token: UInt64(s.sources.count) + 1)
            s.sources.append(source)
        }
    }

    /// A notification of queue `index` that reached the VMM as an MMIO exit
    /// (or through PCI_CFG) on a vCPU thread: queued for this thread, which
    /// delivers it; the vCPU goes back to the guest at once.
    func notifyByMMIO(_ index: Int) {
        let signal = state.withLock { s -> Bool in
            guard !s.forwarded.contains(index) else { return false }
            s.forwarded.append(index)
            // The loop drains `wake` before it takes the list: a non-empty
            // list already has a wake-up coming.
            return s.forwarded.count == 1
        }
        if signal { wake.signal() }
    }

    /// Notifications that arrived through queue eventfds so far (each
    /// wake-up of a queue's eventfd counts once).
    var ioeventfdNotifications: Int { state.withLock { $0.ioeventfdNotifications } }

    /// Starts the thread (once), named `name` for the OS (top, gdb, /proc)
    /// before the loop runs.
    func start() {
        let first = state.withLock { s -> Bool in
            defer { s.started = true }
            return !s.started
        }
        guard first else { return }
        _ = KickableThread(name: name) { [self] in
            // Never run a device's I/O outside the sandbox the run asked for.
            do { try Sandbox.enter(.io) } catch {
                StandardStreams.writeError("swiftvmm: error: \(name): \(error)\n")
                StandardStreams.exit(ExitStatus.vmmError)
            }
            run()
            finished.signal()
        }
    }

    /// Asks the loop to end after the handler it is running, if any.
    /// Notifications not yet delivered are dropped.
    func stop() {
        state.withLock { $0.stopping = true }
        wake.signal()
    }

    /// Waits until the thread has ended or `deadline` has passed; true if it
    /// ended (or never started).
    func join(until deadline: DispatchTime) -> Bool {
        guard state.withLock({ $0.started }) else { return true }
        guard finished.wait(timeout: deadline) == .success else { return false }
        finished.signal() // for the next join
        return true
    }

    private var stopping: Bool { state.withLock { $0.stopping } }

    private func run() {
        while !stopping {
            // No timeout: `stop()` wakes the loop.
            for token in poller.wait(timeoutMs: -1) {
                if stopping { return }
                handle(token)
            }
        }
    }

    private func handle(_ token: UInt64) {
        if token == Self.wakeToken {
            wake.drain()
            let queues = state.withLock { s -> [Int] in
                defer { s.forwarded = [] }
                return s.forwarded
            }
            for (n, q) in queues.enumerated() {
                if n > 0, stopping { return }
                deliver(q)
            }
            return
        }
        let i = Int(truncatingIfNeeded: token &- 1)
        let source = state.withLock { s -> Source? in
            guard i >= 0, i < s.sources.count, let source = s.sources[i] else { return nil }
            if case .queue = source { s.ioeventfdNotifications += 1 }
            return source
        }
        switch source {
        case let .queue(index, event)?:
            event.drain()
            deliver(index)
        case let .readable(fd, handler)?:
            if !handler() {
                poller.remove(fd)
                state.withLock { $0.sources[i] = nil }
            }
        case nil:
            break
        }
    }
}
