import Bits
import GuestMemory

/// What the ACPI tables describe. Defaults are SwiftVMM's PC port map
/// (Sources/Devices/README.md): COM1 at 0x3F8 on IRQ 4, the i8042 at
/// 0x60/0x64, the CMOS RTC at 0x70, pvpanic at 0x505.
public struct ACPIMachine: Hashable, Sendable {
    /// A 16550 occupies 8 consecutive ports (PC16550D datasheet, register map).
    public static let serialPortCount: UInt8 = 8

    /// The MC146818 RTC at its index/data port pair.
    public struct RTC: Hashable, Sendable {
        /// Index and data ports (MC146818A on the PC/AT: 0x70, 0x71).
        public static let portCount: UInt8 = 2
        public var port: UInt16
        /// IRQ in _CRS, or nil for none. Default nil: SwiftVMM's CMOS model
        /// raises no interrupt, and with an IRQ listed Linux's rtc_cmos
        /// would wait on update interrupts that never come. Without one
        /// (and with no legacy PIC, as on hardware-reduced ACPI) it runs
        /// without alarms and hwclock polls.
        public var irq: UInt8?
        /// CMOS RAM index of the century byte, for the FADT CENTURY field
        /// (0x32 as the PC/AT BIOS keeps it; Devices' CMOSRTC does too).
        public var centuryRegister: UInt8

        public init(port: UInt16 = 0x70, irq: UInt8? = nil, centuryRegister: UInt8 = 0x32) {
            self.port = port
            self.irq = irq
            self.centuryRegister = centuryRegister
        }
    }

    /// The 8042 keyboard controller.
    public struct I8042: Hashable, Sendable {
        public var dataPort: UInt16
        public var commandPort: UInt16
        /// IRQ in _CRS. Default 1, the PC's keyboard IRQ: Linux's i8042
        /// driver uses IRQ 1 whether or not _CRS lists it (it warns when
        /// it does not), so listing it only describes what the driver does.
        public var irq: UInt8?

        public init(dataPort: UInt16 = 0x60, commandPort: UInt16 = 0x64, irq: UInt8? = 1) {
            self.dataPort = dataPort
            self.commandPort = commandPort
            self.irq = irq
        }
    }

    /// 1...254 (`MADT.maxVCPUs`).
    public var vcpus: Int
    /// SLEEP_CONTROL_REG's I/O port; must not be 0 (Linux offers ACPI
    /// power-off only when both sleep registers have a non-zero address).
    public var sleepControlPort: UInt16
    /// SLEEP_STATUS_REG's I/O port; must not be 0. May equal the control port.
    public var sleepStatusPort: UInt16
    /// COM1's base port and IRQ.
    public var serialPort: UInt16
    public var serialIRQ: UInt8
    /// The pvpanic port (QEMU's ISA pvpanic, docs/specs/pvpanic.rst), or nil for no device.
    public var pvpanicPort: UInt16?
    /// The CMOS RTC, or nil: then the FADT says "CMOS RTC Not Present".
    public var rtc: RTC?
    /// The i8042, or nil: then the FADT's 8042 flag is clear.
    public var i8042: I8042?
    /// The PCI host bridge, or nil for a machine without PCI: then there is
    /// no MCFG and no \_SB.PCI0, and the tables are byte for byte those of
    /// a machine built before PCI existed.
    public var pci: PCIHostBridge?
    /// The GSI of the Generic Event Device (ACPI0013) that reports the power
    /// button (PNP0C0C), or nil for no power button. The VMM pulses this
    /// interrupt to "press" the button (e.g. on SIGTERM).
    public var powerButtonGSI: UInt32?
    /// The virtio-iommu and the PCI functions it translates, or nil for
    /// none: then there is no VIOT and the tables are byte for byte those
    /// of a machine built before the VIOT existed. Needs `pci`.
    public var viommu: VirtioIOMMU?

