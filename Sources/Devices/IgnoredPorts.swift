/// A range of ports (or MMIO) that absorbs writes and reads a fixed value
/// (0xFF by default, like an open ISA bus), without a lock or any state: for
/// ports a guest pokes often and we have nothing behind, such as the POST code
/// port 0x80 that `outb_p` writes after every access (Linux's io_delay), and
/// the COM2-COM4 ports Linux's 8250 driver probes.
///
/// Registering such ranges explicitly keeps "unhandled port" logging quiet
/// for the accesses we expect, and makes them cheap.
public final class IgnoredPorts: BusDevice, Sendable {
    /// The PC POST diagnostic port (Linux `arch/x86/boot/boot.h` io_delay,
    /// `arch/x86/kernel/io_delay.c` "0x80" method).
    public static let postCodePort: UInt64 = 0x80

    public let readValue: UInt8

    public init(readValue: UInt8 = 0xFF) {
        self.readValue = readValue
    }

    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        data.initializeMemory(as: UInt8.self, repeating: readValue)
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {}
}
