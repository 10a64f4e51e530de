/// The hardware-reduced sleep registers (ACPI 6.5 §4.8.3.7, "Sleep Control
/// and Status Registers"), which the FADT's SLEEP_CONTROL_REG and
/// SLEEP_STATUS_REG point at, and the decoding the VMM's device on them
/// needs. Bit positions are ACPICA's (include/acpi/actbl.h ACPI_X_*), which
/// Linux writes in `acpi_hw_extended_sleep` (drivers/acpi/acpica/hwesleep.c):
/// it writes WAK_STS to the status register, then `(SLP_TYP << 2) | SLP_EN`
/// to the control register with SLP_TYP the first value of \_Sx, then reads
/// the status register until WAK_STS is set.
///
/// Sources/ACPI/README.md says what the port device should do.
public enum ACPISleep {
    /// I/O port of SLEEP_CONTROL_REG. 0x600 lies above the ISA range
    /// (0x000-0x3FF) and is unused in SwiftVMM's port map
    /// (Sources/Devices/README.md); QEMU's q35 puts its ACPI PM block there.
    public static let controlPort: UInt16 = 0x600
    /// I/O port of SLEEP_STATUS_REG, the next byte.
    public static let statusPort: UInt16 = 0x601

    /// Sleep control register bits 4:2, SLP_TYP (ACPI_X_SLEEP_TYPE_MASK).
    public static let slpTypMask: UInt8 = 0x1C
    public static let slpTypShift: UInt8 = 2
    /// Sleep control register bit 5, SLP_EN (ACPI_X_SLEEP_ENABLE), as a mask.
    public static let slpEnBit: UInt8 = 0x20
    /// Sleep status register bit 7, WAK_STS (ACPI_X_WAKE_STATUS), as a mask.
    public static let wakeStatusBit: UInt8 = 0x80

    /// The SLP_TYP value our DSDT's \_S5 package gives for S5 (soft off).
    /// The value is the platform's choice (§7.4.2: \_Sx returns the values
    /// to write); 5 reads as "S5" in a trace.
    public static let s5Type: UInt8 = 5
    /// The byte Linux writes to power off: `(5 << 2) | SLP_EN` = 0x34.
    public static let s5ControlValue: UInt8 = s5Type << slpTypShift | slpEnBit

    /// True when a guest write of `value` to the sleep control register asks
    /// for S5, i.e. power off: SLP_EN set and SLP_TYP = 5. The reserved bits
    /// (7:6, 1:0) are ignored.
    public static func decodeControlWrite(_ value: UInt8) -> Bool {
        value & slpEnBit != 0 && (value & slpTypMask) >> slpTypShift == s5Type
    }
}
