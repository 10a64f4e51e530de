import Devices
import Synchronization

/// One `_PRT` entry for the ACPI writer (ACPI 6.5 §6.2.13): slot `slot`'s
/// pin `pin` is wired to IOAPIC input `gsi`. In AML:
/// `Package { acpiAddress, acpiPin, Zero, gsi }` (Source 0 means a GSI,
/// level-triggered, active-low, ACPI 6.5 §6.2.13).
public struct PCIRoutingEntry: Equatable, Sendable {
    public let slot: Int
    public let pin: PCIInterruptPin
    public let gsi: UInt32

    /// _PRT Address: device in the high word, 0xFFFF ("any function") low.
    public var acpiAddress: UInt32 { UInt32(truncatingIfNeeded: slot) << 16 | 0xFFFF }
    /// _PRT Pin: 0 = INTA ... 3 = INTD.
    public var acpiPin: UInt8 { pin.rawValue - 1 }
}

/// The swizzle SwiftVMM wires: slot N, pin P (INTA = 0 ... INTD = 3) goes to
/// IOAPIC input 16 + (N + P) mod 4. GSIs 16-19 are the IOAPIC inputs above
/// the ISA IRQs 0-15; the rotation is the one PCI-to-PCI bridges apply
/// (PCI-to-PCI Bridge Architecture 1.2 §9.1; Linux
/// `pci_swizzle_interrupt_pin`), so single-function devices in consecutive
/// slots get different lines.
public enum PCIINTxRouting {
    public static let firstGSI: UInt32 = 16
    public static let lineCount: UInt32 = 4

    public static func gsi(slot: Int, pin: PCIInterruptPin) -> UInt32 {
        let s = UInt32(truncatingIfNeeded: slot & 0x1F)
        return firstGSI + (s + UInt32(pin.rawValue - 1)) % lineCount
    }
}

/// An IOAPIC input shared by several functions' INTx pins: it is high while
/// any of them asserts (wired-OR of level-triggered lines, PCI 3.0 §2.2.6).
/// The underlying line is set on change only.
final class SharedINTxLine: Sendable {
    private struct State {
        var asserted: Set<Int> = []
        var driven = false
    }

    let line: InterruptLine
    private let state = Mutex(State())

    init(line: InterruptLine) {
        self.line = line
    }

    func set(source: Int, _ high: Bool) {
        state.withLock { s in
            if high { s.asserted.insert(source) } else { s.asserted.remove(source) }
            let level = !s.asserted.isEmpty
            if level != s.driven {
                s.driven = level
                line.setLevel(level)
            }
        }
    }
}

/// One function's view of a shared line.
final class INTxSource: InterruptLine {
    let shared: SharedINTxLine
    let id: Int

    init(shared: SharedINTxLine, id: Int) {
        self.shared = shared
        self.id = id
    }

    func setLevel(_ high: Bool) {
        shared.set(source: id, high)
    }
}
