// VFIO / iommufd layer: the uAPI of /dev/iommu (linux/iommufd.h) and of VFIO
// device cdevs (linux/vfio.h). The kvm-vfio pseudo device is KVM's (cshim.h).
// The headers are linux-libc-dev 6.12 (bookworm-backports, scripts/deps);
// struct sizes SwiftVMM relies on are checked in vfio_asserts.c.
#ifndef SWIFTVMM_CSHIM_VFIO_H
#define SWIFTVMM_CSHIM_VFIO_H

#include <stdint.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>

// --- /dev/iommu ioctls (all _IO(';', 0x80 + n), linux/iommufd.h) ---
static const unsigned long SHIM_IOMMU_DESTROY = IOMMU_DESTROY;
static const unsigned long SHIM_IOMMU_IOAS_ALLOC = IOMMU_IOAS_ALLOC;
static const unsigned long SHIM_IOMMU_IOAS_IOVA_RANGES = IOMMU_IOAS_IOVA_RANGES;
static const unsigned long SHIM_IOMMU_IOAS_MAP = IOMMU_IOAS_MAP;
static const unsigned long SHIM_IOMMU_IOAS_UNMAP = IOMMU_IOAS_UNMAP;
static const unsigned long SHIM_IOMMU_OPTION = IOMMU_OPTION;
static const unsigned long SHIM_IOMMU_HWPT_ALLOC = IOMMU_HWPT_ALLOC;
static const unsigned long SHIM_IOMMU_GET_HW_INFO = IOMMU_GET_HW_INFO;

// --- iommufd flags and enums ---
static const uint32_t SHIM_IOMMU_IOAS_MAP_FIXED_IOVA = IOMMU_IOAS_MAP_FIXED_IOVA;
static const uint32_t SHIM_IOMMU_IOAS_MAP_WRITEABLE = IOMMU_IOAS_MAP_WRITEABLE;
static const uint32_t SHIM_IOMMU_IOAS_MAP_READABLE = IOMMU_IOAS_MAP_READABLE;
static const uint32_t SHIM_IOMMU_OPTION_RLIMIT_MODE = IOMMU_OPTION_RLIMIT_MODE;
static const uint32_t SHIM_IOMMU_OPTION_HUGE_PAGES = IOMMU_OPTION_HUGE_PAGES;
static const uint16_t SHIM_IOMMU_OPTION_OP_SET = IOMMU_OPTION_OP_SET;
static const uint16_t SHIM_IOMMU_OPTION_OP_GET = IOMMU_OPTION_OP_GET;
static const uint32_t SHIM_IOMMU_HWPT_ALLOC_NEST_PARENT = IOMMU_HWPT_ALLOC_NEST_PARENT;
static const uint32_t SHIM_IOMMU_HWPT_ALLOC_DIRTY_TRACKING = IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
static const uint32_t SHIM_IOMMU_HW_INFO_TYPE_NONE = IOMMU_HW_INFO_TYPE_NONE;
static const uint32_t SHIM_IOMMU_HW_INFO_TYPE_INTEL_VTD = IOMMU_HW_INFO_TYPE_INTEL_VTD;
// IOMMU_HW_INFO_TYPE_ARM_SMMUV3 arrived in Linux 6.14 (after our 6.12 headers):
// enum iommu_hw_info_type value 2, data struct iommu_hw_info_arm_smmuv3
// { __u32 flags; __u32 __reserved; __u32 idr[6]; __u32 iidr; __u32 aidr; } = 40 bytes.
static const uint32_t SHIM_IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;
static const uint32_t SHIM_IOMMU_HW_INFO_ARM_SMMUV3_SIZE = 40;
static const uint32_t SHIM_IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17;
static const uint64_t SHIM_IOMMU_HW_CAP_DIRTY_TRACKING = IOMMU_HW_CAP_DIRTY_TRACKING;

// --- struct iommu_hw_info_vtd field offsets (flags, cap_reg, ecap_reg) ---
static const size_t SHIM_IOMMU_HW_INFO_VTD_SIZE = sizeof(struct iommu_hw_info_vtd);
static const size_t SHIM_IOMMU_HW_INFO_VTD_FLAGS = offsetof(struct iommu_hw_info_vtd, flags);
static const size_t SHIM_IOMMU_HW_INFO_VTD_CAP_REG = offsetof(struct iommu_hw_info_vtd, cap_reg);
static const size_t SHIM_IOMMU_HW_INFO_VTD_ECAP_REG = offsetof(struct iommu_hw_info_vtd, ecap_reg);
// VT-d spec 4.0, section 11.4.3 Extended Capability Register: bit 7 SC (snoop control).
static const uint64_t SHIM_VTD_ECAP_SC = 1ULL << 7;

