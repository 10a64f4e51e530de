// Layouts of the iommufd / VFIO uAPI structs that SwiftVMM builds byte by
// byte (Sources/VFIO/UAPI.swift). A header whose layout differs stops the
// build here rather than corrupting an ioctl argument at run time.
#include "cshim.h"

_Static_assert(sizeof(struct iommu_destroy) == 8, "iommu_destroy");
_Static_assert(sizeof(struct iommu_ioas_alloc) == 12, "iommu_ioas_alloc");
_Static_assert(sizeof(struct iommu_iova_range) == 16, "iommu_iova_range");
_Static_assert(sizeof(struct iommu_ioas_iova_ranges) == 32, "iommu_ioas_iova_ranges");
_Static_assert(offsetof(struct iommu_ioas_iova_ranges, allowed_iovas) == 16, "allowed_iovas");
_Static_assert(offsetof(struct iommu_ioas_iova_ranges, out_iova_alignment) == 24, "out_iova_alignment");
_Static_assert(sizeof(struct iommu_ioas_map) == 40, "iommu_ioas_map");
_Static_assert(offsetof(struct iommu_ioas_map, user_va) == 16, "user_va");
_Static_assert(offsetof(struct iommu_ioas_map, iova) == 32, "iova");
_Static_assert(sizeof(struct iommu_ioas_unmap) == 24, "iommu_ioas_unmap");
_Static_assert(sizeof(struct iommu_option) == 24, "iommu_option");
_Static_assert(sizeof(struct iommu_hwpt_alloc) == 48, "iommu_hwpt_alloc");
_Static_assert(offsetof(struct iommu_hwpt_alloc, out_hwpt_id) == 16, "out_hwpt_id");
_Static_assert(sizeof(struct iommu_hw_info) == 40, "iommu_hw_info");
_Static_assert(offsetof(struct iommu_hw_info, data_uptr) == 16, "data_uptr");
_Static_assert(offsetof(struct iommu_hw_info, out_data_type) == 24, "out_data_type");
_Static_assert(offsetof(struct iommu_hw_info, out_max_pasid_log2) == 28, "out_max_pasid_log2");
_Static_assert(offsetof(struct iommu_hw_info, out_capabilities) == 32, "out_capabilities");
_Static_assert(sizeof(struct iommu_hw_info_vtd) == 24, "iommu_hw_info_vtd");
_Static_assert(offsetof(struct iommu_hw_info_vtd, cap_reg) == 8, "cap_reg");
_Static_assert(offsetof(struct iommu_hw_info_vtd, ecap_reg) == 16, "ecap_reg");

_Static_assert(sizeof(struct vfio_device_bind_iommufd) == 16, "vfio_device_bind_iommufd");
_Static_assert(sizeof(struct vfio_device_attach_iommufd_pt) == 12, "vfio_device_attach_iommufd_pt");
_Static_assert(sizeof(struct vfio_device_detach_iommufd_pt) == 8, "vfio_device_detach_iommufd_pt");
_Static_assert(sizeof(struct vfio_device_info) == 24, "vfio_device_info");
_Static_assert(offsetof(struct vfio_device_info, cap_offset) == 16, "device cap_offset");
_Static_assert(sizeof(struct vfio_region_info) == 32, "vfio_region_info");
_Static_assert(offsetof(struct vfio_region_info, cap_offset) == 12, "region cap_offset");
_Static_assert(offsetof(struct vfio_region_info, size) == 16, "region size");
_Static_assert(offsetof(struct vfio_region_info, offset) == 24, "region offset");
_Static_assert(sizeof(struct vfio_irq_info) == 16, "vfio_irq_info");
_Static_assert(sizeof(struct vfio_irq_set) == 20, "vfio_irq_set");
_Static_assert(offsetof(struct vfio_irq_set, data) == 20, "irq_set data");
_Static_assert(sizeof(struct vfio_pci_hot_reset) == 12, "vfio_pci_hot_reset");
_Static_assert(offsetof(struct vfio_pci_hot_reset, count) == 8, "hot_reset count");
_Static_assert(sizeof(struct vfio_info_cap_header) == 8, "vfio_info_cap_header");
_Static_assert(sizeof(struct vfio_region_info_cap_sparse_mmap) == 16, "cap_sparse_mmap");
_Static_assert(sizeof(struct vfio_region_sparse_mmap_area) == 16, "sparse_mmap_area");
