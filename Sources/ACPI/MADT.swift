import GuestMemory

/// Multiple APIC Description Table, signature "APIC" (ACPI 6.5 §5.2.12,
/// revision 6): the local APIC address and flags, then interrupt
/// controller structures. It says what Boot's MP table says (one local APIC
/// per vCPU with APIC ID = index, one I/O APIC with ID = vCPU count at
/// 0xFEC00000, NMI on every LINT1) so either table leads Linux to the same
/// machine.
///
/// No Interrupt Source Override: KVM's in-kernel PIT raises GSI 0, which
/// KVM routes to I/O APIC pin 0, so ISA IRQ n is GSI n for every n (the
/// default without overrides, §5.2.12.5).
public enum MADT {
    public static let signature = "APIC"
    /// MADT revision in ACPI 6.5.
    public static let revision: UInt8 = 6

    /// Flags bit 0, PCAT_COMPAT: the system also has dual 8259s (KVM's
    /// in-kernel PIC), which OSPM must mask before using the APICs.
    public static let pcatCompat: UInt32 = 1 << 0

    /// Processor Local APIC structure (§5.2.12.2): type 0, length 8.
    static let localAPICType: UInt8 = 0, localAPICLength: UInt8 = 8
    /// Local APIC flags bit 0: Enabled.
    static let localAPICEnabled: UInt32 = 1 << 0
    /// I/O APIC structure (§5.2.12.3): type 1, length 12.
    static let ioAPICType: UInt8 = 1, ioAPICLength: UInt8 = 12
    /// Local APIC NMI structure (§5.2.12.7): type 4, length 6.
    static let localAPICNMIType: UInt8 = 4, localAPICNMILength: UInt8 = 6
    /// ACPI Processor UID 0xFF: the NMI entry applies to all processors.
    static let allProcessors: UInt8 = 0xFF
    /// MPS INTI flags 0: polarity and trigger mode conform to the bus (as
    /// the MP table's NMI entry and QEMU's MADT).
    static let nmiFlags: UInt16 = 0
    /// NMI arrives on local APIC LINT1 (PC virtual wire mode, MP spec 3.6.2.2).
    static let nmiLINT: UInt8 = 1

    /// IDs are 8 bits, 0xFF is the broadcast APIC ID and the processor UID
    /// meaning "all", and the I/O APIC takes ID `vcpus`: at most 254 vCPUs.
    public static let maxVCPUs = 254

    public static func length(vcpus: Int) -> Int {
        SDTHeader.length + 8 + Int(localAPICLength) * vcpus + Int(ioAPICLength) + Int(localAPICNMILength)
    }

    /// The I/O APIC's ID: the first APIC ID after the CPUs' 0..<vcpus
    /// (Boot's `MPTable.ioapicID`).
    public static func ioAPICID(vcpus: Int) -> UInt8 { UInt8(truncatingIfNeeded: vcpus) }

    public static func build(vcpus: Int) throws -> [UInt8] {
        guard (1...maxVCPUs).contains(vcpus) else { throw ACPIError.invalidVCPUCount(vcpus) }
        var body: [UInt8] = []
        body.appendLE(UInt32(truncatingIfNeeded: GuestMemoryMap.lapicBase))
        body.appendLE(pcatCompat)
        for cpu in 0..<vcpus {
            let id = UInt8(truncatingIfNeeded: cpu) // < 254, checked above
            body += [localAPICType, localAPICLength, id, id]
            body.appendLE(localAPICEnabled)
        }
        body += [ioAPICType, ioAPICLength, ioAPICID(vcpus: vcpus), 0]
        body.appendLE(UInt32(truncatingIfNeeded: GuestMemoryMap.ioapicBase))
        body.appendLE(UInt32(0)) // global system interrupt base
        body += [localAPICNMIType, localAPICNMILength, allProcessors]
        body.appendLE(nmiFlags)
        body.append(nmiLINT)
        return try SDTHeader.table(signature: signature, revision: revision, body: body)
    }
}
