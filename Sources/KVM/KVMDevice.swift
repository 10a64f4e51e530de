import CShim
import HostSys

/// A device KVM emulates in the kernel for one VM (the fd returned by
/// KVM_CREATE_DEVICE), driven through device attributes.
public final class KVMDevice: Sendable {
    /// The device types SwiftVMM creates (linux/kvm.h enum kvm_device_type).
    public enum Kind: Sendable {
        /// The kvm-vfio pseudo device: it learns the VM's VFIO files, so KVM
        /// can tell whether any assigned device does non-coherent DMA (and
        /// then make the guest's WBINVD a real flush).
        case vfio

        var type: UInt32 {
            switch self {
            case .vfio: return SHIM_KVM_DEV_TYPE_VFIO
            }
        }

        var name: String {
            switch self {
            case .vfio: return "kvm-vfio"
            }
        }
    }

    public let kind: Kind
    let fd: FileDescriptor

    init(kind: Kind, fd: FileDescriptor) {
        self.kind = kind
        self.fd = fd
    }

    /// Adds a VFIO file (a device cdev fd) to the kvm-vfio device; for a
    /// cdev this must come before the cdev is bound to an iommufd.
    /// The corresponding ioctl is `KVM_SET_DEVICE_ATTR` (`KVM_DEV_VFIO_FILE_ADD`).
    public func addVFIOFile(_ file: Int32) throws {
        try setVFIOFile(file, SHIM_KVM_DEV_VFIO_FILE_ADD, "ADD")
    }

    /// Removes a VFIO file from the kvm-vfio device.
    /// The corresponding ioctl is `KVM_SET_DEVICE_ATTR` (`KVM_DEV_VFIO_FILE_DEL`).
    public func deleteVFIOFile(_ file: Int32) throws {
        try setVFIOFile(file, SHIM_KVM_DEV_VFIO_FILE_DEL, "DEL")
    }

    /// The `struct kvm_device_attr` of a KVM_DEV_VFIO_FILE operation whose
    /// `__s32` fd argument is at `fdAddress`.
    static func vfioFileAttribute(_ operation: UInt64, fdAddress: UInt64) -> kvm_device_attr {
        var a = kvm_device_attr()
        a.group = SHIM_KVM_DEV_VFIO_FILE
        a.attr = operation
        a.addr = fdAddress
        return a
    }

    private func setVFIOFile(_ file: Int32, _ operation: UInt64, _ what: String) throws {
        var value = file
        try withUnsafeMutablePointer(to: &value) { p in
            // SAFETY: `p` points at an Int32 that lives until the ioctl returns.
            var a = Self.vfioFileAttribute(operation, fdAddress: UInt64(UInt(bitPattern: p)))
            try kvmCall { try fd.ioctl(SHIM_KVM_SET_DEVICE_ATTR, value: &a, "KVM_SET_DEVICE_ATTR KVM_DEV_VFIO_FILE_\(what) fd \(file)") }
        }
    }
}

extension VirtualMachine {
    /// Creates an in-kernel device of `kind` on this VM.
    /// The corresponding ioctl is `KVM_CREATE_DEVICE`.
    public func createDevice(_ kind: KVMDevice.Kind) throws -> KVMDevice {
        var c = kvm_create_device()
        c.type = kind.type
        try kvmCall { try fd.ioctl(SHIM_KVM_CREATE_DEVICE, value: &c, "KVM_CREATE_DEVICE \(kind.name)") }
        return KVMDevice(kind: kind, fd: FileDescriptor(adopting: Int32(bitPattern: c.fd)))
    }
}
