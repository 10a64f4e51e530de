import Foundation
import HostSys

/// Milestones of a run, in seconds since the VMM started.
public final class RunClock: @unchecked Sendable {
    private let lock = NSLock()
    public let startNanos: UInt64
    private var firstRun: Double?
    private var bootComplete: Double?

    public init(startNanos: UInt64 = ProcessStats.monotonicNanos) { self.startNanos = startNanos }

    public var elapsed: Double { Double(ProcessStats.monotonicNanos &- startNanos) / 1e9 }

    /// Records the first KVM_RUN; returns the time if this was the first.
    func markFirstRun() -> Double? {
        lock.lock(); defer { lock.unlock() }
        guard firstRun == nil else { return nil }
        firstRun = elapsed
        return firstRun
    }

    /// Records the boot-complete write; returns the time if this was the first.
    func markBootComplete() -> Double? {
        lock.lock(); defer { lock.unlock() }
        guard bootComplete == nil else { return nil }
        bootComplete = elapsed
        return bootComplete
    }

    public var firstRunSeconds: Double? { lock.lock(); defer { lock.unlock() }; return firstRun }
    public var bootCompleteSeconds: Double? { lock.lock(); defer { lock.unlock() }; return bootComplete }
}
