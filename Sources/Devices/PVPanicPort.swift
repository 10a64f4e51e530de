/// QEMU's pvpanic ISA device at port 0x505 (QEMU `docs/specs/pvpanic.rst`):
/// reading the port returns the events the host supports; the guest writes
/// an event bit when it panics. Linux's `pvpanic` driver finds it through the
/// ACPI device QEMU0001 (the boot layer describes it).
///
/// - bit 0, PVPANIC_PANICKED: the guest panicked -> `.guestPanic`.
/// - bit 1, PVPANIC_CRASH_LOADED: a crash kernel is about to run; the guest
///   keeps going, so no event is sent.
///
/// Only one-byte writes count. Reads return 0x03 in the first byte and 0xFF
/// for any byte past the port.
public final class PVPanicPort: BusDevice {
    public static let port: UInt64 = 0x505
    public static let length: UInt64 = 1
    static let panicked: UInt8 = 0x01     // PVPANIC_PANICKED
    static let crashLoaded: UInt8 = 0x02  // PVPANIC_CRASH_LOADED
    /// The events this device reports as supported.
    public static let supportedEvents: UInt8 = panicked | crashLoaded

    private let events: MachineEventSink

    public init(events: MachineEventSink) {
        self.events = events
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        for i in data.indices {
            data[i] = offset == 0 && i == 0 ? PVPanicPort.supportedEvents : 0xFF
        }
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        guard offset == 0, data.count == 1 else { return }
        if data[0] & PVPanicPort.panicked != 0 {
            events.machineEvent(.guestPanic)
        }
    }
}
