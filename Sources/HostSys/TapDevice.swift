import CShim
import Glibc

/// The TUN/TAP uAPI SwiftVMM uses. The request number and flags are macros in
/// `linux/if_tun.h` that Swift cannot import (and the C shim does not export),
/// so they are spelled out here; `NetTests` checks each against its literal.
public enum TunUAPI {
    /// `#define TUNSETIFF _IOW('T', 202, int)` (linux/if_tun.h):
    /// dir write (1) << 30 | sizeof(int) (4) << 16 | 'T' (0x54) << 8 | 202.
    public static let TUNSETIFF: UInt = 0x4004_54CA
    /// `#define TUNGETIFF _IOR('T', 210, unsigned int)` (linux/if_tun.h):
    /// dir read (2) << 30 | sizeof(unsigned int) (4) << 16 | 'T' << 8 | 210.
    public static let TUNGETIFF: UInt = 0x8004_54D2
    /// `#define IFF_TAP 0x0002` (linux/if_tun.h): Ethernet frames, not IP packets.
    public static let IFF_TAP: UInt16 = 0x0002
    /// `#define IFF_NO_PI 0x1000` (linux/if_tun.h): no 4-byte packet-info
    /// prefix. IFF_VNET_HDR (0x4000, `vnetHeader`) is set only for
    /// vhost-net; otherwise the userspace virtio-net device strips and
    /// prepends its own header, and the tap carries bare frames.
    public static let IFF_NO_PI: UInt16 = 0x1000
    /// `#define IFNAMSIZ 16` (linux/if.h): interface names are at most 15
    /// bytes plus a NUL.
    public static let IFNAMSIZ = 16
    /// `sizeof(struct ifreq)` on x86_64 (linux/if.h): `ifr_name[IFNAMSIZ]`
    /// then a 24-byte union (its largest member is `struct ifmap`), in which
    /// `ifr_flags` (a short) is at offset 0.
    public static let ifreqSize = 40
    public static let ifreqFlagsOffset = 16
}

/// A TAP interface: the host end of a virtio-net device. Frames are bare
/// Ethernet frames (IFF_TAP | IFF_NO_PI, no vnet header), one per `read` or
/// `write`.
///
/// In the VMM the NIC's I/O thread (its `DeviceIOLoop`) watches `fd` with
/// epoll and, each time it is readable, reads one frame with `readFrame()`
/// and hands it to `VirtioNet.receive(frame:)`; the device's transmit path
/// calls `writeFrame` through `NetBackend`. The descriptor stays blocking,
/// for that transmit path. The interface is not persistent: it
/// disappears when the descriptor closes, unless it was created beforehand
/// (`ip tuntap add NAME mode tap user $USER`), which is also how an
/// unprivileged user gets one.
public final class TapDevice: Sendable {
    public static let controlPath = "/dev/net/tun"
    /// Largest frame `readFrame` returns: 64 KiB covers any MTU a tap accepts
    /// (the virtio-net device caps frames at the same size).
    public static let maxFrameLength = 65536

    /// The interface name, as the kernel reports it (the one it chose when
    /// none was given).
    public let name: String
    /// The tap's descriptor, for the VMM's poll loop.
    public let fd: FileDescriptor
    /// Frames carry a `virtio_net_hdr_v1` (12 bytes) in front (IFF_VNET_HDR,
    /// TUNSETVNETHDRSZ): the layout vhost-net and the guest share, so the
    /// TAP passes checksum and segmentation offloads through.
    public let hasVnetHeader: Bool
    /// The vnet header size with VIRTIO_F_VERSION_1 (virtio 1.2 §5.1.6).
    public static let vnetHeaderSize: Int32 = 12
    /// Attached with IFF_MULTI_QUEUE: more queues of the interface may be
    /// opened. Asked for with `multiQueue`, or the existing TAP's own
    /// setting when it refused the one asked for.
    public let isMultiQueue: Bool

