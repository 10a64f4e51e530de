/// The VM's kvm-vfio pseudo device, as the VFIO layer sees it: the set of
/// VFIO files (device cdev fds) the VM uses. KVM asks each file whether its
/// IOMMU enforces DMA coherency, and makes the guest's WBINVD a real flush
/// if one does not (see README.md, "WBINVD and DMA coherency").
///
/// VFIO does not depend on KVM: the VMM hands in KVM's device (it conforms
/// there), tests a fake. Implementations throw their own layer's errors.
public protocol KVMVFIODevice: AnyObject {
    /// Adds a VFIO file (`KVM_DEV_VFIO_FILE_ADD`).
    func addVFIOFile(_ file: Int32) throws
    /// Removes a VFIO file (`KVM_DEV_VFIO_FILE_DEL`).
    func deleteVFIOFile(_ file: Int32) throws
}

extension VFIODeviceCdev {
    /// Registers the device's fd with the VM's kvm-vfio device. For a cdev
    /// this must come before `bind(to:)`: the cdev picks up the VM at bind
    /// time (drivers/vfio/device_cdev.c).
    public func register(with kvm: KVMVFIODevice) throws {
        try kvm.addVFIOFile(performer.descriptor)
    }

    /// Unregisters the device's fd from the VM's kvm-vfio device.
    public func unregister(from kvm: KVMVFIODevice) throws {
        try kvm.deleteVFIOFile(performer.descriptor)
    }
}
