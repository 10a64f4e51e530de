import Foundation

/// Turns the signs of a guest panic into one stop reason. pvpanic arrives
/// while Linux is still printing the panic, and with `panic=-1` a reset
/// follows at once; so a panic report does not stop the VM at once: the
/// guest gets `flushDelay` seconds to finish printing, and a reset or
/// power-off after a panic report ends the run as the panic it is.
final class PanicTracker: @unchecked Sendable {
    private let lock = NSLock()
    private let latch: StopLatch
    private let flushDelay: Double
    private var reported = false
    private var viaPVPanic = false

    init(latch: StopLatch, flushDelay: Double = 1.0) {
        self.latch = latch
        self.flushDelay = flushDelay
    }

    var panicked: Bool { lock.lock(); defer { lock.unlock() }; return reported }

    /// A panic was seen: through pvpanic (`viaPVPanic`) or on the console.
    func report(viaPVPanic pv: Bool) {
        lock.lock()
        if pv { viaPVPanic = true }
        let first = !reported
        reported = true
        lock.unlock()
        guard first else { return }
        DispatchQueue.global().asyncAfter(deadline: .now() + flushDelay) { [self] in stopAsPanic() }
    }

    /// The guest reset or powered off. Returns true when that ends a panic.
    func endOfPanic() -> Bool {
        guard panicked else { return false }
        stopAsPanic()
        return true
    }

    private func stopAsPanic() {
        lock.lock(); let pv = viaPVPanic; lock.unlock()
        latch.stop(.guestPanic(viaPVPanic: pv))
    }
}