    /// Attaches to the tap interface `name`, creating it when it does not
    /// exist (that needs CAP_NET_ADMIN); `nil` or "" lets the kernel choose a
    /// name (`tapN`). Errors say what to do: load the tun module, get
    /// CAP_NET_ADMIN or a tap owned by this user, free a busy tap.
    /// With `vnetHeader`, frames carry the 12-byte virtio-net header (for
    /// vhost-net). With `multiQueue` (IFF_MULTI_QUEUE) this is one queue of
    /// the interface: open it again, with the same name, for each more one.
    /// An existing TAP made the other way is attached as it was made
    /// (`isMultiQueue` says which).
    public convenience init(name: String? = nil, vnetHeader: Bool = false, multiQueue: Bool = false) throws {
        try self.init(name: name, controlPath: Self.controlPath, vnetHeader: vnetHeader, multiQueue: multiQueue)
    }

    /// `controlPath` replaces /dev/net/tun, so tests can make the open fail.
    init(name: String?, controlPath: String, vnetHeader: Bool = false, multiQueue: Bool = false) throws {
        let requested = name ?? ""
        if !requested.isEmpty {
            guard Self.isValidName(requested) else {
                throw SysError(errno: EINVAL, operation:
                    "tap name \"\(requested)\" is invalid: 1-\(TunUAPI.IFNAMSIZ - 1) bytes, no '/', ':' or whitespace")
            }
        }
        let raw = retryingEINTR { Int(Glibc.open(controlPath, O_RDWR | O_CLOEXEC)) }
        guard raw >= 0 else {
            let e = shim_errno()
            throw SysError(errno: e, operation: Self.openFailure(path: controlPath, errno: e))
        }
        let fd = FileDescriptor(adopting: Int32(raw))

        let base = TunUAPI.IFF_TAP | TunUAPI.IFF_NO_PI | (vnetHeader ? SHIM_IFF_VNET_HDR : 0)
        var request: [UInt8] = []
        var multi = multiQueue
        func attach() -> Int32 {
            request = Self.ifreq(name: requested, flags: base | (multi ? SHIM_IFF_MULTI_QUEUE : 0))
            let r = request.withUnsafeMutableBytes { b in
                // SAFETY: `b` is the 40-byte ifreq the kernel reads and writes back
                // (TUNSETIFF copies exactly sizeof(struct ifreq)).
                retryingEINTR { Int(shim_ioctl_ptr(fd.raw, TunUAPI.TUNSETIFF, b.baseAddress)) }
            }
            return r >= 0 ? 0 : shim_errno()
        }
        var e = attach()
        if e == EINVAL, !requested.isEmpty {
            // An existing TAP made with the other multi_queue setting refuses
            // the flag we tried (tun_set_iff): attach with its own.
            multi.toggle()
            e = attach()
        }
        guard e == 0 else { throw SysError(errno: e, operation: Self.setIffFailure(name: requested, errno: e)) }
        isMultiQueue = multi
        let chosen = Self.name(fromIfreq: request)
        if vnetHeader {
            var size = Self.vnetHeaderSize
            guard shim_ioctl_ptr(fd.raw, SHIM_TUNSETVNETHDRSZ, &size) == 0 else {
                throw SysError.last("tap \(chosen): TUNSETVNETHDRSZ \(Self.vnetHeaderSize)")
            }
        }
        self.name = chosen
        self.fd = fd
        hasVnetHeader = vnetHeader
        // No offloads until a guest negotiates them: a persistent TAP keeps
        // the ones its last user set, and frames with partial checksums or
        // unsegmented TCP would reach a guest that cannot take them (the
        // userspace data path passes bare frames).
        try setOffload(checksum: false, tso4: false, tso6: false)
    }

