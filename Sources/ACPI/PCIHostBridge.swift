import Bits

extension ACPIMachine {
    /// The PCI host bridge as the DSDT's `\_SB.PCI0` and the MCFG describe
    /// it: PCI segment 0, config space through ECAM (and ports 0xCF8-0xCFF),
    /// the address windows the bridge forwards to its bus, and where each
    /// slot's INTx pins go. Plain values, so this target does not depend on
    /// PCI; the VMM copies them from the PCI layer's `PCIWindows` and
    /// `PCIRootBus.prtEntries` (Sources/ACPI/README.md, "PCI").
    ///
    /// Nested in `ACPIMachine` because the PCI target has a `PCIHostBridge`
    /// of its own (the 00.0 config-space function) and the VMM imports both.
    public struct PCIHostBridge: Hashable, Sendable {
        /// One _PRT entry (ACPI 6.5 §6.2.13): every function of device
        /// `slot` signals INTx `pin` on global system interrupt `gsi`.
        public struct INTxRoute: Hashable, Sendable {
            /// Device number, 0...31 (PCI Local Bus 3.0 §3.2.2.3.1: 5 bits).
            public var slot: UInt8
            /// 0 = INTA, 1 = INTB, 2 = INTC, 3 = INTD (_PRT's Pin field,
            /// one less than the Interrupt Pin config register).
            public var pin: UInt8
            /// The I/O APIC input (MADT: one I/O APIC with GSI base 0).
            public var gsi: UInt32

            public init(slot: UInt8, pin: UInt8, gsi: UInt32) {
                self.slot = slot
                self.pin = pin
                self.gsi = gsi
            }
        }

        /// Devices per bus (5-bit device number) and INTx pins per function.
        public static let slotsPerBus: UInt8 = 32
        public static let pinsPerFunction: UInt8 = 4
        /// ECAM gives each bus 1 MiB: 32 devices x 8 functions x 4 KiB
        /// (PCIe Base 4.0 §7.2.2, Table 7-1: bus number in address bits 27:20).
        public static let ecamBytesPerBus: UInt64 = 1 << 20
        /// The configuration address/data ports of mechanism #1 (PCI Local
        /// Bus 3.0 §3.2.2.3.2: CONFIG_ADDRESS 0xCF8, CONFIG_DATA 0xCFC),
        /// 8 ports with 0xCF9 (reset control) in between.
        public static let configPortCount: UInt8 = 8

        /// Physical address of the ECAM area for bus 0 (the MCFG's base
        /// address: bus N's 1 MiB starts at `ecamBase + N << 20`). 1 MiB aligned.
        public var ecamBase: UInt64
        /// The bus numbers below this bridge: _BBN, WordBusNumber in _CRS
        /// and the MCFG entry's start/end bus. SwiftVMM has bus 0 only.
        public var buses: ClosedRange<UInt8>
        /// First of the 8 config ports the bridge consumes, listed in _CRS
        /// as `IO (Decode16, port, port, 1, 8)` as QEMU and Cloud Hypervisor
        /// do; nil leaves them out. No I/O window may cover them.
        public var configPorts: UInt16?
        /// I/O port ranges forwarded to the bus (WordIO producers). SwiftVMM
        /// passes exactly what its I/O router decodes, the PCI layer's one
        /// window 0xC000-0xFFFF (README, "PCI"); QEMU's [0x0000, 0x0CF7] +
        /// [0x0D00, 0xFFFF] is also expressible.
        public var ioWindows: [ClosedRange<UInt16>]
        /// The 32-bit MMIO window (a DWordMemory producer, non-cacheable).
        public var mmio32Window: ClosedRange<UInt32>
        /// The 64-bit MMIO window (a QWordMemory producer, non-cacheable,
        /// never prefetchable), or nil for none.
        public var mmio64Window: ClosedRange<UInt64>?
        /// _PRT: at most one route per (slot, pin), emitted in this order.
        public var intxRoutes: [INTxRoute]

