import Bits
import CShim
import HostSys
import Synchronization

/// `VFIO_DEVICE_GET_INFO`'s reply.
public struct VFIODeviceInfo: Equatable, Sendable {
    public let flags: UInt32
    public let numRegions: UInt32
    public let numIRQs: UInt32

    public var isPCI: Bool { flags & SHIM_VFIO_DEVICE_FLAGS_PCI != 0 }
    public var supportsReset: Bool { flags & SHIM_VFIO_DEVICE_FLAGS_RESET != 0 }
}

/// `VFIO_DEVICE_GET_IRQ_INFO`'s reply.
public struct VFIOIRQInfo: Equatable, Sendable {
    public let index: UInt32
    public let flags: UInt32
    public let count: UInt32

    public var supportsEventFD: Bool { flags & SHIM_VFIO_IRQ_INFO_EVENTFD != 0 }
    public var isMaskable: Bool { flags & SHIM_VFIO_IRQ_INFO_MASKABLE != 0 }
    /// Level-triggered (INTx): the host masks it on delivery until unmasked.
    public var isAutomasked: Bool { flags & SHIM_VFIO_IRQ_INFO_AUTOMASKED != 0 }
}

/// The vfio-pci interrupt kinds (`VFIO_PCI_*_IRQ_INDEX`).
public enum VFIOIRQIndex: Hashable, CaseIterable, Sendable {
    /// `request`: vfio-pci's "give the device back" notification (the host is
    /// removing or unbinding it), not an interrupt of the device.
    case intx, msi, msix, request
    public var rawValue: UInt32 {
        switch self {
        case .intx: return SHIM_VFIO_PCI_INTX_IRQ_INDEX
        case .msi: return SHIM_VFIO_PCI_MSI_IRQ_INDEX
        case .msix: return SHIM_VFIO_PCI_MSIX_IRQ_INDEX
        case .request: return SHIM_VFIO_PCI_REQ_IRQ_INDEX
        }
    }
}

/// The action of a `VFIO_DEVICE_SET_IRQS`.
public enum VFIOIRQAction: Sendable {
    case mask, unmask, trigger
    var flag: UInt32 {
        switch self {
        case .mask: return SHIM_VFIO_IRQ_SET_ACTION_MASK
        case .unmask: return SHIM_VFIO_IRQ_SET_ACTION_UNMASK
        case .trigger: return SHIM_VFIO_IRQ_SET_ACTION_TRIGGER
        }
    }
}

/// The data of a `VFIO_DEVICE_SET_IRQS`.
public enum VFIOIRQData: Sendable, Equatable {
    /// Do the action once on `count` vectors (or, for trigger with count 0, disable).
    case none(count: UInt32)
    case bool([Bool])
    /// One eventfd per vector; -1 leaves that vector without one.
    case eventfds([Int32])
}

/// A VFIO device opened through its cdev (`/dev/vfio/devices/vfioN`), the
/// iommufd way: bind it to an iommufd, attach it to an IOAS, then use it.
public final class VFIODeviceCdev: Sendable {
    public let performer: IOCTLPerformer
    public let path: String
    /// The device id iommufd gave it at bind time.
    public var deviceID: UInt32? { boundID.withLock { $0 } }
    private let boundID = Mutex<UInt32?>(nil)
    /// How error messages name the device: "BDF (path)" when the PCI address
    /// is known, else the path.
    public let label: String

    public init(performer: IOCTLPerformer, path: String = "(fake)", bdf: String? = nil) {
        self.performer = performer
        self.path = path
        self.label = bdf.map { "\($0) (\(path))" } ?? path
    }

    /// Opens the cdev; the error says what is missing. `bdf` only names it in messages.
    public static func open(path: String, bdf: String? = nil) throws -> VFIODeviceCdev {
        do {
            return VFIODeviceCdev(performer: try FileDescriptorPerformer.open(path, purpose: "the VFIO cdev of \(bdf ?? "a device")"), path: path, bdf: bdf)
        } catch let e as SysError {
            switch e.errno {
            case Errno.ENOENT: throw VFIOError.cdevMissing(path: path)
            case Errno.EACCES, Errno.EPERM: throw VFIOError.permissionDenied(path: path)
            default: throw VFIOError.openFailed(path: path, e)
            }
        }
    }

