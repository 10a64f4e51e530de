/// Values defined by the virtio 1.2 specification (OASIS virtio-v1.2-cs01).
/// Every constant names the section it comes from; nothing here is a guest value.
public enum VirtioSpec {
    /// §5 "Device Types": the virtio device IDs this package implements.
    public enum DeviceType {
        public static let network: UInt16 = 1  // §5.1.1
        public static let block: UInt16 = 2    // §5.2.1
        public static let console: UInt16 = 3  // §5.3.1
        public static let entropy: UInt16 = 4  // §5.4.1
        public static let iommu: UInt16 = 23   // §5.13.1
    }

    /// §2.1 "Device Status Field".
    public enum Status {
        public static let acknowledge: UInt8 = 1
        public static let driver: UInt8 = 2
        public static let driverOK: UInt8 = 4
        public static let featuresOK: UInt8 = 8
        public static let deviceNeedsReset: UInt8 = 64
        public static let failed: UInt8 = 128
    }

    /// §6 "Reserved Feature Bits" (bit numbers 24 to 40 are the transport and
    /// ring features, §2.2).
    public enum Feature {
        public static let indirectDescriptors: UInt64 = 1 << 28 // VIRTIO_F_INDIRECT_DESC
        public static let eventIndex: UInt64 = 1 << 29          // VIRTIO_F_EVENT_IDX
        public static let version1: UInt64 = 1 << 32            // VIRTIO_F_VERSION_1
        public static let accessPlatform: UInt64 = 1 << 33      // VIRTIO_F_ACCESS_PLATFORM
        public static let ringPacked: UInt64 = 1 << 34          // VIRTIO_F_RING_PACKED
        public static let inOrder: UInt64 = 1 << 35             // VIRTIO_F_IN_ORDER
        public static let ringReset: UInt64 = 1 << 40           // VIRTIO_F_RING_RESET
    }

    /// §2.7 "Split Virtqueues": layout of the three parts.
    public enum SplitRing {
        /// "The maximum Queue Size value is 32768." (§2.7)
        public static let maxQueueSize: UInt16 = 32768
        /// `struct virtq_desc` is 16 bytes: le64 addr, le32 len, le16 flags, le16 next (§2.7.5).
        public static let descriptorSize: UInt64 = 16
        /// Alignment of each part (§2.7, table, and §2.7.1 "Driver Requirements: Virtqueues").
        public static let descriptorTableAlignment: UInt64 = 16
        public static let availRingAlignment: UInt64 = 2
        public static let usedRingAlignment: UInt64 = 4
        /// `struct virtq_avail` header: le16 flags, le16 idx; then le16 ring[size];
        /// then le16 used_event (§2.7.6).
        public static let availHeaderSize: UInt64 = 4
        public static let availEntrySize: UInt64 = 2
        /// `struct virtq_used` header: le16 flags, le16 idx; then
        /// `struct virtq_used_elem { le32 id; le32 len; }` ring[size]; then le16
        /// avail_event (§2.7.8).
        public static let usedHeaderSize: UInt64 = 4
        public static let usedElementSize: UInt64 = 8

        /// Descriptor flags (§2.7.5).
        public static let descFlagNext: UInt16 = 1     // VIRTQ_DESC_F_NEXT
        public static let descFlagWrite: UInt16 = 2    // VIRTQ_DESC_F_WRITE
        public static let descFlagIndirect: UInt16 = 4 // VIRTQ_DESC_F_INDIRECT
        /// Available ring flag (§2.7.6, §2.7.7).
        public static let availFlagNoInterrupt: UInt16 = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
        /// Used ring flag (§2.7.8, §2.7.10).
        public static let usedFlagNoNotify: UInt16 = 1 // VIRTQ_USED_F_NO_NOTIFY

        /// "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in
        /// total" (§2.7.5.2).
        public static let maxChainBytes: UInt64 = 1 << 32

        /// Size in bytes of the descriptor table, available ring and used ring
        /// for a queue of `size` entries, event-index fields included (§2.7, table).
        public static func descriptorTableBytes(size: UInt16) -> UInt64 { descriptorSize * UInt64(size) }
        public static func availRingBytes(size: UInt16) -> UInt64 { availHeaderSize + availEntrySize * UInt64(size) + 2 }
        public static func usedRingBytes(size: UInt16) -> UInt64 { usedHeaderSize + usedElementSize * UInt64(size) + 2 }
    }

    /// §4.1 "Virtio Over PCI Bus".
    public enum PCI {
        /// §4.1.2 "PCI Device Discovery": vendor 0x1AF4, device 0x1040 + device type
        /// for non-transitional devices; revision ID 1 or higher; subsystem device
        /// ID 0x40 or higher (§4.1.2.1).
        public static let vendorID: UInt16 = 0x1AF4
        public static let modernDeviceIDBase: UInt16 = 0x1040
        public static let revisionID: UInt8 = 1
        public static let minimumSubsystemID: UInt16 = 0x40

        /// §4.1.4 "Virtio Structure PCI Capabilities": `cap_vndr` 0x09 (a vendor-specific capability).
        public static let vendorCapabilityID: UInt8 = 0x09
        /// `cfg_type` values (§4.1.4).
        public static let capCommonConfig: UInt8 = 1 // VIRTIO_PCI_CAP_COMMON_CFG
        public static let capNotifyConfig: UInt8 = 2 // VIRTIO_PCI_CAP_NOTIFY_CFG
        public static let capISRConfig: UInt8 = 3    // VIRTIO_PCI_CAP_ISR_CFG
        public static let capDeviceConfig: UInt8 = 4 // VIRTIO_PCI_CAP_DEVICE_CFG
        public static let capPCIConfig: UInt8 = 5    // VIRTIO_PCI_CAP_PCI_CFG
        /// `struct virtio_pci_cap` is 16 bytes; the notify capability appends le32
        /// `notify_off_multiplier` (20 bytes, §4.1.4.4); the PCI config access
        /// capability appends u8 `pci_cfg_data[4]` (20 bytes, §4.1.4.9).
        public static let capLength: UInt8 = 16
        public static let notifyCapLength: UInt8 = 20
        public static let pciConfigCapLength: UInt8 = 20

        /// §4.1.5.1.2 "MSI-X Vector Configuration": VIRTIO_MSI_NO_VECTOR.
        public static let noVector: UInt16 = 0xFFFF

        /// §4.1.4.5 "ISR status capability": bit 0 queue interrupt, bit 1 device
        /// configuration interrupt.
        public static let isrQueue: UInt8 = 1
        public static let isrConfig: UInt8 = 2
    }
}
