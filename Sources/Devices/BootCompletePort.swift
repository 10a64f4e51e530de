/// The boot-complete port: the guest's init writes the byte 123 to port 0x3F0
/// when userspace is up, and the VMM gets `.bootComplete` (for boot-time
/// measurements and "wait until booted" in tests).
///
/// Port and value follow Firecracker's convention (its test init,
/// `resources/tests/init.c`: MAGIC_IOPORT_SIGNAL_GUEST_BOOT_COMPLETE 0x03f0,
/// MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE 123), so the same guest images work
/// on both. 0x3F0 is the PC floppy controller's base; we have no floppy.
///
/// Only a one-byte write of 123 counts; other values and wider writes are
/// ignored. Reads return 0xFF (open bus).
public final class BootCompletePort: BusDevice {
    public static let port: UInt64 = 0x3F0
    public static let length: UInt64 = 1
    public static let magicValue: UInt8 = 123

    private let events: MachineEventSink

    public init(events: MachineEventSink) {
        self.events = events
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        data.initializeMemory(as: UInt8.self, repeating: 0xFF)
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        guard offset == 0, data.count == 1, data[0] == BootCompletePort.magicValue else { return }
        events.machineEvent(.bootComplete)
    }
}
