import Dispatch
import FoundationEssentials
import Synchronization

/// Turns the signs of a guest panic into one stop reason. Linux prints
/// "Kernel panic - not syncing" first, then the stack dump, and only then
/// calls the panic notifiers (pvpanic); with `panic=-1` a reset follows.
/// So no report stops the VM at once: after pvpanic the guest gets
/// `flushDelay` seconds to finish printing; after the console line alone it
/// gets `consoleWait` seconds for pvpanic or its reset to come (printing a
/// stack dump over a serial port takes seconds in a slow, nested VM); and a
/// reset or power-off after any report ends the run as the panic it is.
final class PanicTracker: Sendable {
    private let latch: StopLatch
    private let flushDelay: Double
    private let consoleWait: Double
    /// A panic was reported at all, and through pvpanic (whose stop is then
    /// scheduled).
    private let seen = Mutex<(reported: Bool, viaPVPanic: Bool)>((false, false))

    init(latch: StopLatch, flushDelay: Double = 1.0, consoleWait: Double = 15.0) {
        self.latch = latch
        self.flushDelay = flushDelay
        self.consoleWait = consoleWait
    }

    var panicked: Bool { seen.withLock { $0.reported } }

    /// A panic was seen: through pvpanic (`viaPVPanic`) or on the console.
    func report(viaPVPanic pv: Bool) {
        let (firstConsole, firstPV) = seen.withLock { s in
            defer {
                s.reported = true
                if pv { s.viaPVPanic = true }
            }
            return (!pv && !s.reported, pv && !s.viaPVPanic)
        }
        // The first stop wins (StopLatch); a later one changes nothing.
        if firstPV {
            DispatchQueue.global().asyncAfter(deadline: .now() + flushDelay) { [self] in stopAsPanic() }
        } else if firstConsole {
            DispatchQueue.global().asyncAfter(deadline: .now() + consoleWait) { [self] in stopAsPanic() }
        }
    }

    /// The guest reset or powered off. Returns true when that ends a panic.
    func endOfPanic() -> Bool {
        guard panicked else { return false }
        stopAsPanic()
        return true
    }

    private func stopAsPanic() {
        latch.stop(.guestPanic(viaPVPanic: seen.withLock { $0.viaPVPanic }))
    }
}
