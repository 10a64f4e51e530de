/// The DSDT objects for a PCI host bridge (`ACPIMachine.pci`):
///
/// ```
/// Device (PCI0) {
///     Name (_HID, EisaId ("PNP0A08"))   // PCI Express root bridge
///     Name (_CID, EisaId ("PNP0A03"))   // PCI root bridge
///     Name (_ADR, Zero)
///     Name (_SEG, Zero)
///     Name (_BBN, Zero)
///     Name (_UID, Zero)
///     Name (_CRS, ResourceTemplate () {
///         WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0x00, 0x00, 0, 0x01)
///         IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
///         WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0xC000, 0xFFFF, 0, 0x4000)
///         DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
///                      0, 0xC0000000, 0xDFFFFFFF, 0, 0x20000000)
///         QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
///                      0, 0x100000000, 0x10FFFFFFFF, 0, 0x1000000000)
///     })
///     Name (_PRT, Package () { Package () { 0x0001FFFF, Zero, Zero, 0x11 }, ... })
///     Method (_OSC, 4, Serialized) { ... }   // grants what is asked but native PCIe hot plug and AER
/// }
/// Device (ECAM) {
///     Name (_HID, EisaId ("PNP0C02"))   // motherboard resources
///     Method (_STA) { Return (0x0F) }
///     Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite, 0xE0000000, 0x00100000) })
/// }
/// ```
/// Sources/ACPI/README.md ("PCI") says why each is there.
public enum PCIRoot {
    /// The UUID of the PCI host bridge _OSC (PCI Firmware 3.2 §4.5; Linux
    /// `pci_osc_uuid_str`).
    public static let oscUUID = "33DB4D5B-1FF7-401C-9657-7441C03DD766"
    /// The one _OSC revision PCI Firmware 3.x defines.
    static let oscRevision: UInt64 = 1

    /// _OSC Capabilities Buffer DWORD 1 bits (ACPI 6.5 §6.2.11, "_OSC"):
    /// bit 2 unrecognized UUID, bit 3 unrecognized revision, bit 4
    /// capabilities masked (returned with bits of DWORD 3 cleared).
    public enum OSCStatus {
        public static let query: UInt32 = 1 << 0
        public static let unrecognizedUUID: UInt32 = 1 << 2
        public static let unrecognizedRevision: UInt32 = 1 << 3
        public static let capabilitiesMasked: UInt32 = 1 << 4
    }

    /// _OSC Control Field bits (PCI Firmware 3.2 §4.5.2; Linux
    /// `OSC_PCI_EXPRESS_*_CONTROL`) that `_OSC` never grants.
    public enum OSCControl {
        /// Bit 0: PCI Express native hot plug. Nothing here is hot-pluggable.
        public static let nativeHotPlug: UInt32 = 1 << 0
        /// Bit 3: PCI Express Advanced Error Reporting. No device reports errors.
        public static let advancedErrorReporting: UInt32 = 1 << 3
        /// What `_OSC` clears from the OS's request (DWORD 3); everything
        /// else (SHPC hot plug, PME, PCIe capability, LTR, DPC, ...) is
        /// returned as asked.
        public static let refused: UInt32 = nativeHotPlug | advancedErrorReporting
    }

    /// Both devices, for the \_SB scope.
    static func terms(for bridge: ACPIMachine.PCIHostBridge) throws -> [any AMLTerm] {
        [try rootBridge(bridge), try ecamReservation(bridge)]
    }

