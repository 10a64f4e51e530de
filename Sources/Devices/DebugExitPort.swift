/// The verdict port: a one-byte write of N to port 0x501 sends
/// `.guestVerdict(N)`, which the VMM turns into its exit status. A test guest
/// ends a run with e.g. `printf '\x00' | dd of=/dev/port bs=1 seek=1281` or an
/// `outb`.
///
/// The port number is QEMU's `isa-debug-exit` default (iobase 0x501), so guest
/// images that already poke it need no change, but the meaning is ours: the
/// byte is the verdict itself, not QEMU's `(value << 1) | 1` exit status.
///
/// Wider writes are ignored (a guest using `outw` here is confused, and
/// guessing which byte it meant is worse than doing nothing). Reads return
/// 0xFF (open bus).
public final class DebugExitPort: BusDevice {
    public static let port: UInt64 = 0x501
    public static let length: UInt64 = 1

    private let events: MachineEventSink

    public init(events: MachineEventSink) {
        self.events = events
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        data.initializeMemory(as: UInt8.self, repeating: 0xFF)
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        guard offset == 0, data.count == 1 else { return }
        events.machineEvent(.guestVerdict(data[0]))
    }
}
