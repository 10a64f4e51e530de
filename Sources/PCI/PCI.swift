// PCI layer.