    public init(vcpus: Int,
                sleepControlPort: UInt16 = ACPISleep.controlPort,
                sleepStatusPort: UInt16 = ACPISleep.statusPort,
                serialPort: UInt16 = 0x3F8,
                serialIRQ: UInt8 = 4,
                pvpanicPort: UInt16? = 0x505,
                rtc: RTC? = RTC(),
                i8042: I8042? = I8042(),
                pci: PCIHostBridge? = nil,
                powerButtonGSI: UInt32? = nil,
                viommu: VirtioIOMMU? = nil) {
        self.powerButtonGSI = powerButtonGSI
        self.viommu = viommu
        self.vcpus = vcpus
        self.sleepControlPort = sleepControlPort
        self.sleepStatusPort = sleepStatusPort
        self.serialPort = serialPort
        self.serialIRQ = serialIRQ
        self.pvpanicPort = pvpanicPort
        self.rtc = rtc
        self.i8042 = i8042
        self.pci = pci
    }
}

/// Where each table goes and what it holds.
public struct ACPILayout: Hashable, Sendable {
    public struct Table: Hashable, Sendable {
        /// "RSD PTR " for the RSDP, else the 4-byte table signature.
        public let signature: String
        public let address: UInt64
        public let bytes: [UInt8]

        /// First byte after the table.
        public var end: UInt64 { address + UInt64(bytes.count) }
    }

    /// In address order: RSDP, XSDT, FADT, MADT, DSDT, then MCFG when the
    /// machine has PCI, then VIOT when it has a virtio-iommu.
    public let tables: [Table]

    /// Where the RSDP is: for boot_params.acpi_rsdp_addr and
    /// hvm_start_info.rsdp_paddr.
    public var rsdpAddress: UInt64 { tables[0].address }

    /// First byte after the last table.
    public var end: UInt64 { tables[tables.count - 1].end }

    /// The table with `signature`, if any.
    public func table(_ signature: String) -> Table? {
        tables.first { $0.signature == signature }
    }

    /// Copies every table into guest memory. Checks all ranges first, so a
    /// failure writes nothing.
    public func write(into memory: any GuestMemoryAccess) throws {
        for t in tables where !memory.contains(GuestAddress(t.address), length: UInt64(t.bytes.count)) {
            throw ACPIError.tableOutsideGuestMemory(signature: t.signature, address: t.address,
                                                    length: UInt64(t.bytes.count))
        }
        for t in tables {
            try memory.writeBytes(t.bytes, at: GuestAddress(t.address))
        }
    }
}

/// Builds the whole set: RSDP -> XSDT -> {FADT -> DSDT, MADT[, MCFG][, VIOT]}.
public enum ACPITables {
    /// The RSDP's address: the start of the BIOS area Linux scans
    /// (0xE0000-0xFFFFF, ACPI 6.5 §5.2.5.1), inside the range Boot's e820
    /// reserves ([0x9FC00, 0x100000)), so the guest never reuses it as RAM.
    public static let rsdpAddress: UInt64 = 0xE_0000
    /// Everything ends below 1 MiB, where the kernel is loaded.
    public static let areaLimit: UInt64 = 0x10_0000
    /// Each table after the RSDP starts 8-byte aligned (the 64-bit fields
    /// of XSDT and FADT then are naturally aligned).
    public static let tableAlignment: UInt64 = 8
    /// §5.2.5.1: the RSDP is on a 16-byte boundary.
    static let rsdpAlignment: UInt64 = 16

    /// The tables for `config` at the default place.
    public static func build(config: ACPIMachine) throws -> ACPILayout {
        try build(config: config, base: rsdpAddress, limit: areaLimit)
    }