    /// `Device (PCI0)`.
    public static func rootBridge(_ bridge: ACPIMachine.PCIHostBridge) throws -> AMLDevice {
        try AMLDevice("PCI0", [
            // PNP0A08: a PCI Express root bridge, which makes Linux use ECAM
            // for offsets >= 256 and run _OSC (ACPI 6.5 §6.1.5, PCI
            // Firmware 3.2 §4.3); PNP0A03 for OSes that know only PCI.
            try AMLName("_HID", AMLEISAID("PNP0A08")),
            try AMLName("_CID", AMLEISAID("PNP0A03")),
            // _ADR 0 next to a _HID is what QEMU and Cloud Hypervisor emit;
            // ACPI 6.5 §6.1 says a device "should not" have both and iasl
            // warns (3073) when compiling it. Linux's pci_root uses
            // _SEG/_BBN/_CRS and ignores it.
            try AMLName("_ADR", AMLInteger(0)),
            // _SEG (§6.5.6): PCI segment group 0, as in the MCFG entry.
            try AMLName("_SEG", AMLInteger(0)),
            // _BBN (§6.5.5): the bridge's first bus number.
            try AMLName("_BBN", AMLInteger(UInt64(bridge.buses.lowerBound))),
            // _UID (§6.1.12): one host bridge.
            try AMLName("_UID", AMLInteger(0)),
            try AMLName("_CRS", resources(bridge)),
            try AMLName("_PRT", routingTable(bridge)),
            try osc(),
        ])
    }

    /// _CRS (ACPI 6.5 §6.2, resource descriptors §6.4): the bus range, the config ports the bridge
    /// itself consumes, and every window it forwards (producers: QEMU and
    /// Cloud Hypervisor mark root bridge windows so; Linux on x86 takes
    /// every address descriptor of a root bridge as a window anyway and
    /// drops exactly [0xCF8, 0xCFF], `resource_is_pcicfg_ioport`).
    /// Memory windows are non-cacheable and not prefetchable: Linux puts a
    /// non-prefetchable BAR only in a non-prefetchable window
    /// (`pci_find_parent_resource`), and 64-bit BARs of both kinds go to
    /// the 64-bit window.
    public static func resources(_ bridge: ACPIMachine.PCIHostBridge) throws -> AMLResourceTemplate {
        var descriptors: [any AMLResourceDescriptor] = [
            try AMLAddressSpace.wordBusNumber(UInt16(bridge.buses.lowerBound)...UInt16(bridge.buses.upperBound),
                                              usage: .producer),
        ]
        if let port = bridge.configPorts {
            descriptors.append(AMLIOPort(fixed: port, length: ACPIMachine.PCIHostBridge.configPortCount))
        }
        for window in bridge.ioWindows {
            descriptors.append(try AMLAddressSpace.wordIO(window, usage: .producer, isaRanges: .entire))
        }
        descriptors.append(try AMLAddressSpace.dwordMemory(bridge.mmio32Window, usage: .producer,
                                                           cacheability: .nonCacheable, readWrite: true))
        if let window = bridge.mmio64Window {
            descriptors.append(try AMLAddressSpace.qwordMemory(window, usage: .producer,
                                                               cacheability: .nonCacheable, readWrite: true))
        }
        return AMLResourceTemplate(descriptors)
    }

    /// _PRT (ACPI 6.5 §6.2.13), GSI form: one `Package () { Address, Pin,
    /// Source, Source Index }` per route, with Address = device << 16 |
    /// 0xFFFF (any function), Pin 0-3 for INTA-INTD, Source Zero (no link
    /// device: the interrupt is hard-wired) and Source Index the GSI.
    /// Without a link device Linux programs the I/O APIC pin
    /// level-triggered, active low (drivers/acpi/pci_irq.c).
    public static func routingTable(_ bridge: ACPIMachine.PCIHostBridge) -> AMLPackage {
        AMLPackage(bridge.intxRoutes.map { route in
            AMLPackage([
                AMLInteger(UInt64(route.slot) << 16 | 0xFFFF),
                AMLInteger(UInt64(route.pin)),
                AMLInteger(0),
                AMLInteger(UInt64(route.gsi)),
            ])
        })
    }

