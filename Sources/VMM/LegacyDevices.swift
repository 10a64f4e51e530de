import ACPI
import Devices

/// The PC legacy devices SwiftVMM puts on the port-I/O bus, besides COM1.
/// Public for the fuzz targets (Fuzz/), which drive the same set.
public enum LegacyDevices {
    public static func install(on pio: Bus, events: MachineEventSink) throws {
        try pio.insert(I8042(events: events), base: I8042.base, length: I8042.length)
        try pio.insert(BootCompletePort(events: events), base: BootCompletePort.port, length: BootCompletePort.length)
        try pio.insert(DebugExitPort(events: events), base: DebugExitPort.port, length: DebugExitPort.length)
        try pio.insert(PVPanicPort(events: events), base: PVPanicPort.port, length: PVPanicPort.length)
        try pio.insert(CMOSRTC(), base: CMOSRTC.base, length: CMOSRTC.length)
        // POST codes (0x80): written by Linux's io_delay; absorbed without a log line.
        try pio.insert(IgnoredPorts(), base: IgnoredPorts.postCodePort, length: 1)
    }

    /// The ACPI sleep control port (S5 = power off), where the FADT says.
    public static func installACPISleep(on pio: Bus, events: MachineEventSink) throws {
        try pio.insert(ACPISleepPort(events: events), base: UInt64(ACPISleep.controlPort), length: ACPISleepPort.length)
    }
}
