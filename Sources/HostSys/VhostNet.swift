import CShim
import Glibc

/// The vhost-net kernel data path (/dev/vhost-net, linux/vhost.h): the host
/// kernel moves a virtio-net device's frames between its virtqueues in guest
/// RAM and a TAP, without the VMM. The VMM tells it where guest RAM is
/// (`setMemoryTable`), where each ring is (`setRing`), which eventfd the
/// guest kicks (the queue's KVM ioeventfd) and which one it signals when the
/// driver should be interrupted; then attaches the TAP (`setBackend`).
///
/// One instance per NIC; the process that opened it owns it (SET_OWNER).
/// Calls are not made concurrently (the NIC's activation and reset).
public final class VhostNet: Sendable {
    public static let devicePath = "/dev/vhost-net"
    /// Queues of one vhost-net instance: receive (0) and transmit (1).
    public static let queueCount = 2
    private let fd: FileDescriptor
    /// What the kernel's vhost-net supports (VHOST_GET_FEATURES): virtio
    /// feature bits plus VHOST_NET_F_VIRTIO_NET_HDR (27).
    public let supportedFeatures: UInt64

    /// Opens /dev/vhost-net and becomes its owner. Errors name the cause:
    /// no vhost-net in the kernel (modprobe vhost_net), no permission.
    public init() throws {
        let raw = retryingEINTR { Int(Glibc.open(Self.devicePath, O_RDWR | O_CLOEXEC)) }
        guard raw >= 0 else {
            let e = shim_errno()
            switch e {
            case ENOENT, ENODEV, ENXIO:
                throw SysError(errno: e, operation: "\(Self.devicePath) missing (modprobe vhost_net)")
            case EACCES, EPERM:
                throw SysError(errno: e, operation: "\(Self.devicePath): no permission (needs read-write access)")
            default:
                throw SysError(errno: e, operation: "open \(Self.devicePath)")
            }
        }
        fd = FileDescriptor(adopting: Int32(raw))
        guard shim_ioctl_int(fd.raw, SHIM_VHOST_SET_OWNER, 0) == 0 else { throw SysError.last("VHOST_SET_OWNER") }
        var features: UInt64 = 0
        guard shim_ioctl_ptr(fd.raw, SHIM_VHOST_GET_FEATURES, &features) == 0 else {
            throw SysError.last("VHOST_GET_FEATURES")
        }
        supportedFeatures = features
    }

    /// The virtio features the guest and we agreed on that concern the rings
    /// and the header (VERSION_1, EVENT_IDX, INDIRECT_DESC, MRG_RXBUF), as
    /// far as vhost supports them.
    public func setFeatures(_ features: UInt64) throws {
        var f = features & supportedFeatures
        guard shim_ioctl_ptr(fd.raw, SHIM_VHOST_SET_FEATURES, &f) == 0 else { throw SysError.last("VHOST_SET_FEATURES") }
    }

    /// Guest RAM: each region's guest physical base, size and host address
    /// (all 4 KiB-aligned). Ring and buffer addresses are looked up here.
    public func setMemoryTable(_ regions: [(guest: UInt64, size: UInt64, host: UInt64)]) throws {
        // struct vhost_memory: u32 nregions, u32 padding, then the regions
        // (struct vhost_memory_region: guest_phys_addr, memory_size,
        // userspace_addr, flags_padding; 32 bytes each).
        let header = MemoryLayout<vhost_memory>.size
        let entry = MemoryLayout<vhost_memory_region>.stride
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: header + entry * regions.count, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.storeBytes(of: UInt32(regions.count), toByteOffset: 0, as: UInt32.self)
        for (i, r) in regions.enumerated() {
            let region = vhost_memory_region(guest_phys_addr: r.guest, memory_size: r.size, userspace_addr: r.host,
                                             flags_padding: 0)
            buffer.storeBytes(of: region, toByteOffset: header + entry * i, as: vhost_memory_region.self)
        }
        guard shim_ioctl_ptr(fd.raw, SHIM_VHOST_SET_MEM_TABLE, buffer.baseAddress) == 0 else {
            throw SysError.last("VHOST_SET_MEM_TABLE (\(regions.count) regions)")
        }
    }

    /// Ring `index`: `size` entries, the next available index to take
    /// (`base`), and the host addresses of its descriptor table, available
    /// ring and used ring.
    public func setRing(index: Int, size: UInt16, base: UInt16, descriptors: UInt64, available: UInt64,
                        used: UInt64) throws {
        var num = vhost_vring_state(index: UInt32(index), num: UInt32(size))
        guard shim_ioctl_ptr(fd.raw, SHIM_VHOST_SET_VRING_NUM, &num) == 0 else {
            throw SysError.last("VHOST_SET_VRING_NUM (queue \(index), \(size) entries)")
        }
        var start = vhost_vring_state(index: UInt32(index), num: UInt32(base))
        guard shim_ioctl_ptr(fd.raw, SHIM_VHOST_SET_VRING_BASE, &start) == 0 else {
            throw SysError.last("VHOST_SET_VRING_BASE (queue \(index))")
        }
        var addr = vhost_vring_addr(index: UInt32(index), flags: 0, desc_user_addr: descriptors,
                                    used_user_addr: used, avail_user_addr: available, log_guest_addr: 0)
        guard shim_ioctl_ptr(fd.raw, SHIM_VHOST_SET_VRING_ADDR, &addr) == 0 else {
            throw SysError.last("VHOST_SET_VRING_ADDR (queue \(index))")
        }
    }

    /// The eventfd the guest's notifications of ring `index` arrive on.
    public func setKick(index: Int, _ event: EventFD) throws {
        try setFile(SHIM_VHOST_SET_VRING_KICK, "VHOST_SET_VRING_KICK", index, event.fd.raw)
    }

    /// The eventfd vhost signals when the driver of ring `index` should get
    /// a used buffer notification.
    public func setCall(index: Int, _ event: EventFD) throws {
        try setFile(SHIM_VHOST_SET_VRING_CALL, "VHOST_SET_VRING_CALL", index, event.fd.raw)
    }

    /// Attaches ring `index` to the TAP (`tap`), or detaches it (nil), which
    /// stops vhost using the ring.
    public func setBackend(index: Int, tap: FileDescriptor?) throws {
        try setFile(SHIM_VHOST_NET_SET_BACKEND, "VHOST_NET_SET_BACKEND", index, tap?.raw ?? -1)
    }

    /// Stops ring `index` and returns the next available index it would
    /// have taken.
    @discardableResult
    public func ringBase(index: Int) throws -> UInt16 {
        var state = vhost_vring_state(index: UInt32(index), num: 0)
        guard shim_ioctl_ptr(fd.raw, SHIM_VHOST_GET_VRING_BASE, &state) == 0 else {
            throw SysError.last("VHOST_GET_VRING_BASE (queue \(index))")
        }
        return UInt16(truncatingIfNeeded: state.num)
    }

    private func setFile(_ request: UInt, _ name: String, _ index: Int, _ file: Int32) throws {
        var f = vhost_vring_file(index: UInt32(index), fd: file)
        guard shim_ioctl_ptr(fd.raw, request, &f) == 0 else { throw SysError.last("\(name) (queue \(index))") }
    }
}