    /// The tables for `config`, RSDP at `base`, all ending at or below `limit`.
    public static func build(config: ACPIMachine, base: UInt64, limit: UInt64) throws -> ACPILayout {
        try validate(config)
        guard base % rsdpAlignment == 0 else { throw ACPIError.misalignedRSDP(base) }

        // Sizes do not depend on addresses: build the address-free tables
        // first, place everything, then fill in the pointers.
        let dsdt = try DSDT.build(machine: config)
        let madt = try MADT.build(vcpus: config.vcpus)
        // MCFG, then VIOT, go last, so a machine without them keeps every address.
        let mcfg = try config.pci.map { try MCFG.build(bridge: $0) }
        let viot = try config.viommu.map { try VIOT.build(iommu: $0) }
        let optional = [(MCFG.signature, mcfg), (VIOT.signature, viot)].compactMap { sig, bytes in bytes.map { (sig, $0) } }
        let xsdtCount = 2 + optional.count // FADT, MADT[, MCFG][, VIOT]
        let sizes = [RSDP.length, XSDT.length(entries: xsdtCount), FADT.length, madt.count, dsdt.count]
            + optional.map { $0.1.count }

        var addresses: [UInt64] = []
        var next = base
        for size in sizes {
            guard let start = alignUp(next, addresses.isEmpty ? rsdpAlignment : tableAlignment) else {
                throw ACPIError.tablesDoNotFit(end: UInt64.max, limit: limit)
            }
            let (end, overflow) = start.addingReportingOverflow(UInt64(size))
            guard !overflow else { throw ACPIError.tablesDoNotFit(end: UInt64.max, limit: limit) }
            addresses.append(start)
            next = end
        }
        guard next <= limit else { throw ACPIError.tablesDoNotFit(end: next, limit: limit) }
        let (rsdpAt, xsdtAt, fadtAt, madtAt, dsdtAt) = (addresses[0], addresses[1], addresses[2], addresses[3], addresses[4])

        var xsdtEntries: [UInt64] = [fadtAt, madtAt]
        var tables: [ACPILayout.Table] = []
        let fadt = try FADT.build(dsdtAddress: dsdtAt, machine: config)
        for (i, (signature, bytes)) in optional.enumerated() {
            let at = addresses[5 + i]
            xsdtEntries.append(at)
            tables.append(.init(signature: signature, address: at, bytes: bytes))
        }
        let xsdt = try XSDT.build(entries: xsdtEntries)
        let rsdp = RSDP.build(xsdtAddress: xsdtAt)
        return ACPILayout(tables: [
            .init(signature: RSDP.signature, address: rsdpAt, bytes: rsdp),
            .init(signature: XSDT.signature, address: xsdtAt, bytes: xsdt),
            .init(signature: FADT.signature, address: fadtAt, bytes: fadt),
            .init(signature: MADT.signature, address: madtAt, bytes: madt),
            .init(signature: DSDT.signature, address: dsdtAt, bytes: dsdt),
        ] + tables)
    }

    static func validate(_ config: ACPIMachine) throws {
        guard (1...MADT.maxVCPUs).contains(config.vcpus) else { throw ACPIError.invalidVCPUCount(config.vcpus) }
        guard config.sleepControlPort != 0, config.sleepStatusPort != 0 else {
            throw ACPIError.invalidMachine("sleep control/status ports must be non-zero (Linux then offers no ACPI power-off)")
        }
        try config.pci?.validate()
        if let iommu = config.viommu {
            // A PCI virtio-iommu node names a function Linux must find on
            // the host bridge (pci_get_domain_bus_and_slot), and the one
            // bridge is segment 0 (_SEG 0, the MCFG's segment).
            guard let pci = config.pci else {
                throw ACPIError.invalidMachine("a virtio-iommu (VIOT) needs a PCI host bridge (ACPIMachine.pci): its node names a PCI function")
            }
            let iommuAddress = ACPIMachine.VirtioIOMMU.pciAddress(segment: iommu.segment, rid: iommu.bdf)
            guard iommu.segment == 0, pci.buses.contains(UInt8(truncatingIfNeeded: iommu.bdf >> 8)) else {
                throw ACPIError.invalidMachine("virtio-iommu \(iommuAddress) is not on the PCI host bridge's segment 0, buses \(pci.buses.lowerBound)-\(pci.buses.upperBound)")
            }
            for r in iommu.endpointRanges where r.segment != 0 {
                throw ACPIError.invalidMachine("virtio-iommu endpoint range \(ACPIMachine.VirtioIOMMU.describe(r)) is not on PCI segment 0, the machine's only segment")
            }
        }
    }
}