    /// Binds the device to `iommufd`; returns (and remembers) its device id.
    /// DMA is blocked until the device is attached to an IOAS.
    /// The corresponding ioctl is `VFIO_DEVICE_BIND_IOMMUFD`.
    @discardableResult
    public func bind(to iommufd: IOMMUFD) throws -> UInt32 {
        var b = vfio_device_bind_iommufd()
        b.argsz = SHIM_SIZEOF_VFIO_DEVICE_BIND_IOMMUFD
        b.iommufd = iommufd.performer.descriptor
        try performer.call(SHIM_VFIO_DEVICE_BIND_IOMMUFD, &b, "VFIO_DEVICE_BIND_IOMMUFD on \(label)")
        boundID.withLock { $0 = b.out_devid }
        return b.out_devid
    }

    /// Attaches the device to IOAS or HWPT `ptID`; returns the page table it
    /// ended up on (for an IOAS, the automatic HWPT the kernel made).
    /// The corresponding ioctl is `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    @discardableResult
    public func attach(ptID: UInt32) throws -> UInt32 {
        var a = vfio_device_attach_iommufd_pt()
        a.argsz = SHIM_SIZEOF_VFIO_DEVICE_ATTACH_IOMMUFD_PT
        a.pt_id = ptID
        try performer.call(SHIM_VFIO_DEVICE_ATTACH_IOMMUFD_PT, &a, "VFIO_DEVICE_ATTACH_IOMMUFD_PT on \(label) to \(ptID)")
        return a.pt_id
    }

