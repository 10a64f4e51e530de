import CShim
import XCTest

/// Every iommufd / VFIO request number against its literal value (x86_64),
/// computed by hand. Both families use `_IO(';', nr)`: no size or direction
/// bits, so the number is 0x3B00 | nr (';' is 0x3B).
/// iommufd: nr = IOMMUFD_CMD_BASE (0x80) + n; VFIO: nr = VFIO_BASE (100) + n.
final class IoctlNumberTests: XCTestCase {
    func testIOMMUFDIoctls() {
        XCTAssertEqual(SHIM_IOMMU_DESTROY, 0x3B80)          // 0x80
        XCTAssertEqual(SHIM_IOMMU_IOAS_ALLOC, 0x3B81)       // 0x81
        XCTAssertEqual(SHIM_IOMMU_IOAS_IOVA_RANGES, 0x3B84) // 0x84
        XCTAssertEqual(SHIM_IOMMU_IOAS_MAP, 0x3B85)         // 0x85
        XCTAssertEqual(SHIM_IOMMU_IOAS_UNMAP, 0x3B86)       // 0x86
        XCTAssertEqual(SHIM_IOMMU_OPTION, 0x3B87)           // 0x87
        XCTAssertEqual(SHIM_IOMMU_HWPT_ALLOC, 0x3B89)       // 0x89
        XCTAssertEqual(SHIM_IOMMU_GET_HW_INFO, 0x3B8A)      // 0x8a
    }

    func testVFIODeviceIoctls() {
        XCTAssertEqual(SHIM_VFIO_DEVICE_GET_INFO, 0x3B6B)          // 100 + 7
        XCTAssertEqual(SHIM_VFIO_DEVICE_GET_REGION_INFO, 0x3B6C)   // 100 + 8
        XCTAssertEqual(SHIM_VFIO_DEVICE_GET_IRQ_INFO, 0x3B6D)      // 100 + 9
        XCTAssertEqual(SHIM_VFIO_DEVICE_SET_IRQS, 0x3B6E)          // 100 + 10
        XCTAssertEqual(SHIM_VFIO_DEVICE_RESET, 0x3B6F)             // 100 + 11
        XCTAssertEqual(SHIM_VFIO_DEVICE_PCI_HOT_RESET, 0x3B71)     // 100 + 13
        XCTAssertEqual(SHIM_VFIO_DEVICE_BIND_IOMMUFD, 0x3B76)      // 100 + 18
        XCTAssertEqual(SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3B77) // 100 + 19
        XCTAssertEqual(SHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3B78) // 100 + 20
    }

    func testHardwareInfoValues() {
        XCTAssertEqual(SHIM_IOMMU_HW_INFO_TYPE_NONE, 0)
        XCTAssertEqual(SHIM_IOMMU_HW_INFO_TYPE_INTEL_VTD, 1)
        XCTAssertEqual(SHIM_IOMMU_HW_INFO_TYPE_ARM_SMMUV3, 2)
        XCTAssertEqual(SHIM_IOMMU_HW_INFO_VTD_SIZE, 24)
        XCTAssertEqual(SHIM_IOMMU_HW_INFO_VTD_FLAGS, 0)
        XCTAssertEqual(SHIM_IOMMU_HW_INFO_VTD_CAP_REG, 8)
        XCTAssertEqual(SHIM_IOMMU_HW_INFO_VTD_ECAP_REG, 16)
        XCTAssertEqual(SHIM_VTD_ECAP_SC, 0x80)
    }

    func testFlagValues() {
        XCTAssertEqual(SHIM_IOMMU_IOAS_MAP_FIXED_IOVA, 1)
        XCTAssertEqual(SHIM_IOMMU_IOAS_MAP_WRITEABLE, 2)
        XCTAssertEqual(SHIM_IOMMU_IOAS_MAP_READABLE, 4)
        XCTAssertEqual(SHIM_VFIO_IRQ_SET_DATA_NONE, 1)
        XCTAssertEqual(SHIM_VFIO_IRQ_SET_DATA_BOOL, 2)
        XCTAssertEqual(SHIM_VFIO_IRQ_SET_DATA_EVENTFD, 4)
        XCTAssertEqual(SHIM_VFIO_IRQ_SET_ACTION_MASK, 8)
        XCTAssertEqual(SHIM_VFIO_IRQ_SET_ACTION_UNMASK, 16)
        XCTAssertEqual(SHIM_VFIO_IRQ_SET_ACTION_TRIGGER, 32)
        XCTAssertEqual(SHIM_VFIO_PCI_CONFIG_REGION_INDEX, 7)
        XCTAssertEqual(SHIM_VFIO_PCI_INTX_IRQ_INDEX, 0)
        XCTAssertEqual(SHIM_VFIO_PCI_MSI_IRQ_INDEX, 1)
        XCTAssertEqual(SHIM_VFIO_PCI_MSIX_IRQ_INDEX, 2)
        XCTAssertEqual(SHIM_VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1)
        XCTAssertEqual(SHIM_VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 3)
    }

    func testStructSizes() {
        XCTAssertEqual(SHIM_SIZEOF_IOMMU_IOAS_ALLOC, 12)
        XCTAssertEqual(SHIM_SIZEOF_IOMMU_IOAS_IOVA_RANGES, 32)
        XCTAssertEqual(SHIM_SIZEOF_IOMMU_IOAS_MAP, 40)
        XCTAssertEqual(SHIM_SIZEOF_IOMMU_IOAS_UNMAP, 24)
        XCTAssertEqual(SHIM_SIZEOF_IOMMU_HW_INFO, 40)
        XCTAssertEqual(SHIM_SIZEOF_IOMMU_HWPT_ALLOC, 48)
        XCTAssertEqual(SHIM_SIZEOF_VFIO_DEVICE_BIND_IOMMUFD, 16)
        XCTAssertEqual(SHIM_SIZEOF_VFIO_DEVICE_INFO, 24)
        XCTAssertEqual(SHIM_SIZEOF_VFIO_REGION_INFO, 32)
        XCTAssertEqual(SHIM_SIZEOF_VFIO_IRQ_INFO, 16)
        XCTAssertEqual(SHIM_SIZEOF_VFIO_IRQ_SET, 20)
    }
}
