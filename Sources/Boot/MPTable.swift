import Bits
import GuestMemory

/// Intel MultiProcessor Specification 1.4 tables, so the guest finds its CPUs
/// and the IOAPIC without ACPI. Layout and values follow the spec's chapter 4
/// ("MP Configuration Table") and Firecracker's arch/x86_64/mptable.rs.
public enum MPTable {
    /// 255 is the broadcast APIC ID and the IOAPIC takes ID `vcpus`, so CPUs
    /// get IDs 0...253 (Firecracker's MAX_SUPPORTED_CPUS is also 254).
    public static let maxVCPUs = 254

    // Entry type codes (MP spec Table 4-3).
    static let entryProcessor: UInt8 = 0
    static let entryBus: UInt8 = 1
    static let entryIOAPIC: UInt8 = 2
    static let entryIOInterrupt: UInt8 = 3
    static let entryLocalInterrupt: UInt8 = 4

    // Entry sizes (MP spec 4.3.1 - 4.3.5).
    static let floatingPointerSize = 16
    static let headerSize = 44
    static let processorEntrySize = 20
    static let otherEntrySize = 8

    /// Spec revision 1.4 (MP spec 4.1 / 4.2 "SPEC_REV": 04h).
    static let specRevision: UInt8 = 4
    /// Local APIC version KVM's in-kernel LAPIC reports (arch/x86/kvm/lapic.c APIC_VERSION 0x14).
    static let lapicVersion: UInt8 = 0x14
    /// IOAPIC version KVM's in-kernel IOAPIC reports (virt/kvm/ioapic.h IOAPIC_VERSION_ID 0x11).
    static let ioapicVersion: UInt8 = 0x11
    /// CPU flags (MP spec Table 4-5): EN (bit 0), BP (bit 1).
    static let cpuEnabled: UInt8 = 1 << 0
    static let cpuBootProcessor: UInt8 = 1 << 1
    /// CPU signature: family 6, model 0, stepping 0 (MP spec Table 4-6 layout,
    /// CPUID.01H:EAX bits 11:0). Linux only prints it.
    static let cpuSignature: UInt32 = 0x600
    /// CPUID.01H:EDX feature flags: FPU (bit 0) and APIC (bit 9).
    static let cpuFeatures: UInt32 = (1 << 0) | (1 << 9)
    /// IOAPIC flags: EN (MP spec Table 4-8).
    static let ioapicEnabled: UInt8 = 1
    /// Interrupt types (MP spec Table 4-10): INT (vectored), NMI, ExtINT.
    static let interruptINT: UInt8 = 0
    static let interruptNMI: UInt8 = 1
    static let interruptExtINT: UInt8 = 3
    /// Polarity/trigger 0 = "conforms to the bus" (MP spec Table 4-10).
    static let conformingFlags: UInt16 = 0
    /// Every IOAPIC pin 0...23 gets an entry: ISA IRQs 0...15 on pins 0...15
    /// and 16...23 for devices that are given those lines later (KVM's IOAPIC
    /// has 24 pins, virt/kvm/ioapic.h IOAPIC_NUM_PINS).
    static let ioapicPins: UInt8 = 24
    /// Destination "all local APICs" for the NMI entry (MP spec 4.3.5).
    static let allLocalAPICs: UInt8 = 0xFF
    /// Bus type string "ISA" padded with spaces (MP spec Table 4-8 bus type strings).
    static let isaBusType = "ISA"
    static let busID: UInt8 = 0
    static let oemID = "SWIFTVMM"
    static let productID = "SwiftVMM"

    /// Size in bytes of the floating pointer plus the configuration table.
    public static func size(vcpus: Int) -> Int {
        floatingPointerSize + headerSize + processorEntrySize * vcpus + otherEntrySize * (2 + Int(ioapicPins) + 2)
    }

    /// The IOAPIC's ID: the first ID after the CPUs' 0..<vcpus, unique on the
    /// APIC bus and at most 254 (vcpus + 1 would hit the broadcast ID 255 at 254 CPUs).
    public static func ioapicID(vcpus: Int) -> UInt8 { UInt8(truncatingIfNeeded: vcpus) }