    /// ```
    /// Method (_OSC, 4, Serialized) {
    ///     CreateDWordField (Arg3, Zero, CDW1)
    ///     If (LEqual (Arg0, ToUUID ("33DB4D5B-1FF7-401C-9657-7441C03DD766"))) {
    ///         CreateDWordField (Arg3, 0x08, CDW3)
    ///         And (CDW3, 0xFFFFFFF6, Local0)
    ///         If (LNotEqual (Arg1, One)) { Or (CDW1, 0x08, CDW1) }
    ///         If (LNotEqual (CDW3, Local0)) { Or (CDW1, 0x10, CDW1) }
    ///         Store (Local0, CDW3)
    ///     } Else {
    ///         Or (CDW1, 0x04, CDW1)
    ///     }
    ///     Return (Arg3)
    /// }
    /// ```
    /// Arg0 UUID, Arg1 revision, Arg2 DWORD count, Arg3 the capabilities
    /// buffer (ACPI 6.5 §6.2.11). DWORD 2 (the OS's support field) comes
    /// back unchanged; DWORD 3 loses the refused control bits, and then
    /// DWORD 1 says "capabilities masked". Linux accepts that answer to its
    /// query and then requests exactly what was granted, which succeeds
    /// (`acpi_pci_osc_control_set`). Serialized because it creates named
    /// fields (two callers at once would create them twice). The OS must
    /// pass 3 DWORDs, as the PCI host bridge interface defines; a shorter
    /// buffer fails inside the guest's interpreter (AE_AML_BUFFER_LIMIT).
    public static func osc() throws -> AMLMethod {
        let cdw1 = try AMLNameString("CDW1")
        let cdw3 = try AMLNameString("CDW3")
        let arg0 = try AMLArg(0), arg1 = try AMLArg(1), arg3 = try AMLArg(3)
        let granted = try AMLLocal(0)
        return try AMLMethod("_OSC", argumentCount: 4, serialized: true, [
            try AMLCreateDWordField(arg3, byteIndex: AMLInteger(0), "CDW1"),
            AMLIf(AMLLEqual(arg0, try AMLUUID(oscUUID)), then: [
                try AMLCreateDWordField(arg3, byteIndex: AMLInteger(8), "CDW3"),
                AMLBitwise(.and, cdw3, AMLInteger(UInt64(~OSCControl.refused)), target: granted),
                AMLIf(AMLLNot(AMLLEqual(arg1, AMLInteger(oscRevision))), then: [
                    AMLBitwise(.or, cdw1, AMLInteger(UInt64(OSCStatus.unrecognizedRevision)), target: cdw1),
                ]),
                AMLIf(AMLLNot(AMLLEqual(cdw3, granted)), then: [
                    AMLBitwise(.or, cdw1, AMLInteger(UInt64(OSCStatus.capabilitiesMasked)), target: cdw1),
                ]),
                AMLStore(granted, into: cdw3),
            ], else: [
                AMLBitwise(.or, cdw1, AMLInteger(UInt64(OSCStatus.unrecognizedUUID)), target: cdw1),
            ]),
            AMLReturn(arg3),
        ])
    }

    /// `Device (ECAM)`: a PNP0C02 ("motherboard resources", ACPI 6.5 §6.1.5
    /// table of device IDs; Linux drivers/pnp/system.c) whose _CRS covers
    /// the ECAM space of the bridge's buses. Linux uses MMCONFIG only if
    /// that range is E820-reserved or claimed by a PNP0C01/PNP0C02 device
    /// (`pci_mmcfg_late_init`, `is_acpi_reserved`); this makes it
    /// independent of the e820 map.
    public static func ecamReservation(_ bridge: ACPIMachine.PCIHostBridge) throws -> AMLDevice {
        // validate() keeps the range below 4 GiB, so both fit 32 bits.
        guard let base = UInt32(exactly: bridge.ecamStart), let size = UInt32(exactly: bridge.ecamSize) else {
            throw ACPIError.invalidMachine("PCI ECAM 0x\(String(bridge.ecamStart, radix: 16)) does not fit Memory32Fixed")
        }
        return try DSDT.device("ECAM", hid: AMLEISAID("PNP0C02"),
                               resources: [AMLMemory32Fixed(readWrite: true, base: base, length: size)])
    }
}
