import Devices
import VMM

/// The legacy port-I/O devices as the VMM installs them (i8042, CMOS RTC,
/// pvpanic, the boot-complete and debug-exit ports, POST codes), COM1's
/// 16550 and the ACPI sleep control port, driven by port reads and writes of
/// any width, with host input for the UART between them.
enum LegacyPortsTarget {
    static let ports: [UInt64] = [0x3F8, 0x3F9, 0x3FA, 0x3FB, 0x3FC, 0x3FD, 0x3FE, 0x3FF, 0x60, 0x64, 0x70, 0x71,
                                  0x505, 0x80, 0x501, 0x402, 0x600, 0x604]

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let pio = Bus()
        let events = NullEvents()
        let serial = Serial16550(interrupt: NullLine(), console: NullConsole(), rxCapacity: 64, historyCapacity: 64)
        guard (try? LegacyDevices.install(on: pio, events: events)) != nil,
              (try? pio.insert(serial, base: Serial16550.com1Base, length: Serial16550.registerCount)) != nil,
              (try? LegacyDevices.installACPISleep(on: pio, events: events)) != nil else { return }
        while !input.isEmpty {
            let op = input.u8()
            let port = op & 0x80 != 0 ? UInt64(input.u16()) : ports[Int(op & 0x1F) % ports.count]
            let width = input.width()
            switch (op >> 5) & 3 {
            case 0, 1:
                var value = input.bytes(width)
                value += [UInt8](repeating: 0, count: width - value.count)
                _ = value.withUnsafeBytes { pio.write(port, data: $0) }
            case 2:
                var value = [UInt8](repeating: 0, count: width)
                _ = value.withUnsafeMutableBytes { pio.read(port, data: $0) }
            default:
                _ = serial.enqueueInput(input.bytes(Int(op & 0x1F)))
            }
        }
    }
}
