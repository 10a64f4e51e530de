import Foundation

/// The first reason to stop wins; waiters wake once it is set.
final class StopLatch: @unchecked Sendable {
    private let lock = NSLock()
    private var reason: StopReason?
    private let sema = DispatchSemaphore(value: 0)
    private var onStop: [() -> Void] = []

    /// Records `r` if nothing stopped the VM yet; returns whether it did.
    @discardableResult
    func stop(_ r: StopReason) -> Bool {
        lock.lock()
        guard reason == nil else { lock.unlock(); return false }
        reason = r
        let hooks = onStop
        lock.unlock()
        for h in hooks { h() }
        sema.signal()
        return true
    }

    var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return reason != nil }

    var current: StopReason? { lock.lock(); defer { lock.unlock() }; return reason }

    /// Runs `hook` when the VM stops (at once if it already has).
    func whenStopped(_ hook: @escaping () -> Void) {
        lock.lock()
        if reason != nil { lock.unlock(); hook(); return }
        onStop.append(hook)
        lock.unlock()
    }

    func wait() -> StopReason {
        sema.wait()
        sema.signal()
        lock.lock(); defer { lock.unlock() }
        return reason ?? .vmmError("stopped without a reason")
    }
}