// --- VFIO device cdev ioctls (all _IO(';', 100 + n), linux/vfio.h) ---
static const unsigned long SHIM_VFIO_DEVICE_GET_INFO = VFIO_DEVICE_GET_INFO;
static const unsigned long SHIM_VFIO_DEVICE_GET_REGION_INFO = VFIO_DEVICE_GET_REGION_INFO;
static const unsigned long SHIM_VFIO_DEVICE_GET_IRQ_INFO = VFIO_DEVICE_GET_IRQ_INFO;
static const unsigned long SHIM_VFIO_DEVICE_SET_IRQS = VFIO_DEVICE_SET_IRQS;
static const unsigned long SHIM_VFIO_DEVICE_RESET = VFIO_DEVICE_RESET;
static const unsigned long SHIM_VFIO_DEVICE_PCI_HOT_RESET = VFIO_DEVICE_PCI_HOT_RESET;
static const unsigned long SHIM_VFIO_DEVICE_BIND_IOMMUFD = VFIO_DEVICE_BIND_IOMMUFD;
static const unsigned long SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT = VFIO_DEVICE_ATTACH_IOMMUFD_PT;
static const unsigned long SHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT = VFIO_DEVICE_DETACH_IOMMUFD_PT;

// --- VFIO flags ---
static const uint32_t SHIM_VFIO_DEVICE_FLAGS_RESET = VFIO_DEVICE_FLAGS_RESET;
static const uint32_t SHIM_VFIO_DEVICE_FLAGS_PCI = VFIO_DEVICE_FLAGS_PCI;
static const uint32_t SHIM_VFIO_DEVICE_FLAGS_CAPS = VFIO_DEVICE_FLAGS_CAPS;
static const uint32_t SHIM_VFIO_REGION_INFO_FLAG_READ = VFIO_REGION_INFO_FLAG_READ;
static const uint32_t SHIM_VFIO_REGION_INFO_FLAG_WRITE = VFIO_REGION_INFO_FLAG_WRITE;
static const uint32_t SHIM_VFIO_REGION_INFO_FLAG_MMAP = VFIO_REGION_INFO_FLAG_MMAP;
static const uint32_t SHIM_VFIO_REGION_INFO_FLAG_CAPS = VFIO_REGION_INFO_FLAG_CAPS;
static const uint16_t SHIM_VFIO_REGION_INFO_CAP_SPARSE_MMAP = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
static const uint16_t SHIM_VFIO_REGION_INFO_CAP_TYPE = VFIO_REGION_INFO_CAP_TYPE;
static const uint16_t SHIM_VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = VFIO_REGION_INFO_CAP_MSIX_MAPPABLE;
static const uint32_t SHIM_VFIO_IRQ_INFO_EVENTFD = VFIO_IRQ_INFO_EVENTFD;
static const uint32_t SHIM_VFIO_IRQ_INFO_MASKABLE = VFIO_IRQ_INFO_MASKABLE;
static const uint32_t SHIM_VFIO_IRQ_INFO_AUTOMASKED = VFIO_IRQ_INFO_AUTOMASKED;
static const uint32_t SHIM_VFIO_IRQ_INFO_NORESIZE = VFIO_IRQ_INFO_NORESIZE;
static const uint32_t SHIM_VFIO_IRQ_SET_DATA_NONE = VFIO_IRQ_SET_DATA_NONE;
static const uint32_t SHIM_VFIO_IRQ_SET_DATA_BOOL = VFIO_IRQ_SET_DATA_BOOL;
static const uint32_t SHIM_VFIO_IRQ_SET_DATA_EVENTFD = VFIO_IRQ_SET_DATA_EVENTFD;
static const uint32_t SHIM_VFIO_IRQ_SET_ACTION_MASK = VFIO_IRQ_SET_ACTION_MASK;
static const uint32_t SHIM_VFIO_IRQ_SET_ACTION_UNMASK = VFIO_IRQ_SET_ACTION_UNMASK;
static const uint32_t SHIM_VFIO_IRQ_SET_ACTION_TRIGGER = VFIO_IRQ_SET_ACTION_TRIGGER;
static const uint32_t SHIM_VFIO_PCI_BAR0_REGION_INDEX = VFIO_PCI_BAR0_REGION_INDEX;
static const uint32_t SHIM_VFIO_PCI_ROM_REGION_INDEX = VFIO_PCI_ROM_REGION_INDEX;
static const uint32_t SHIM_VFIO_PCI_CONFIG_REGION_INDEX = VFIO_PCI_CONFIG_REGION_INDEX;
static const uint32_t SHIM_VFIO_PCI_INTX_IRQ_INDEX = VFIO_PCI_INTX_IRQ_INDEX;
static const uint32_t SHIM_VFIO_PCI_MSI_IRQ_INDEX = VFIO_PCI_MSI_IRQ_INDEX;
static const uint32_t SHIM_VFIO_PCI_MSIX_IRQ_INDEX = VFIO_PCI_MSIX_IRQ_INDEX;
static const uint32_t SHIM_VFIO_PCI_ERR_IRQ_INDEX = VFIO_PCI_ERR_IRQ_INDEX;
static const uint32_t SHIM_VFIO_PCI_REQ_IRQ_INDEX = VFIO_PCI_REQ_IRQ_INDEX;