    /// Floating pointer at `address` followed by the configuration table.
    public static func build(vcpus: Int, at address: UInt64) throws -> [UInt8] {
        guard vcpus >= 1, vcpus <= maxVCPUs else { throw BootError.invalidVCPUCount(vcpus) }
        let total = size(vcpus: vcpus)
        let (end, overflow) = address.addingReportingOverflow(UInt64(total))
        guard !overflow, end <= BootLayout.highMemoryStart,
              let tableAddress = UInt32(exactly: address + UInt64(floatingPointerSize))
        else { throw BootError.mpTableDoesNotFit(vcpus: vcpus, bytes: total) }
        let ioapicID = ioapicID(vcpus: vcpus)

        // Entries of the configuration table, in the order the spec requires
        // (processors, buses, I/O APICs, I/O interrupts, local interrupts).
        var entries = ByteWriter()
        var count: UInt16 = 0
        for cpu in 0..<vcpus {
            entries.append(entryProcessor)
            entries.append(UInt8(truncatingIfNeeded: cpu))             // local APIC ID
            entries.append(lapicVersion)
            entries.append(cpuEnabled | (cpu == 0 ? cpuBootProcessor : 0))
            entries.append(cpuSignature)
            entries.append(cpuFeatures)
            entries.append(UInt64(0))                                  // reserved
            count += 1
        }
        entries.append(entryBus)
        entries.append(busID)
        entries.appendPadded(isaBusType, width: 6)
        count += 1
        entries.append(entryIOAPIC)
        entries.append(ioapicID)
        entries.append(ioapicVersion)
        entries.append(ioapicEnabled)
        entries.append(UInt32(truncatingIfNeeded: GuestMemoryMap.ioapicBase))
        count += 1
        for pin in 0..<ioapicPins {
            entries.append(entryIOInterrupt)
            entries.append(interruptINT)
            entries.append(conformingFlags)
            entries.append(busID)
            entries.append(pin)                                        // source bus IRQ
            entries.append(ioapicID)
            entries.append(pin)                                        // IOAPIC INTIN#
            count += 1
        }
        // ExtINT (the 8259 PIC) to the BSP's LINT0, NMI to every CPU's LINT1:
        // the virtual-wire setup of MP spec 3.6.2.2 (SeaBIOS and Firecracker alike).
        for (type, destination, lint) in [(interruptExtINT, UInt8(0), UInt8(0)),
                                          (interruptNMI, allLocalAPICs, UInt8(1))] {
            entries.append(entryLocalInterrupt)
            entries.append(type)
            entries.append(conformingFlags)
            entries.append(busID)
            entries.append(UInt8(0))                                   // source bus IRQ
            entries.append(destination)
            entries.append(lint)
            count += 1
        }

        // Configuration table header (MP spec Table 4-2).
        var header = ByteWriter()
        header.append(contentsOf: Array("PCMP".utf8))
        header.append(UInt16(truncatingIfNeeded: headerSize + entries.bytes.count))     // base table length
        header.append(specRevision)
        header.append(UInt8(0))                                        // checksum, patched below
        header.appendPadded(oemID, width: 8)
        header.appendPadded(productID, width: 12)
        header.append(UInt32(0))                                       // OEM table pointer
        header.append(UInt16(0))                                       // OEM table size
        header.append(count)
        header.append(UInt32(truncatingIfNeeded: GuestMemoryMap.lapicBase))
        header.append(UInt16(0))                                       // extended table length
        header.append(UInt8(0))                                        // extended table checksum
        header.append(UInt8(0))                                        // reserved
        var table = header
        table.append(contentsOf: entries.bytes)
        table.set(0 &- byteSum(table.bytes), at: 7)

        // MP floating pointer structure (MP spec Table 4-1).
        var pointer = ByteWriter()
        pointer.append(contentsOf: Array("_MP_".utf8))
        pointer.append(tableAddress)                                   // PHYSICAL ADDRESS POINTER
        pointer.append(UInt8(1))                                       // LENGTH in 16-byte units
        pointer.append(specRevision)
        pointer.append(UInt8(0))                                       // checksum, patched below
        pointer.append(UInt8(0))   // FEATURE1 0: a configuration table is present
        pointer.append(UInt8(0))   // FEATURE2 bit 7 IMCRP clear: virtual-wire mode, no IMCR
        pointer.append(contentsOf: [UInt8](repeating: 0, count: 3))   // FEATURE3-5 reserved
        pointer.set(0 &- byteSum(pointer.bytes), at: 10)

        return pointer.bytes + table.bytes
    }
}