        public init(ecamBase: UInt64,
                    buses: ClosedRange<UInt8> = 0...0,
                    configPorts: UInt16? = 0xCF8,
                    ioWindows: [ClosedRange<UInt16>],
                    mmio32Window: ClosedRange<UInt32>,
                    mmio64Window: ClosedRange<UInt64>?,
                    intxRoutes: [INTxRoute]) {
            self.ecamBase = ecamBase
            self.buses = buses
            self.configPorts = configPorts
            self.ioWindows = ioWindows
            self.mmio32Window = mmio32Window
            self.mmio64Window = mmio64Window
            self.intxRoutes = intxRoutes
        }

        /// First byte of the ECAM space the buses use (bus `buses.lowerBound`).
        /// Meaningful once `validate` has passed (no overflow).
        public var ecamStart: UInt64 { ecamBase &+ UInt64(buses.lowerBound) * Self.ecamBytesPerBus }
        /// Bytes of ECAM space the buses use: 1 MiB per bus.
        public var ecamSize: UInt64 { UInt64(buses.count) * Self.ecamBytesPerBus }

        /// Throws `ACPIError.invalidMachine` for a bridge the tables cannot
        /// describe, or describe only with overlaps a guest would reject.
        func validate() throws {
            guard ecamBase % Self.ecamBytesPerBus == 0 else {
                throw ACPIError.invalidMachine("PCI ECAM base \(hex(ecamBase)) is not 1 MiB aligned")
            }
            // Memory32Fixed (the PNP0C02 reservation) holds only 32-bit addresses.
            // At most 256 buses x 1 MiB: the offset itself cannot overflow.
            let ecamEndOffset = (UInt64(buses.upperBound) + 1) * Self.ecamBytesPerBus
            let (ecamEnd, overflow) = ecamBase.addingReportingOverflow(ecamEndOffset)
            guard !overflow, ecamEnd <= 0x1_0000_0000 else {
                throw ACPIError.invalidMachine("PCI ECAM for buses \(buses.lowerBound)-\(buses.upperBound) at \(hex(ecamBase)) does not end below 4 GiB")
            }
            let ecam = ecamStart...(ecamEnd - 1)

            var memory: [(String, ClosedRange<UInt64>)] = [
                ("ECAM", ecam),
                ("32-bit MMIO window", UInt64(mmio32Window.lowerBound)...UInt64(mmio32Window.upperBound)),
            ]
            if let w = mmio64Window { memory.append(("64-bit MMIO window", w)) }
            for (i, a) in memory.enumerated() {
                for b in memory[(i + 1)...] where a.1.overlaps(b.1) {
                    throw ACPIError.invalidMachine("PCI \(a.0) \(hex(a.1.lowerBound))-\(hex(a.1.upperBound)) overlaps the \(b.0) \(hex(b.1.lowerBound))-\(hex(b.1.upperBound))")
                }
            }

            var io: [(String, ClosedRange<UInt32>)] = ioWindows.map {
                ("I/O window", UInt32($0.lowerBound)...UInt32($0.upperBound))
            }
            if let port = configPorts {
                let last = UInt32(port) + UInt32(Self.configPortCount) - 1
                guard last <= UInt32(UInt16.max) else {
                    throw ACPIError.invalidMachine("PCI config ports at \(hex(port)) run past port 0xffff")
                }
                io.append(("config ports", UInt32(port)...last))
            }
            for (i, a) in io.enumerated() {
                for b in io[(i + 1)...] where a.1.overlaps(b.1) {
                    throw ACPIError.invalidMachine("PCI \(a.0) \(hex(a.1.lowerBound))-\(hex(a.1.upperBound)) overlaps the \(b.0) \(hex(b.1.lowerBound))-\(hex(b.1.upperBound))")
                }
            }

            var seen = Set<UInt16>()
            for r in intxRoutes {
                guard r.slot < Self.slotsPerBus, r.pin < Self.pinsPerFunction else {
                    throw ACPIError.invalidMachine("PCI INTx route slot \(r.slot) pin \(r.pin): slots are 0-31, pins 0-3 (INTA-INTD)")
                }
                guard seen.insert(UInt16(r.slot) << 8 | UInt16(r.pin)).inserted else {
                    throw ACPIError.invalidMachine("PCI INTx route slot \(r.slot) pin \(r.pin) is listed twice")
                }
            }
        }
    }
}
