import ACPI
import Devices

/// The HW-reduced ACPI sleep control (offset 0) and status (offset 1)
/// registers the FADT points at (Sources/ACPI/README.md): a control write of
/// SLP_EN with SLP_TYP 5 (S5) is the guest's `poweroff`.
final class ACPISleepPort: BusDevice {
    static let length: UInt64 = 2
    private let events: MachineEventSink

    init(events: MachineEventSink) { self.events = events }

    func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = 0 }
        // Status: WAK_STS set, so a guest polling for wake-up never spins.
        if offset == 1, data.count > 0 { data[0] = ACPISleep.wakeStatusBit }
    }

    func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        guard offset == 0, let v = data.first else { return }
        if ACPISleep.decodeControlWrite(v) { events.machineEvent(.powerOff) }
    }
}
