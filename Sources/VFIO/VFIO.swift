// VFIO / iommufd layer.
