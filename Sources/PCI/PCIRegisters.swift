/// Config space register offsets and bits. Names follow Linux
/// `include/uapi/linux/pci_regs.h`; the meaning is from PCI Local Bus 3.0
/// §6.1-§6.2 (type-0 header) and PCIe Base 4.0 §7.5.1 unless noted.
public enum PCIReg {
    /// PCI_CFG_SPACE_SIZE: conventional PCI config space.
    public static let configSpaceSize = 256
    /// PCI_CFG_SPACE_EXP_SIZE: PCIe extended config space (PCIe 4.0 §7.2.2).
    public static let extendedConfigSpaceSize = 4096

    public static let vendorID = 0x00        // PCI_VENDOR_ID, 16 bits
    public static let deviceID = 0x02        // PCI_DEVICE_ID, 16 bits
    public static let command = 0x04         // PCI_COMMAND, 16 bits
    public static let status = 0x06          // PCI_STATUS, 16 bits
    public static let revisionID = 0x08      // PCI_REVISION_ID
    public static let classProg = 0x09       // PCI_CLASS_PROG (programming interface)
    public static let classDevice = 0x0A     // PCI_CLASS_DEVICE (sub-class, then base class at 0x0B)
    public static let cacheLineSize = 0x0C   // PCI_CACHE_LINE_SIZE
    public static let latencyTimer = 0x0D    // PCI_LATENCY_TIMER
    public static let headerType = 0x0E      // PCI_HEADER_TYPE
    public static let bist = 0x0F            // PCI_BIST
    public static let bar0 = 0x10            // PCI_BASE_ADDRESS_0; BAR n at 0x10 + 4n
    public static let barCount = 6           // PCI_STD_NUM_BARS
    public static let subsystemVendorID = 0x2C // PCI_SUBSYSTEM_VENDOR_ID
    public static let subsystemID = 0x2E     // PCI_SUBSYSTEM_ID
    public static let romAddress = 0x30      // PCI_ROM_ADDRESS
    public static let capabilityList = 0x34  // PCI_CAPABILITY_LIST
    public static let interruptLine = 0x3C   // PCI_INTERRUPT_LINE
    public static let interruptPin = 0x3D    // PCI_INTERRUPT_PIN
    /// PCI_STD_HEADER_SIZEOF: capabilities start after the 64-byte header.
    public static let headerSize = 0x40
    /// The first PCIe extended capability is at 0x100 (PCIe 4.0 §7.6.2).
    public static let firstExtendedCapability = 0x100

    /// Offset of BAR `index` (0...5).
    public static func bar(_ index: Int) -> Int { bar0 + 4 * index }
}

/// PCI_COMMAND bits (PCI 3.0 §6.2.2, pci_regs.h).
public enum PCICommand {
    public static let io: UInt16 = 0x0001           // PCI_COMMAND_IO
    public static let memory: UInt16 = 0x0002       // PCI_COMMAND_MEMORY
    public static let master: UInt16 = 0x0004       // PCI_COMMAND_MASTER
    public static let parity: UInt16 = 0x0040       // PCI_COMMAND_PARITY
    public static let serr: UInt16 = 0x0100         // PCI_COMMAND_SERR
    public static let intxDisable: UInt16 = 0x0400  // PCI_COMMAND_INTX_DISABLE
    /// The bits an emulated PCIe endpoint implements. Special cycles, MWI,
    /// VGA palette snoop, stepping and fast back-to-back (bits 3, 4, 5, 7, 9)
    /// are hardwired to 0 for PCIe functions (PCIe 4.0 §7.5.1.1.3).
    public static let writable: UInt16 = io | memory | master | parity | serr | intxDisable // 0x0547
}

/// PCI_STATUS bits (PCI 3.0 §6.2.3, pci_regs.h).
public enum PCIStatus {
    public static let interrupt: UInt16 = 0x0008      // PCI_STATUS_INTERRUPT (read-only)
    public static let capabilityList: UInt16 = 0x0010 // PCI_STATUS_CAP_LIST (read-only)
    /// The error bits software clears by writing 1 (RW1C): PCI_STATUS_PARITY
    /// 0x100, SIG_TARGET_ABORT 0x800, REC_TARGET_ABORT 0x1000,
    /// REC_MASTER_ABORT 0x2000, SIG_SYSTEM_ERROR 0x4000, DETECTED_PARITY 0x8000.
    public static let writeOneToClear: UInt16 = 0xF900
}

/// BAR register bits (PCI 3.0 §6.2.5.1, pci_regs.h PCI_BASE_ADDRESS_*).
public enum PCIBarBits {
    public static let spaceIO: UInt32 = 0x01          // PCI_BASE_ADDRESS_SPACE_IO
    public static let memType64: UInt32 = 0x04        // PCI_BASE_ADDRESS_MEM_TYPE_64
    public static let memTypeMask: UInt32 = 0x06      // PCI_BASE_ADDRESS_MEM_TYPE_MASK
    public static let memPrefetch: UInt32 = 0x08      // PCI_BASE_ADDRESS_MEM_PREFETCH
    public static let memAddressMask: UInt32 = 0xFFFF_FFF0 // PCI_BASE_ADDRESS_MEM_MASK
    public static let ioAddressMask: UInt32 = 0xFFFF_FFFC  // PCI_BASE_ADDRESS_IO_MASK
    /// Memory BARs decode at least 16 bytes, I/O BARs at least 4 and at most
    /// 256 (PCI 3.0 §6.2.5.1).
    public static let minMemorySize: UInt64 = 16
    public static let minIOSize: UInt64 = 4
    public static let maxIOSize: UInt64 = 256
    /// The largest I/O BAR an assigned function may have. PCI 3.0 §6.2.5.1
    /// caps I/O BARs at 256 bytes, but a device served by another process
    /// may declare more (libvfio-user's sample server has a 16 KiB one);
    /// like QEMU, the VMM takes it as it is, up to half the I/O window.
    public static let maxAssignedIOSize: UInt64 = 0x4000
    /// Expansion ROM BAR (PCI 3.0 §6.2.5.2): bit 0 enables decoding, bits
    /// 31:11 are the address, so a ROM is at least 2 KiB; at most 16 MiB.
    public static let romEnable: UInt32 = 0x01         // PCI_ROM_ADDRESS_ENABLE
    public static let romAddressMask: UInt32 = 0xFFFF_F800 // PCI_ROM_ADDRESS_MASK
    public static let minROMSize: UInt64 = 0x800
    public static let maxROMSize: UInt64 = 0x100_0000
}

/// Capability IDs (PCI Code and ID Assignment Specification; pci_regs.h).
public enum PCICapabilityID {
    public static let powerManagement: UInt8 = 0x01 // PCI_CAP_ID_PM
    public static let msi: UInt8 = 0x05             // PCI_CAP_ID_MSI
    public static let vendorSpecific: UInt8 = 0x09  // PCI_CAP_ID_VNDR
    public static let pciExpress: UInt8 = 0x10      // PCI_CAP_ID_EXP
    public static let msix: UInt8 = 0x11            // PCI_CAP_ID_MSIX
}

/// Class codes used here (PCI Code and ID Assignment Specification §1;
/// Linux include/linux/pci_ids.h PCI_CLASS_*), as the 24-bit value at 0x09.
public enum PCIClassCode {
    /// PCI_CLASS_BRIDGE_HOST 0x0600, programming interface 0.
    public static let hostBridge: UInt32 = 0x06_00_00
}