    /// Detaches from the current page table. The corresponding ioctl is `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    public func detach() throws {
        var d = vfio_device_detach_iommufd_pt()
        d.argsz = SHIM_SIZEOF_VFIO_DEVICE_DETACH_IOMMUFD_PT
        try performer.call(SHIM_VFIO_DEVICE_DETACH_IOMMUFD_PT, &d, "VFIO_DEVICE_DETACH_IOMMUFD_PT on \(label)")
    }

    /// Flags and the number of regions and IRQ kinds. The corresponding ioctl is `VFIO_DEVICE_GET_INFO`.
    public func info() throws -> VFIODeviceInfo {
        var i = vfio_device_info()
        i.argsz = SHIM_SIZEOF_VFIO_DEVICE_INFO
        try performer.call(SHIM_VFIO_DEVICE_GET_INFO, &i, "VFIO_DEVICE_GET_INFO on \(label)")
        return VFIODeviceInfo(flags: i.flags, numRegions: i.num_regions, numIRQs: i.num_irqs)
    }

    /// Most bytes of region info (with capabilities) we accept from the kernel.
    static let maxRegionInfoSize: UInt32 = 64 * 1024

    /// Region `index` with its capability chain: asked once with the fixed
    /// struct, and again with the argsz the kernel asks for when the
    /// capabilities do not fit. The corresponding ioctl is `VFIO_DEVICE_GET_REGION_INFO`.
    public func regionInfo(_ index: UInt32) throws -> VFIORegionInfo {
        let name = "VFIO_DEVICE_GET_REGION_INFO on \(label) region \(index)"
        var size = SHIM_SIZEOF_VFIO_REGION_INFO
        for _ in 0..<2 {
            var b = argszBuffer(Int(size))
            LE.put(index, into: &b, at: VFIORegionInfo.indexOffset)
            try performer.call(SHIM_VFIO_DEVICE_GET_REGION_INFO, bytes: &b, name)
            guard let wanted = LE.u32(b, 0) else { throw VFIOError.malformedReply("\(name): no argsz") }
            if wanted <= size { return try VFIORegionInfo.decode(b) }
            guard wanted <= Self.maxRegionInfoSize else {
                throw VFIOError.malformedReply("\(name): the kernel wants \(wanted) bytes")
            }
            size = wanted
        }
        throw VFIOError.malformedReply("\(name): argsz grew again on the second call")
    }

    /// The interrupt kind `index`. The corresponding ioctl is `VFIO_DEVICE_GET_IRQ_INFO`.
    public func irqInfo(_ index: UInt32) throws -> VFIOIRQInfo {
        var i = vfio_irq_info()
        i.argsz = SHIM_SIZEOF_VFIO_IRQ_INFO
        i.index = index
        try performer.call(SHIM_VFIO_DEVICE_GET_IRQ_INFO, &i, "VFIO_DEVICE_GET_IRQ_INFO on \(label) index \(index)")
        return VFIOIRQInfo(index: i.index, flags: i.flags, count: i.count)
    }

    /// The `struct vfio_irq_set` bytes for one call: header, then the data
    /// array; argsz covers both.
    static func irqSetBytes(index: UInt32, start: UInt32, action: VFIOIRQAction, data: VFIOIRQData) -> [UInt8] {
        let header = Int(SHIM_SIZEOF_VFIO_IRQ_SET)
        let kind: UInt32, count: UInt32, payload: [UInt8]
        switch data {
        case let .none(n):
            (kind, count, payload) = (SHIM_VFIO_IRQ_SET_DATA_NONE, n, [])
        case let .bool(v):
            (kind, count, payload) = (SHIM_VFIO_IRQ_SET_DATA_BOOL, UInt32(v.count), v.map { $0 ? 1 : 0 })
        case let .eventfds(fds):
            var p = [UInt8]()
            for fd in fds { withUnsafeBytes(of: fd.littleEndian) { p.append(contentsOf: $0) } }
            (kind, count, payload) = (SHIM_VFIO_IRQ_SET_DATA_EVENTFD, UInt32(fds.count), p)
        }
        var b = argszBuffer(header + payload.count)
        LE.put(kind | action.flag, into: &b, at: 4)
        LE.put(index, into: &b, at: 8)
        LE.put(start, into: &b, at: 12)
        LE.put(count, into: &b, at: 16)
        b.replaceSubrange(header..<b.count, with: payload)
        return b
    }

    /// Sets how vectors `start...` of interrupt kind `index` are signalled,
    /// masked or unmasked. The corresponding ioctl is `VFIO_DEVICE_SET_IRQS`.
    public func setIRQs(index: UInt32, start: UInt32 = 0, action: VFIOIRQAction, data: VFIOIRQData) throws {
        var b = Self.irqSetBytes(index: index, start: start, action: action, data: data)
        try performer.call(SHIM_VFIO_DEVICE_SET_IRQS, bytes: &b, "VFIO_DEVICE_SET_IRQS on \(label) index \(index)")
    }

    /// Signals MSI or MSI-X vector i through `eventfds[i]` (an irqfd of the VM).
    public func enable(_ kind: VFIOIRQIndex, eventfds: [Int32]) throws {
        try setIRQs(index: kind.rawValue, action: .trigger, data: .eventfds(eventfds))
    }

    /// Turns off every vector of `kind`.
    public func disable(_ kind: VFIOIRQIndex) throws {
        try setIRQs(index: kind.rawValue, action: .trigger, data: .none(count: 0))
    }

    /// INTx: `trigger` fires on the line; `resample`, when given, unmasks the
    /// line when signalled (pair it with a KVM resample irqfd so the guest's EOI
    /// unmasks without a VMM exit).
    public func enableINTx(trigger: Int32, resample: Int32? = nil) throws {
        try setIRQs(index: VFIOIRQIndex.intx.rawValue, action: .trigger, data: .eventfds([trigger]))
        if let resample {
            try setIRQs(index: VFIOIRQIndex.intx.rawValue, action: .unmask, data: .eventfds([resample]))
        }
    }

    /// Unmasks INTx once (after the guest handled the level interrupt).
    public func unmaskINTx() throws {
        try setIRQs(index: VFIOIRQIndex.intx.rawValue, action: .unmask, data: .none(count: 1))
    }

    /// A secondary bus (or slot) reset of the bus the device sits on, which
    /// resets every function there: the way to reset a device without FLR
    /// (QEMU prefers it to a PM reset too). For a cdev bound to an iommufd the
    /// group list is empty and the kernel checks that this iommufd owns every
    /// device the reset reaches (EPERM otherwise); a device on a root bus
    /// cannot be reset so (ENODEV). The corresponding ioctl is `VFIO_DEVICE_PCI_HOT_RESET`.
    public func hotReset() throws {
        var b = argszBuffer(Int(SHIM_SIZEOF_VFIO_PCI_HOT_RESET))  // flags 0, count 0
        try performer.call(SHIM_VFIO_DEVICE_PCI_HOT_RESET, bytes: &b, "VFIO_DEVICE_PCI_HOT_RESET on \(label)")
    }

    /// Function-level (or other) reset. The corresponding ioctl is `VFIO_DEVICE_RESET`.
    public func reset() throws {
        try vfioCall { try performer.ioctl(SHIM_VFIO_DEVICE_RESET, integer: 0, "VFIO_DEVICE_RESET on \(label)") }
    }

    /// Closes the device fd (which also unbinds it from the iommufd) when the
    /// performer owns one; a fake performer is left alone. Idempotent.
    public func close() {
        (performer as? FileDescriptorPerformer)?.fd.close()
        boundID.withLock { $0 = nil }
    }

    /// What the IOMMU behind this device reports; the device must be bound to
    /// `iommufd`. The corresponding ioctl is `IOMMU_GET_HW_INFO`.
    public func hardwareInfo(_ iommufd: IOMMUFD) throws -> IOMMUHardwareInfo {
        guard let deviceID else { throw VFIOError.invalidArgument("\(label) is not bound to an iommufd") }
        return try iommufd.hardwareInfo(deviceID: deviceID)
    }
}
