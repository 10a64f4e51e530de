/// Differentiated System Description Table (ACPI 6.5 §5.2.11.1): the header
/// and the AML definition block. Revision 2, so the AML interpreter uses
/// 64-bit integers.
///
/// ```
/// Name (\_S5, Package (4) { 5, 0, 0, 0 })
/// Scope (\_SB) {
///     Device (COM1) { _HID PNP0501, _UID 0, _STA 0x0F, _CRS IO 0x3F8/8, IRQNoFlags {4} }
///     Device (RTC)  { _HID PNP0B00, _STA 0x0F, _CRS IO 0x70/2 [, IRQNoFlags {8}] }
///     Device (KBD)  { _HID PNP0303, _STA 0x0F, _CRS IO 0x60/1, IO 0x64/1 [, IRQNoFlags {1}] }
///     Device (PEVT) { _HID "QEMU0001", _STA 0x0F, _CRS IO 0x505/1 }
///     [Device (PCI0) { PNP0A08, _CRS windows, _PRT, _OSC }   // PCIRoot
///      Device (ECAM) { PNP0C02, _STA 0x0F, _CRS Memory32Fixed ECAM }]
/// }
/// ```
/// Sources/ACPI/README.md says why each is there.
public enum DSDT {
    public static let signature = "DSDT"
    public static let revision: UInt8 = 2

    /// _STA (§6.3.7): present (bit 0), enabled (1), shown in UI (2),
    /// functioning (3).
    static let statusPresentAndWorking: UInt64 = 0x0F

    /// The AML of the definition block.
    public static func aml(for machine: ACPIMachine) throws -> [UInt8] {
        try machine.pci?.validate()
        var bytes: [UInt8] = []
        for term in try terms(for: machine) { try term.encode(into: &bytes) }
        return bytes
    }

    public static func build(machine: ACPIMachine) throws -> [UInt8] {
        try SDTHeader.table(signature: signature, revision: revision, body: aml(for: machine))
    }

    static func terms(for machine: ACPIMachine) throws -> [any AMLTerm] {
        // \_S5: element 0 is the SLP_TYP Linux writes to SLEEP_CONTROL_REG
        // (acpi_get_sleep_type_data takes elements 0 and 1 as SLP_TYPa/b;
        // hw-reduced sleep uses only SLP_TYPa). Element 1 (SLP_TYPb, for a
        // PM1b block we lack) and the two reserved ones are 0, the
        // four-element shape of §7.4.2 that QEMU and SeaBIOS use.
        let s5 = try AMLName("\\_S5", AMLPackage([AMLInteger(UInt64(ACPISleep.s5Type)), AMLInteger(0),
                                                   AMLInteger(0), AMLInteger(0)]))
        var devices: [any AMLTerm] = []
        devices.append(try device("COM1", hid: AMLEISAID("PNP0501"), uid: 0, resources: [
            AMLIOPort(fixed: machine.serialPort, length: ACPIMachine.serialPortCount),
            AMLIRQNoFlags([machine.serialIRQ]),
        ]))
        if let rtc = machine.rtc {
            var resources: [any AMLResourceDescriptor] = [AMLIOPort(fixed: rtc.port, length: ACPIMachine.RTC.portCount)]
            if let irq = rtc.irq { resources.append(AMLIRQNoFlags([irq])) }
            devices.append(try device("RTC", hid: AMLEISAID("PNP0B00"), resources: resources))
        }
        if let kbd = machine.i8042 {
            var resources: [any AMLResourceDescriptor] = [AMLIOPort(fixed: kbd.dataPort, length: 1),
                                                          AMLIOPort(fixed: kbd.commandPort, length: 1)]
            if let irq = kbd.irq { resources.append(AMLIRQNoFlags([irq])) }
            devices.append(try device("KBD", hid: AMLEISAID("PNP0303"), resources: resources))
        }
        if let port = machine.pvpanicPort {
            devices.append(try device("PEVT", hid: AMLString("QEMU0001"), resources: [AMLIOPort(fixed: port, length: 1)]))
        }
        if let gsi = machine.powerButtonGSI {
            devices += try powerButton(gsi: gsi)
        }
        if let pci = machine.pci {
            devices += try PCIRoot.terms(for: pci)
        }
        return [s5, try AMLScope("\\_SB", devices)]
    }

    /// Notify value for a power button press (ACPI 6.5 §5.6.6, Table 5.166:
    /// 0x80 on a PNP0C0C device = "button pressed").
    static let buttonPressed: UInt64 = 0x80

    /// The power button of a hardware-reduced machine (no fixed-feature
    /// button): a Generic Event Device (ACPI0013, §5.6.9) whose interrupt
    /// runs `_EVT`, which notifies the control-method power button PNP0C0C.
    /// ```
    /// Device (GED) { _HID "ACPI0013", _UID 0, _CRS Interrupt(Consumer, Edge, ActiveHigh) {gsi},
    ///                Method (_EVT, 1) { Notify (\_SB.PWRB, 0x80) } }
    /// Device (PWRB) { _HID PNP0C0C, _UID 0 }
    /// ```
    static func powerButton(gsi: UInt32) throws -> [any AMLTerm] {
        let ged = try AMLDevice("GED", [
            try AMLName("_HID", AMLString("ACPI0013")),
            try AMLName("_UID", AMLInteger(0)),
            try AMLName("_CRS", AMLResourceTemplate([AMLExtendedInterrupt([gsi])])),
            try AMLMethod("_EVT", argumentCount: 1, [try AMLNotify("\\_SB.PWRB", buttonPressed)]),
        ])
        let button = try AMLDevice("PWRB", [
            try AMLName("_HID", AMLEISAID("PNP0C0C")),
            try AMLName("_UID", AMLInteger(0)),
        ])
        return [ged, button]
    }

    /// A device with _HID, optionally _UID, a constant _STA method and a
    /// fixed _CRS.
    static func device(_ name: String, hid: any AMLTerm, uid: UInt64? = nil,
                       resources: [any AMLResourceDescriptor]) throws -> AMLDevice {
        var terms: [any AMLTerm] = [try AMLName("_HID", hid)]
        if let uid = uid { terms.append(try AMLName("_UID", AMLInteger(uid))) }
        terms.append(try AMLMethod("_STA", [AMLReturn(AMLInteger(statusPresentAndWorking))]))
        terms.append(try AMLName("_CRS", AMLResourceTemplate(resources)))
        return try AMLDevice(name, terms)
    }
}
