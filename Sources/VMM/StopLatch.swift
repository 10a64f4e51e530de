import Dispatch
import FoundationEssentials
import Synchronization

/// The first reason to stop wins; waiters wake once it is set.
///
/// `isStopped`, which each vCPU asks before every KVM_RUN, is one atomic
/// load: no lock on the exit path. `stop` picks the winner under the lock
/// and sets the flag (release) after recording the reason, so a thread that
/// sees the flag (acquire) sees the reason too.
final class StopLatch: Sendable {
    private struct State {
        var reason: StopReason?
        var onStop: [@Sendable () -> Void] = []
    }
    private let state = Mutex(State())
    private let stopped = Atomic<Bool>(false)
    private let sema = DispatchSemaphore(value: 0)

    /// Records `r` if nothing stopped the VM yet; returns whether it did.
    @discardableResult
    func stop(_ r: StopReason) -> Bool {
        let hooks = state.withLock { s -> [@Sendable () -> Void]? in
            guard s.reason == nil else { return nil }
            s.reason = r
            stopped.store(true, ordering: .releasing)
            return s.onStop
        }
        guard let hooks else { return false }
        for h in hooks { h() }
        sema.signal()
        return true
    }

    var isStopped: Bool { stopped.load(ordering: .acquiring) }

    var current: StopReason? { state.withLock { $0.reason } }

    /// Runs `hook` when the VM stops (at once if it already has).
    func whenStopped(_ hook: @escaping @Sendable () -> Void) {
        let already = state.withLock { s -> Bool in
            if s.reason == nil { s.onStop.append(hook) }
            return s.reason != nil
        }
        if already { hook() }
    }

    func wait() -> StopReason {
        sema.wait()
        sema.signal()
        return current ?? .vmmError("stopped without a reason")
    }
}
