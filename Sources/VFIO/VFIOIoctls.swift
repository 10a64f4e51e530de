import CShim

/// The iommufd and VFIO ioctl requests SwiftVMM makes, by when (see
/// `HostIoctls`): after setup, the vIOMMU's domains, maps and (re)attachments,
/// an assigned device's interrupts and resets, and teardown; during setup
/// only, binding a device to the iommufd.
public enum VFIOIoctls {
    public static let afterSetup: [(name: String, request: UInt)] = [
        ("IOMMU_DESTROY", SHIM_IOMMU_DESTROY), ("IOMMU_IOAS_ALLOC", SHIM_IOMMU_IOAS_ALLOC),
        ("IOMMU_IOAS_IOVA_RANGES", SHIM_IOMMU_IOAS_IOVA_RANGES), ("IOMMU_IOAS_MAP", SHIM_IOMMU_IOAS_MAP),
        ("IOMMU_IOAS_UNMAP", SHIM_IOMMU_IOAS_UNMAP), ("IOMMU_OPTION", SHIM_IOMMU_OPTION),
        ("IOMMU_HWPT_ALLOC", SHIM_IOMMU_HWPT_ALLOC), ("IOMMU_GET_HW_INFO", SHIM_IOMMU_GET_HW_INFO),
        ("VFIO_DEVICE_GET_INFO", SHIM_VFIO_DEVICE_GET_INFO),
        ("VFIO_DEVICE_GET_REGION_INFO", SHIM_VFIO_DEVICE_GET_REGION_INFO),
        ("VFIO_DEVICE_GET_IRQ_INFO", SHIM_VFIO_DEVICE_GET_IRQ_INFO), ("VFIO_DEVICE_SET_IRQS", SHIM_VFIO_DEVICE_SET_IRQS),
        ("VFIO_DEVICE_RESET", SHIM_VFIO_DEVICE_RESET), ("VFIO_DEVICE_PCI_HOT_RESET", SHIM_VFIO_DEVICE_PCI_HOT_RESET),
        ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT),
        ("VFIO_DEVICE_DETACH_IOMMUFD_PT", SHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT),
    ]

    public static let setupOnly: [(name: String, request: UInt)] = [
        ("VFIO_DEVICE_BIND_IOMMUFD", SHIM_VFIO_DEVICE_BIND_IOMMUFD),
    ]
}
