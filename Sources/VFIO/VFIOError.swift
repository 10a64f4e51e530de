import Glibc
import HostSys

/// Errors of the VFIO layer, each saying what the user can do about it.
public enum VFIOError: Error, CustomStringConvertible, Equatable {
    /// `/dev/iommu` does not exist.
    case iommufdMissing(path: String)
    /// A device node exists but we may not open it.
    case permissionDenied(path: String)
    /// `/dev/vfio/devices/vfioN` does not exist.
    case cdevMissing(path: String)
    case openFailed(path: String, SysError)
    /// An ioctl failed: the errno and what we were doing.
    case ioctl(SysError)
    /// The kernel's reply does not make sense (bad capability chain, sizes).
    case malformedReply(String)
    /// The caller passed something the uAPI cannot express.
    case invalidArgument(String)
    /// No `/sys/bus/pci/devices/BDF`.
    case deviceNotFound(bdf: String)
    /// The device is not bound to vfio-pci; `commands` rebind it.
    case notBoundToVFIO(bdf: String, driver: String?, commands: [String])
    /// Another member of the IOMMU group is bound to a host driver.
    case groupNotViable(bdf: String, group: Int, blockers: [GroupMember])
    /// The device has no IOMMU group: no IOMMU, or it is disabled.
    case noIOMMUGroup(bdf: String)
    /// Bound to vfio-pci but no `vfio-dev/vfioN`: the kernel lacks VFIO_DEVICE_CDEV.
    case noCdev(bdf: String)

    public var description: String {
        switch self {
        case let .iommufdMissing(p):
            return "\(p) does not exist: the kernel has no iommufd (CONFIG_IOMMUFD; Debian's kernels lack it, build one with CONFIG_IOMMUFD=y and CONFIG_VFIO_DEVICE_CDEV=y), or the iommufd module is not loaded (modprobe iommufd)"
        case let .permissionDenied(p):
            return "no permission to open \(p): run as root, or give your user access to it (chown/udev rule)"
        case let .cdevMissing(p):
            return "\(p) does not exist: bind the device to vfio-pci on a kernel with CONFIG_VFIO_DEVICE_CDEV=y"
        case let .openFailed(p, e):
            return "cannot open \(p): \(e)"
        case let .ioctl(e):
            // "STEP on PATH: ENAME (what strerror says)": the errno first, as
            // the kernel's documentation of each ioctl lists them by name.
            return "\(e.operation): \(e.errnoName) (\(String(cString: strerror(e.errno))))"
        case let .malformedReply(s):
            return "the kernel's reply makes no sense: \(s)"
        case let .invalidArgument(s):
            return "invalid argument: \(s)"
        case let .deviceNotFound(bdf):
            return "no PCI device \(bdf) on this host (see `swiftvmm devices`)"
        case let .notBoundToVFIO(bdf, driver, commands):
            let now = driver.map { "bound to \($0)" } ?? "not bound to any driver"
            return "\(bdf) is \(now), not vfio-pci; as root run:\n  " + commands.joined(separator: "\n  ")
        case let .groupNotViable(bdf, group, blockers):
            let list = blockers.map { "\($0.bdf) (\($0.driver ?? "no driver"))" }.joined(separator: ", ")
            return "IOMMU group \(group) of \(bdf) is not viable: \(list) \(blockers.count == 1 ? "is" : "are") bound to a host driver; bind \(blockers.count == 1 ? "it" : "them") to vfio-pci too (or unbind), since a group is assigned whole"
        case let .noIOMMUGroup(bdf):
            return "\(bdf) has no IOMMU group: this host has no IOMMU enabled (boot with intel_iommu=on or amd_iommu=on, enable VT-d/AMD-Vi in firmware); iommu=pt still gives groups"
        case let .noCdev(bdf):
            return "\(bdf) is bound to vfio-pci but has no vfio-dev/vfioN: the kernel lacks CONFIG_VFIO_DEVICE_CDEV (and usually CONFIG_IOMMUFD)"
        }
    }
}

@inline(__always)
@discardableResult
func vfioCall<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as SysError { throw VFIOError.ioctl(e) }
}
