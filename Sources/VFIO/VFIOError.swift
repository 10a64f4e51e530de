import Bits
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
    /// A path given as a device cdev has no `/sys/class/vfio-dev/vfioN/device`.
    case notAVFIOCdev(path: String)
    /// Guest RAM `guestRange` is not inside the IOVA ranges the IOMMU allows
    /// (`allowed`) for the attached `devices`.
    case iovaConflict(guestRange: ClosedRange<UInt64>, allowed: [ClosedRange<UInt64>], devices: [String])
    /// `IOMMU_IOAS_MAP` of guest RAM `guestRange` failed (what was mapped before is unmapped again).
    case guestRAMMapFailed(guestRange: ClosedRange<UInt64>, SysError)
    /// Another process has the device (its cdev or legacy group) open; `holders` are "pid N (comm)".
    case deviceBusy(bdf: String, holders: [String])
    /// Attaching failed with EPERM: the IOMMU cannot remap interrupts.
    case noInterruptRemapping(bdf: String)
    /// `mapRegion` asked for something outside the region's mmappable areas.
    case regionNotMappable(bdf: String, index: UInt32, offset: UInt64, length: UInt64, areas: [Range<UInt64>])
    /// The mmap of a mappable region failed.
    case regionMapFailed(bdf: String, index: UInt32, SysError)
    /// The device was used before `bindAndAttach` or after `close`.
    case deviceNotReady(bdf: String, String)
    /// A guest-domain map (or an attach's replay) of `size` bytes would pin
    /// more than `limit` bytes of guest RAM for the guest domains' IOASes
    /// (`pinned` are pinned now); nothing was mapped.
    case pinLimitExceeded(domain: UInt32, size: UInt64, pinned: UInt64, limit: UInt64)
    /// A new guest domain needs an IOAS and `limit` guest domains have one already.
    case tooManyGuestDomains(domain: UInt32, limit: Int)
    /// `GuestDomains.free` of a domain that `devices` are still attached to.
    case guestDomainInUse(domain: UInt32, devices: [String])
    /// `GuestDomains` used after `close`.
    case guestDomainsClosed

    public var description: String {
        switch self {
        case let .iommufdMissing(p):
            return "\(p) does not exist: the kernel has no iommufd (CONFIG_IOMMUFD; Debian's kernels lack it, build one with CONFIG_IOMMUFD=y and CONFIG_VFIO_DEVICE_CDEV=y), or the iommufd module is not loaded (modprobe iommufd)"
        case let .permissionDenied(p):
            return "no permission to open \(p): run as root, give your user access to it (chown/udev rule), or have a launcher open it and pass the descriptor (--iommufd fd:N, device = \"fd:N\"; see README, \"Running without root\")"
        case let .cdevMissing(p):
            return "\(p) does not exist: bind the device to vfio-pci on a kernel with CONFIG_VFIO_DEVICE_CDEV=y"
        case let .openFailed(p, e):
            return "cannot open \(p): \(e)"
        case let .ioctl(e):
            // "STEP on PATH: ENAME (what strerror says)": the errno first, as
            // the kernel's documentation of each ioctl lists them by name.
            return "\(e.operation): \(e.errnoName) (\(e.message))"
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
        case let .notAVFIOCdev(p):
            if PassedDescriptor.isPassed(p) {
                return "\(p) is not a VFIO device cdev (its device number has no vfio-dev entry in /sys/dev/char): the launcher must pass an open /dev/vfio/devices/vfioN of a device bound to vfio-pci"
            }
            return "\(p) is not a VFIO device cdev (no /sys/class/vfio-dev/<name>/device): give /dev/vfio/devices/vfioN of a device bound to vfio-pci, or its PCI address (see `swiftvmm devices`)"
        case let .iovaConflict(guestRange, allowed, devices):
            return IOMMUContext.conflictMessage(guestRange: guestRange, allowed: allowed, devices: devices)
        case let .guestRAMMapFailed(r, e):
            let what = "cannot map guest RAM \(hexRange(r)) for device DMA (\(e.operation): \(e.errnoName))"
            switch e.errno {
            case Errno.ENOMEM, Errno.EAGAIN:
                return "\(what): cannot pin guest RAM for DMA: raise RLIMIT_MEMLOCK (ulimit -l, or LimitMEMLOCK= for a service) to at least the guest's memory, or run as root"
            case Errno.EPERM, Errno.EACCES:
                return "\(what): pinning guest RAM needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK: raise ulimit -l, or run as root"
            case Errno.EINVAL, Errno.ENOENT, Errno.ERANGE:
                return "\(what): the range is not inside the IOVA ranges the IOMMU allows (a reserved region, or above its address width); use less guest memory (machine.memory)"
            default:
                return "\(what): \(e.message)"
            }
        case let .deviceBusy(bdf, holders):
            let who: String
            switch holders.count {
            case 0: who = "another process (which one is not visible to us: run `sudo fuser -v /dev/vfio/devices/* /dev/vfio/[0-9]*`)"
            case 1: who = "another process, \(holders[0]),"
            default: who = "other processes, \(holders.joined(separator: ", ")),"
            }
            return "\(bdf) is in use by \(who) which has its VFIO cdev or group open: stop \(holders.count > 1 ? "them" : "it"), or pick another device"
        case let .noInterruptRemapping(bdf):
            return "cannot attach \(bdf) to the IOMMU (EPERM): the IOMMU has no interrupt remapping; iommufd refuses such devices unless iommufd.allow_unsafe_interrupts=1 (unsafe: the device could inject arbitrary interrupts). Enable interrupt remapping (intremap=on, x2APIC/IR in firmware), or as root: echo 1 > /sys/module/iommufd/parameters/allow_unsafe_interrupts"
        case let .regionNotMappable(bdf, index, offset, length, areas):
            let asked = "\(AssignedVFIODevice.regionName(index)) of \(bdf): \(hex(length)) bytes at \(hex(offset))"
            if areas.isEmpty {
                return "\(asked) cannot be mmapped: the region is not mappable (no VFIO_REGION_INFO_FLAG_MMAP); trap its accesses with readRegion/writeRegion instead"
            }
            let list = areas.map { "\(hex($0.lowerBound))-\(hex($0.upperBound))" }.joined(separator: ", ")
            return "\(asked) cannot be mmapped: it must be page aligned and lie inside one mappable area (\(list)); trap the rest with readRegion/writeRegion"
        case let .regionMapFailed(bdf, index, e):
            return "cannot mmap \(AssignedVFIODevice.regionName(index)) of \(bdf): \(e); the BAR may be disabled on the host (check `lspci -vv -s \(bdf)`), or the address space is exhausted"
        case let .deviceNotReady(bdf, s):
            return "\(bdf): \(s)"
        case let .pinLimitExceeded(domain, size, pinned, limit):
            return "guest IOMMU domain \(domain): mapping \(hex(size)) bytes would pin more guest RAM for assigned devices than the limit of \(hex(limit)) bytes (\(hex(pinned)) pinned now by the guest domains); nothing was mapped. The guest maps more than its RAM through the vIOMMU: unmap first, or raise the limit"
        case let .tooManyGuestDomains(domain, limit):
            return "guest IOMMU domain \(domain): an assigned device cannot join it, the VM already has \(limit) guest domains with assigned devices (the limit); free one first"
        case let .guestDomainInUse(domain, devices):
            return "guest IOMMU domain \(domain) cannot be freed: \(devices.joined(separator: ", ")) \(devices.count == 1 ? "is" : "are") still attached to it; move \(devices.count == 1 ? "it" : "them") to another domain (or detach) first"
        case .guestDomainsClosed:
            return "the guest IOMMU domains are closed (the VM is shutting down)"
        }
    }
}

@inline(__always)
@discardableResult
func vfioCall<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as SysError { throw VFIOError.ioctl(e) }
}