    /// A TAP queue a launcher attached and passed ("fd:N"): an open
    /// /dev/net/tun already attached (TUNSETIFF) to a TAP interface with
    /// IFF_TAP | IFF_NO_PI and no IFF_VNET_HDR, for the userspace data path,
    /// one queue. The error says which of those it is not.
    public init(passed text: String) throws {
        let fd: FileDescriptor
        do { fd = try PassedDescriptor.take(text, purpose: "a TAP queue", write: true) } catch let e as SysError {
            throw SysError(errno: e.errno, operation: "tap \(text): \(e.operation)")
        }
        var request = [UInt8](repeating: 0, count: TunUAPI.ifreqSize)
        let r = request.withUnsafeMutableBytes { b in
            // SAFETY: `b` is the 40-byte ifreq TUNGETIFF fills (sizeof(struct ifreq)).
            retryingEINTR { Int(shim_ioctl_ptr(fd.raw, TunUAPI.TUNGETIFF, b.baseAddress)) }
        }
        guard r >= 0 else {
            let e = shim_errno()
            throw SysError(errno: e, operation: e == EBADFD || e == ENOTTY || e == EINVAL
                ? "tap \(text) is not an open /dev/net/tun attached to a TAP interface (TUNGETIFF failed); "
                    + "the launcher must open /dev/net/tun and attach it (TUNSETIFF) first"
                : "tap \(text): TUNGETIFF")
        }
        let flags = UInt16(request[TunUAPI.ifreqFlagsOffset]) | UInt16(request[TunUAPI.ifreqFlagsOffset + 1]) << 8
        let ifname = Self.name(fromIfreq: request)
        guard flags & TunUAPI.IFF_TAP != 0 else {
            throw SysError(errno: EINVAL, operation: "tap \(text) (\(ifname)) is a TUN interface (IP packets); a NIC needs a TAP (IFF_TAP)")
        }
        guard flags & TunUAPI.IFF_NO_PI != 0, flags & SHIM_IFF_VNET_HDR == 0 else {
            throw SysError(errno: EINVAL, operation: "tap \(text) (\(ifname)) was attached with flags 0x\(String(flags, radix: 16)); "
                + "a passed TAP carries bare frames: attach it with IFF_TAP | IFF_NO_PI and without IFF_VNET_HDR")
        }
        name = ifname
        self.fd = fd
        hasVnetHeader = false
        isMultiQueue = flags & SHIM_IFF_MULTI_QUEUE != 0
        try setOffload(checksum: false, tso4: false, tso6: false)
    }

    /// What the TAP may hand the guest (TUNSETOFFLOAD): frames with a
    /// partial checksum (`checksum`: the guest took VIRTIO_NET_F_GUEST_CSUM)
    /// and unsegmented TCP over IPv4 and IPv6 (`tso4`, `tso6`: GUEST_TSO4/6,
    /// which need the checksum offload too). Only with a vnet header.
    public func setOffload(checksum: Bool, tso4: Bool, tso6: Bool) throws {
        var flags: UInt32 = 0
        if checksum {
            flags |= UInt32(SHIM_TUN_F_CSUM)
            if tso4 { flags |= UInt32(SHIM_TUN_F_TSO4) }
            if tso6 { flags |= UInt32(SHIM_TUN_F_TSO6) }
        }
        guard shim_ioctl_int(fd.raw, SHIM_TUNSETOFFLOAD, UInt(flags)) == 0 else {
            throw SysError.last("tap \(name): TUNSETOFFLOAD 0x\(String(flags, radix: 16))")
        }
    }