// --- struct sizes (argsz / size fields are set from these) ---
static const uint32_t SHIM_SIZEOF_IOMMU_DESTROY = sizeof(struct iommu_destroy);
static const uint32_t SHIM_SIZEOF_IOMMU_IOAS_ALLOC = sizeof(struct iommu_ioas_alloc);
static const uint32_t SHIM_SIZEOF_IOMMU_IOVA_RANGE = sizeof(struct iommu_iova_range);
static const uint32_t SHIM_SIZEOF_IOMMU_IOAS_IOVA_RANGES = sizeof(struct iommu_ioas_iova_ranges);
static const uint32_t SHIM_SIZEOF_IOMMU_IOAS_MAP = sizeof(struct iommu_ioas_map);
static const uint32_t SHIM_SIZEOF_IOMMU_IOAS_UNMAP = sizeof(struct iommu_ioas_unmap);
static const uint32_t SHIM_SIZEOF_IOMMU_OPTION = sizeof(struct iommu_option);
static const uint32_t SHIM_SIZEOF_IOMMU_HWPT_ALLOC = sizeof(struct iommu_hwpt_alloc);
static const uint32_t SHIM_SIZEOF_IOMMU_HW_INFO = sizeof(struct iommu_hw_info);
static const uint32_t SHIM_SIZEOF_VFIO_DEVICE_BIND_IOMMUFD = sizeof(struct vfio_device_bind_iommufd);
static const uint32_t SHIM_SIZEOF_VFIO_DEVICE_ATTACH_IOMMUFD_PT = sizeof(struct vfio_device_attach_iommufd_pt);
static const uint32_t SHIM_SIZEOF_VFIO_DEVICE_DETACH_IOMMUFD_PT = sizeof(struct vfio_device_detach_iommufd_pt);
static const uint32_t SHIM_SIZEOF_VFIO_DEVICE_INFO = sizeof(struct vfio_device_info);
static const uint32_t SHIM_SIZEOF_VFIO_REGION_INFO = sizeof(struct vfio_region_info);
static const uint32_t SHIM_SIZEOF_VFIO_IRQ_INFO = sizeof(struct vfio_irq_info);
static const uint32_t SHIM_SIZEOF_VFIO_IRQ_SET = sizeof(struct vfio_irq_set);
// The header of struct vfio_pci_hot_reset (argsz, flags, count); group_fds[] follows.
static const uint32_t SHIM_SIZEOF_VFIO_PCI_HOT_RESET = sizeof(struct vfio_pci_hot_reset);
static const uint32_t SHIM_SIZEOF_VFIO_INFO_CAP_HEADER = sizeof(struct vfio_info_cap_header);
static const uint32_t SHIM_SIZEOF_VFIO_REGION_INFO_CAP_SPARSE_MMAP = sizeof(struct vfio_region_info_cap_sparse_mmap);
static const uint32_t SHIM_SIZEOF_VFIO_REGION_SPARSE_MMAP_AREA = sizeof(struct vfio_region_sparse_mmap_area);

#endif
