import Bits

/// Fixed ACPI Description Table, signature "FACP" (ACPI 6.5 §5.2.9,
/// Table 5.9): revision 6, minor version 5, 276 bytes, for a
/// hardware-reduced ACPI platform.
///
/// With HW_REDUCED_ACPI set there are no PM1/PM2/GPE blocks, no PM timer
/// and no SCI: OSPM ignores offsets 46-108 and 148-232 and flag bits 1, 2,
/// 3, 7, 8, 12, 13, 14, 16 and 17 (§5.2.9, "HW_REDUCED_ACPI"). Power-off
/// goes through SLEEP_CONTROL_REG instead of PM1_CNT (§4.8.3.7). Linux
/// then also skips the legacy PIC and the PIT/HPET timer setup
/// (`acpi_generic_reduced_hw_init` in arch/x86/kernel/acpi/boot.c), as it
/// does on Firecracker.
public enum FADT {
    public static let signature = "FACP"
    /// FADT major version for ACPI 6.x (Table 5.9 "Major Version").
    public static let revision: UInt8 = 6
    /// FADT Minor Version for ACPI 6.5 (offset 131).
    public static let minorVersion: UInt8 = 5
    public static let length = 276

    /// Field offsets used here (Table 5.9).
    public enum Offset {
        public static let firmwareControl = 36
        public static let dsdt = 40
        public static let century = 108
        public static let iapcBootArch = 109
        public static let flags = 112
        public static let resetRegister = 116
        public static let minorVersion = 131
        public static let xFirmwareControl = 132
        public static let xDSDT = 140
        public static let sleepControlRegister = 244
        public static let sleepStatusRegister = 256
        public static let hypervisorVendorIdentity = 268
    }

    /// IA-PC Boot Architecture Flags (§5.2.9.3).
    public enum BootArch {
        /// Bit 1, 8042: the motherboard has an 8042 keyboard controller at
        /// ports 0x60/0x64. Without it Linux (FADT revision >= 2) marks the
        /// i8042 "firmware absent" and its driver does not probe.
        public static let i8042: UInt16 = 1 << 1
        /// Bit 2, VGA Not Present: OSPM must not blindly probe VGA.
        public static let vgaNotPresent: UInt16 = 1 << 2
        /// Bit 5, CMOS RTC Not Present.
        public static let cmosRTCNotPresent: UInt16 = 1 << 5
    }

    /// Fixed Feature Flags (§5.2.9, the table after Table 5.9).
    public enum Flags {
        /// Bit 0, WBINVD: the processor's WBINVD flushes caches correctly;
        /// "processors in new ACPI-compatible systems ... must set this field".
        public static let wbinvd: UInt32 = 1 << 0
        /// Bit 4, PWR_BUTTON: 1 = no fixed-feature power button (control
        /// method or none).
        public static let powerButton: UInt32 = 1 << 4
        /// Bit 5, SLP_BUTTON: 1 = no fixed-feature sleep button.
        public static let sleepButton: UInt32 = 1 << 5
        /// Bit 20, HW_REDUCED_ACPI.
        public static let hardwareReduced: UInt32 = 1 << 20
    }

    /// Offset 268, 8 bytes: "Hypervisor Vendor Identity" (ACPI 6.0+).
    public static let hypervisorVendorIdentity = "SWIFTVMM"

    /// The FADT pointing at the DSDT at `dsdtAddress` (X_DSDT only: the
    /// 32-bit DSDT field stays 0, so no OSPM has to choose between two
    /// addresses, §5.2.9 X_DSDT), with the sleep registers, the 8042 and
    /// the CMOS RTC as `machine` has them.
    public static func build(dsdtAddress: UInt64, machine: ACPIMachine) throws -> [UInt8] {
        var table = [UInt8](repeating: 0, count: length)
        var bootArch = BootArch.vgaNotPresent
        if machine.i8042 != nil { bootArch |= BootArch.i8042 }
        if let rtc = machine.rtc {
            // CENTURY: the CMOS RAM index of the century byte. Inside the
            // range HW-reduced OSPMs may ignore, but Linux's
            // mc146818_get_time reads it whenever it is non-zero.
            table[Offset.century] = rtc.centuryRegister
        } else {
            bootArch |= BootArch.cmosRTCNotPresent
        }
        table.setLE(bootArch, at: Offset.iapcBootArch)
        table.setLE(Flags.wbinvd | Flags.powerButton | Flags.sleepButton | Flags.hardwareReduced, at: Offset.flags)
        // RESET_REG (116) stays an all-zero GAS, RESET_VALUE (128) 0 and
        // RESET_REG_SUP (flags bit 10) clear: Linux's ACPI reboot step then
        // does nothing and it goes on to the 8042 reset pulse.
        table[Offset.minorVersion] = minorVersion
        table.setLE(dsdtAddress, at: Offset.xDSDT)
        table.set(GenericAddress.ioPort8(machine.sleepControlPort).bytes, at: Offset.sleepControlRegister)
        table.set(GenericAddress.ioPort8(machine.sleepStatusPort).bytes, at: Offset.sleepStatusRegister)
        table.set(asciiField(hypervisorVendorIdentity, width: 8), at: Offset.hypervisorVendorIdentity)
        return try SDTHeader.table(signature: signature, revision: revision,
                                   body: Array(table[SDTHeader.length...]))
    }
}