    /// What the kernel's `dev_valid_name` accepts: 1 to IFNAMSIZ-1 bytes,
    /// not "." or "..", no '/', ':', NUL or whitespace.
    static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count < TunUAPI.IFNAMSIZ, name != ".", name != ".." else { return false }
        let forbidden: Set<UInt8> = [0, UInt8(ascii: "/"), UInt8(ascii: ":"), UInt8(ascii: " "),
                                     UInt8(ascii: "\t"), UInt8(ascii: "\n"), 0x0B, 0x0C, UInt8(ascii: "\r")]
        return !bytes.contains(where: forbidden.contains)
    }

    /// A `struct ifreq` as bytes: the name (NUL-padded) then `ifr_flags`.
    static func ifreq(name: String, flags: UInt16) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: TunUAPI.ifreqSize)
        for (i, c) in name.utf8.prefix(TunUAPI.IFNAMSIZ - 1).enumerated() { b[i] = c }
        b[TunUAPI.ifreqFlagsOffset] = UInt8(truncatingIfNeeded: flags)
        b[TunUAPI.ifreqFlagsOffset + 1] = UInt8(truncatingIfNeeded: flags >> 8)
        return b
    }

    /// The NUL-terminated name at the start of an ifreq.
    static func name(fromIfreq b: [UInt8]) -> String {
        let bytes = b.prefix(TunUAPI.IFNAMSIZ - 1).prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The message for a failed open of the tun control device.
    static func openFailure(path: String, errno e: Int32) -> String {
        switch e {
        case ENOENT, ENODEV, ENXIO:
            return "\(path) missing: modprobe tun"
        case EACCES, EPERM:
            return "\(path): no permission (needs read-write access to it; run as root or grant access with a udev rule)"
        default:
            return "open \(path)"
        }
    }

    /// The message for a failed TUNSETIFF on `name` ("" = kernel-chosen).
    static func setIffFailure(name: String, errno e: Int32) -> String {
        let shown = name.isEmpty ? "(kernel-chosen name)" : name
        let example = name.isEmpty ? "tap0" : name
        switch e {
        case EPERM, EACCES:
            return "tap \(shown): no permission (needs CAP_NET_ADMIN or a tap owned by your user: ip tuntap add \(example) mode tap user $USER)"
        case EBUSY:
            return "tap \(shown) is busy: another process has it open, or it was created with other flags (multi_queue, vnet_hdr)"
        case EINVAL:
            return "tap \(shown): the name belongs to an interface that is not a tap, or one created with other "
                + "flags (multi_queue or not)"
        default:
            return "tap \(shown): TUNSETIFF"
        }
    }

    /// Reads one frame; blocks until one arrives (unless `setNonBlocking`,
    /// then an empty tap throws a `SysError` with errno EAGAIN). A frame
    /// longer than `maxLength` is truncated by the kernel; the default is
    /// `maxFrameLength`.
    public func readFrame(maxLength: Int = TapDevice.maxFrameLength) throws -> [UInt8] {
        let capacity = max(1, maxLength)
        var failure: Int32 = 0
        let frame = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            // SAFETY: read(2) writes at most `capacity` bytes into the
            // array's uninitialized storage of that size; `count` is set to
            // what it wrote.
            let n = retryingEINTR { Glibc.read(fd.raw, buffer.baseAddress, capacity) }
            if n < 0 { failure = shim_errno(); count = 0 } else { count = n }
        }
        if failure != 0 { throw SysError(errno: failure, operation: "tap \(name): read") }
        guard !frame.isEmpty else { throw SysError(errno: EIO, operation: "tap \(name): read returned end of file") }
        return frame
    }

    /// Writes one frame. A tap whose interface is down refuses it (EIO).
    public func writeFrame(_ frame: [UInt8]) throws {
        let n = frame.withUnsafeBytes { b in retryingEINTR { Glibc.write(fd.raw, b.baseAddress, b.count) } }
        guard n >= 0 else { throw SysError.last("tap \(name): write") }
        guard n == frame.count else {
            throw SysError(errno: EIO, operation: "tap \(name): wrote \(n) of \(frame.count) bytes")
        }
    }

    /// Sets or clears O_NONBLOCK on the tap descriptor.
    public func setNonBlocking(_ nonBlocking: Bool = true) throws {
        let flags = fcntl(fd.raw, F_GETFL)
        guard flags >= 0 else { throw SysError.last("tap \(name): fcntl(F_GETFL)") }
        let wanted = nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        guard wanted == flags || fcntl(fd.raw, F_SETFL, wanted) == 0 else {
            throw SysError.last("tap \(name): fcntl(F_SETFL)")
        }
    }
}
