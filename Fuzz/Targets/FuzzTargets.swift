/// Every fuzz target: what the guest drives (virtqueues, virtio devices, PCI
/// config space and BARs with MSI-X, legacy ports), what the host's files
/// drive (config, kernel, initramfs) and what a vfio-user server sends. Each takes any bytes and must neither
/// trap nor touch memory it does not own; `scripts/fuzz` runs them under
/// libFuzzer with AddressSanitizer, and the unit tests replay their corpora.
public enum FuzzTargets {
    public static let all: [(name: String, run: @Sendable ([UInt8]) -> Void)] = [
        ("virtqueue", VirtqueueTarget.run),
        ("virtio-blk", VirtioBlockTarget.run),
        ("virtio-net", VirtioNetTarget.run),
        ("virtio-console", VirtioConsoleTarget.run),
        ("virtio-rng", VirtioRNGTarget.run),
        ("virtio-iommu", VirtioIOMMUTarget.run),
        ("pci-bus", PCIBusTarget.run),
        ("legacy-ports", LegacyPortsTarget.run),
        ("config", ConfigTarget.run),
        ("kernel", KernelTarget.run),
        ("initramfs", InitramfsTarget.run),
        ("vfio-user", VFIOUserTarget.run),
    ]

    public static func named(_ name: String) -> (@Sendable ([UInt8]) -> Void)? {
        all.first { $0.name == name }?.run
    }
}
