import Bits

// The vfio-user protocol's messages (QEMU docs/interop/vfio-user.rst, version
// 0.2): a 16-byte header and a payload per command, host-endian, which is
// little-endian on every host SwiftVMM runs on. Every decoder takes the
// peer's bytes as hostile: lengths are checked before any field is read.

/// Command numbers (the spec's "Commands" table).
public enum VFIOUserCommand: UInt16, Sendable, CaseIterable {
    case version = 1
    case dmaMap = 2
    case dmaUnmap = 3
    case deviceGetInfo = 4
    case deviceGetRegionInfo = 5
    case deviceGetRegionIOFDs = 6
    case deviceGetIRQInfo = 7
    case deviceSetIRQs = 8
    case regionRead = 9
    case regionWrite = 10
    case dmaRead = 11
    case dmaWrite = 12
    case deviceReset = 13
    case regionWriteMulti = 15
    case deviceFeature = 16
    case migDataRead = 17
    case migDataWrite = 18

    /// The spec's name, for log lines.
    public var name: String {
        switch self {
        case .version: "VERSION"
        case .dmaMap: "DMA_MAP"
        case .dmaUnmap: "DMA_UNMAP"
        case .deviceGetInfo: "DEVICE_GET_INFO"
        case .deviceGetRegionInfo: "DEVICE_GET_REGION_INFO"
        case .deviceGetRegionIOFDs: "DEVICE_GET_REGION_IO_FDS"
        case .deviceGetIRQInfo: "DEVICE_GET_IRQ_INFO"
        case .deviceSetIRQs: "DEVICE_SET_IRQS"
        case .regionRead: "REGION_READ"
        case .regionWrite: "REGION_WRITE"
        case .dmaRead: "DMA_READ"
        case .dmaWrite: "DMA_WRITE"
        case .deviceReset: "DEVICE_RESET"
        case .regionWriteMulti: "REGION_WRITE_MULTI"
        case .deviceFeature: "DEVICE_FEATURE"
        case .migDataRead: "MIG_DATA_READ"
        case .migDataWrite: "MIG_DATA_WRITE"
        }
    }

    /// The name of any command number, known or not.
    public static func name(of raw: UInt16) -> String {
        VFIOUserCommand(rawValue: raw)?.name ?? "command \(raw)"
    }
}

/// What went wrong talking to a vfio-user server.
public enum VFIOUserError: Error, Equatable, CustomStringConvertible {
    /// The peer's bytes do not follow the protocol (what, in words).
    case malformed(String)
    /// The server answered the command with an error (its errno, 0 if none given).
    case serverError(command: String, errno: UInt32)
    /// No reply within the request's time limit.
    case timeout(command: String, milliseconds: Int)
    /// The connection is gone (why).
    case disconnected(String)
    /// A request this client will not send (what, in words).
    case invalidRequest(String)

    public var description: String {
        switch self {
        case .malformed(let what): "malformed message from the vfio-user server: \(what)"
        case .serverError(let command, let code):
            code == 0 ? "the vfio-user server failed \(command)" : "the vfio-user server failed \(command) with errno \(code)"
        case .timeout(let command, let ms): "the vfio-user server did not answer \(command) within \(ms) ms"
        case .disconnected(let why): "the vfio-user server is disconnected: \(why)"
        case .invalidRequest(let what): what
        }
    }
}

/// The header in front of every message.
public struct VFIOUserHeader: Equatable, Sendable {
    public static let size = 16
    /// Flags bits 0-3: the message type.
    public static let typeMask: UInt32 = 0xF
    public static let typeCommand: UInt32 = 0
    public static let typeReply: UInt32 = 1
    /// Flags bit 4: the sender wants no reply.
    public static let noReplyFlag: UInt32 = 1 << 4
    /// Flags bit 5: the reply reports an error (the `error` field may hold the errno).
    public static let errorFlag: UInt32 = 1 << 5

    public var messageID: UInt16
    /// The raw command number (a peer may send one this client does not know).
    public var command: UInt16
    /// The whole message, header included.
    public var size: UInt32
    public var flags: UInt32
    public var error: UInt32

    public init(messageID: UInt16, command: UInt16, size: UInt32, flags: UInt32 = 0, error: UInt32 = 0) {
        self.messageID = messageID
        self.command = command
        self.size = size
        self.flags = flags
        self.error = error
    }

    public var isReply: Bool { flags & Self.typeMask == Self.typeReply }
    public var isCommand: Bool { flags & Self.typeMask == Self.typeCommand }
    public var wantsNoReply: Bool { flags & Self.noReplyFlag != 0 }
    public var reportsError: Bool { flags & Self.errorFlag != 0 }

    public func encoded() -> [UInt8] {
        LE.bytes(UInt64(messageID), count: 2) + LE.bytes(UInt64(command), count: 2) + LE.bytes(UInt64(size), count: 4)
            + LE.bytes(UInt64(flags), count: 4) + LE.bytes(UInt64(error), count: 4)
    }

    /// Decodes a header: at least 16 bytes, a known type, and a message size
    /// that covers the header.
    public static func decode(_ bytes: [UInt8]) throws -> VFIOUserHeader {
        guard bytes.count >= size, let id = LE.u16(bytes, 0), let command = LE.u16(bytes, 2),
              let total = LE.u32(bytes, 4), let flags = LE.u32(bytes, 8), let error = LE.u32(bytes, 12)
        else { throw VFIOUserError.malformed("a header of \(bytes.count) bytes (it has 16)") }
        let type = flags & typeMask
        guard type == typeCommand || type == typeReply else {
            throw VFIOUserError.malformed("\(VFIOUserCommand.name(of: command)) with message type \(type) (0 command, 1 reply)")
        }
        guard total >= UInt32(size) else {
            throw VFIOUserError.malformed("\(VFIOUserCommand.name(of: command)) with a message size of \(total) (the header alone is 16)")
        }
        return VFIOUserHeader(messageID: id, command: command, size: total, flags: flags, error: error)
    }
}

/// Reads a payload's fixed fields, failing with the command's name and the
/// field's offset when the peer sent too few bytes.
struct PayloadReader {
    let bytes: [UInt8]
    let what: String

    func u16(_ offset: Int) throws -> UInt16 { try field(LE.u16(bytes, offset), offset, 2) }
    func u32(_ offset: Int) throws -> UInt32 { try field(LE.u32(bytes, offset), offset, 4) }
    func u64(_ offset: Int) throws -> UInt64 { try field(LE.u64(bytes, offset), offset, 8) }

    private func field<T>(_ value: T?, _ offset: Int, _ width: Int) throws -> T {
        guard let value else {
            throw VFIOUserError.malformed("\(what): \(bytes.count) bytes of payload, a field wants bytes \(offset)..<\(offset + width)")
        }
        return value
    }
}

/// Little-endian field writers for payloads.
extension Array where Element == UInt8 {
    mutating func put16(_ v: UInt16) { self += LE.bytes(UInt64(v), count: 2) }
    mutating func put32(_ v: UInt32) { self += LE.bytes(UInt64(v), count: 4) }
    mutating func put64(_ v: UInt64) { self += LE.bytes(v, count: 8) }
}

// MARK: - VERSION

/// VERSION, request and reply alike: major, minor, then optional JSON
/// (NUL-terminated) with the sender's capabilities.
public struct VFIOUserVersion: Equatable, Sendable {
    public var major: UInt16
    public var minor: UInt16
    /// The JSON text, without its NUL.
    public var json: String?

    public init(major: UInt16, minor: UInt16, json: String?) {
        self.major = major
        self.minor = minor
        self.json = json
    }

    public func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.put16(major)
        b.put16(minor)
        if let json { b += Array(json.utf8) + [0] }
        return b
    }

    public static func decode(_ payload: [UInt8]) throws -> VFIOUserVersion {
        let r = PayloadReader(bytes: payload, what: "VERSION")
        let major = try r.u16(0), minor = try r.u16(2)
        guard payload.count > 4 else { return VFIOUserVersion(major: major, minor: minor, json: nil) }
        var text = Array(payload[4...])
        guard text.last == 0 else { throw VFIOUserError.malformed("VERSION: the capabilities JSON does not end in a NUL") }
        text.removeLast()
        guard !text.contains(0) else { throw VFIOUserError.malformed("VERSION: a NUL inside the capabilities JSON") }
        guard let json = String(validating: text, as: UTF8.self) else {
            throw VFIOUserError.malformed("VERSION: the capabilities JSON is not UTF-8")
        }
        return VFIOUserVersion(major: major, minor: minor, json: json)
    }
}

// MARK: - DMA_MAP / DMA_UNMAP

/// DMA_MAP flags.
public struct VFIOUserDMAFlags: OptionSet, Sendable, Equatable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = VFIOUserDMAFlags(rawValue: 1 << 0)
    public static let writable = VFIOUserDMAFlags(rawValue: 1 << 1)
}

/// DMA_MAP request (32 bytes): the server may use [address, address+size);
/// through the passed fd at `offset` when one goes with it.
public struct VFIOUserDMAMap: Equatable, Sendable {
    public static let size: UInt32 = 32
    public var flags: VFIOUserDMAFlags
    public var offset: UInt64
    public var address: UInt64
    public var size: UInt64

    public init(flags: VFIOUserDMAFlags, offset: UInt64, address: UInt64, size: UInt64) {
        self.flags = flags
        self.offset = offset
        self.address = address
        self.size = size
    }

    public func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.put32(Self.size)
        b.put32(flags.rawValue)
        b.put64(offset)
        b.put64(address)
        b.put64(size)
        return b
    }

    public static func decode(_ payload: [UInt8]) throws -> VFIOUserDMAMap {
        let r = PayloadReader(bytes: payload, what: "DMA_MAP")
        return VFIOUserDMAMap(flags: VFIOUserDMAFlags(rawValue: try r.u32(4)), offset: try r.u64(8),
                              address: try r.u64(16), size: try r.u64(24))
    }
}

/// DMA_UNMAP request (24 bytes) and its reply, which echoes it.
public struct VFIOUserDMAUnmap: Equatable, Sendable {
    public static let size: UInt32 = 24
    public var flags: UInt32
    public var address: UInt64
    public var size: UInt64

    public init(flags: UInt32 = 0, address: UInt64, size: UInt64) {
        self.flags = flags
        self.address = address
        self.size = size
    }

    public func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.put32(Self.size)
        b.put32(flags)
        b.put64(address)
        b.put64(size)
        return b
    }

    public static func decode(_ payload: [UInt8]) throws -> VFIOUserDMAUnmap {
        let r = PayloadReader(bytes: payload, what: "DMA_UNMAP")
        return VFIOUserDMAUnmap(flags: try r.u32(4), address: try r.u64(8), size: try r.u64(16))
    }
}

// MARK: - DEVICE_GET_INFO

/// DEVICE_GET_INFO, request and reply (16 bytes).
public struct VFIOUserDeviceInfo: Equatable, Sendable {
    public static let size: UInt32 = 16
    /// VFIO_DEVICE_FLAGS_RESET: DEVICE_RESET works.
    public static let flagReset: UInt32 = 1 << 0
    /// VFIO_DEVICE_FLAGS_PCI.
    public static let flagPCI: UInt32 = 1 << 1

    public var argsz: UInt32
    public var flags: UInt32
    public var regionCount: UInt32
    public var irqCount: UInt32

    public init(argsz: UInt32 = size, flags: UInt32 = 0, regionCount: UInt32 = 0, irqCount: UInt32 = 0) {
        self.argsz = argsz
        self.flags = flags
        self.regionCount = regionCount
        self.irqCount = irqCount
    }

    public var canReset: Bool { flags & Self.flagReset != 0 }
    public var isPCI: Bool { flags & Self.flagPCI != 0 }

    public func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.put32(argsz)
        b.put32(flags)
        b.put32(regionCount)
        b.put32(irqCount)
        return b
    }

    public static func decode(_ payload: [UInt8]) throws -> VFIOUserDeviceInfo {
        let r = PayloadReader(bytes: payload, what: "DEVICE_GET_INFO")
        return VFIOUserDeviceInfo(argsz: try r.u32(0), flags: try r.u32(4), regionCount: try r.u32(8), irqCount: try r.u32(12))
    }
}

// MARK: - DEVICE_GET_REGION_INFO

/// One area of a region the client may mmap (VFIO_REGION_INFO_CAP_SPARSE_MMAP).
public struct VFIOUserSparseArea: Equatable, Sendable {
    public var offset: UInt64
    public var size: UInt64
    public init(offset: UInt64, size: UInt64) {
        self.offset = offset
        self.size = size
    }
}

/// DEVICE_GET_REGION_INFO reply: `struct vfio_region_info` (32 bytes) and its
/// capability chain, of which the sparse-mmap areas are kept.
public struct VFIOUserRegionInfo: Equatable, Sendable {
    public static let size: UInt32 = 32
    public static let flagRead: UInt32 = 1 << 0
    public static let flagWrite: UInt32 = 1 << 1
    public static let flagMmap: UInt32 = 1 << 2
    public static let flagCaps: UInt32 = 1 << 3
    /// VFIO_REGION_INFO_CAP_SPARSE_MMAP (linux/vfio.h).
    public static let capSparseMmap: UInt16 = 1
    /// Capabilities followed before the chain is called a loop.
    static let maxCaps = 64
    /// Sparse areas kept; more is a malformed reply.
    static let maxSparseAreas: UInt32 = 1024

    public var argsz: UInt32
    public var flags: UInt32
    public var index: UInt32
    public var capOffset: UInt32
    public var size: UInt64
    public var offset: UInt64
    /// From the sparse-mmap capability; nil when the reply has none.
    public var sparseAreas: [VFIOUserSparseArea]?

    public init(argsz: UInt32 = size, flags: UInt32 = 0, index: UInt32, capOffset: UInt32 = 0, size: UInt64 = 0,
                offset: UInt64 = 0, sparseAreas: [VFIOUserSparseArea]? = nil) {
        self.argsz = argsz
        self.flags = flags
        self.index = index
        self.capOffset = capOffset
        self.size = size
        self.offset = offset
        self.sparseAreas = sparseAreas
    }

    public var readable: Bool { flags & Self.flagRead != 0 }
    public var writable: Bool { flags & Self.flagWrite != 0 }
    public var mappable: Bool { flags & Self.flagMmap != 0 }

    /// The request: `argsz` is the largest reply payload accepted, `index` the
    /// region; the rest zero.
    public static func request(index: UInt32, argsz: UInt32) -> [UInt8] {
        VFIOUserRegionInfo(argsz: argsz, index: index).encodedFixed()
    }

    func encodedFixed() -> [UInt8] {
        var b: [UInt8] = []
        b.put32(argsz)
        b.put32(flags)
        b.put32(index)
        b.put32(capOffset)
        b.put64(size)
        b.put64(offset)
        return b
    }

    /// Decodes a reply payload. The capability chain is walked inside the
    /// payload only, each header checked, loops and overlaps refused.
    public static func decode(_ payload: [UInt8]) throws -> VFIOUserRegionInfo {
        let r = PayloadReader(bytes: payload, what: "DEVICE_GET_REGION_INFO")
        var info = VFIOUserRegionInfo(argsz: try r.u32(0), flags: try r.u32(4), index: try r.u32(8),
                                      capOffset: try r.u32(12), size: try r.u64(16), offset: try r.u64(24))
        guard info.flags & flagCaps != 0, info.capOffset != 0 else { return info }
        var at = Int(info.capOffset)
        var seen = 0
        while at != 0 {
            guard at >= Int(size), at % 4 == 0 else {
                throw VFIOUserError.malformed("region \(info.index): a capability at offset \(at), inside the fixed fields or unaligned")
            }
            seen += 1
            guard seen <= maxCaps else { throw VFIOUserError.malformed("region \(info.index): more than \(maxCaps) capabilities (a loop?)") }
            let id = try r.u16(at), next = try r.u32(at + 4)
            if id == capSparseMmap {
                guard info.sparseAreas == nil else { throw VFIOUserError.malformed("region \(info.index): two sparse-mmap capabilities") }
                let count = try r.u32(at + 8)
                guard count <= maxSparseAreas else {
                    throw VFIOUserError.malformed("region \(info.index): \(count) sparse-mmap areas (at most \(maxSparseAreas))")
                }
                var areas: [VFIOUserSparseArea] = []
                for i in 0..<Int(count) {
                    let base = at + 16 + i * 16
                    let area = VFIOUserSparseArea(offset: try r.u64(base), size: try r.u64(base + 8))
                    let (end, overflow) = area.offset.addingReportingOverflow(area.size)
                    guard !overflow, end <= info.size else {
                        throw VFIOUserError.malformed("region \(info.index): sparse area \(i) [\(hex(area.offset)), +\(hex(area.size))) is outside the region's \(info.size) bytes")
                    }
                    areas.append(area)
                }
                info.sparseAreas = areas
            }
            guard next == 0 || Int(next) > at else {
                throw VFIOUserError.malformed("region \(info.index): capability at \(at) points back to \(next)")
            }
            at = Int(next)
        }
        return info
    }
}

// MARK: - DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS

/// DEVICE_GET_IRQ_INFO, request and reply (16 bytes).
public struct VFIOUserIRQInfo: Equatable, Sendable {
    public static let size: UInt32 = 16
    public static let flagEventFD: UInt32 = 1 << 0
    public static let flagMaskable: UInt32 = 1 << 1
    public static let flagAutomasked: UInt32 = 1 << 2
    public static let flagNoResize: UInt32 = 1 << 3

    public var argsz: UInt32
    public var flags: UInt32
    public var index: UInt32
    public var count: UInt32

    public init(argsz: UInt32 = size, flags: UInt32 = 0, index: UInt32, count: UInt32 = 0) {
        self.argsz = argsz
        self.flags = flags
        self.index = index
        self.count = count
    }

    public func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.put32(argsz)
        b.put32(flags)
        b.put32(index)
        b.put32(count)
        return b
    }

    public static func decode(_ payload: [UInt8]) throws -> VFIOUserIRQInfo {
        let r = PayloadReader(bytes: payload, what: "DEVICE_GET_IRQ_INFO")
        return VFIOUserIRQInfo(argsz: try r.u32(0), flags: try r.u32(4), index: try r.u32(8), count: try r.u32(12))
    }
}

/// DEVICE_SET_IRQS request (20 bytes; eventfds travel as passed descriptors).
public struct VFIOUserSetIRQs: Equatable, Sendable {
    public static let size: UInt32 = 20
    public static let dataNone: UInt32 = 1 << 0
    public static let dataBool: UInt32 = 1 << 1
    public static let dataEventFD: UInt32 = 1 << 2
    public static let actionMask: UInt32 = 1 << 3
    public static let actionUnmask: UInt32 = 1 << 4
    public static let actionTrigger: UInt32 = 1 << 5

    public var flags: UInt32
    public var index: UInt32
    public var start: UInt32
    public var count: UInt32

    public init(flags: UInt32, index: UInt32, start: UInt32, count: UInt32) {
        self.flags = flags
        self.index = index
        self.start = start
        self.count = count
    }

    public func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.put32(Self.size)
        b.put32(flags)
        b.put32(index)
        b.put32(start)
        b.put32(count)
        return b
    }

    public static func decode(_ payload: [UInt8]) throws -> VFIOUserSetIRQs {
        let r = PayloadReader(bytes: payload, what: "DEVICE_SET_IRQS")
        return VFIOUserSetIRQs(flags: try r.u32(4), index: try r.u32(8), start: try r.u32(12), count: try r.u32(16))
    }
}

// MARK: - REGION_READ / REGION_WRITE

/// REGION_READ and REGION_WRITE, request and reply: offset, region, count
/// (16 bytes), then the data where the message carries it.
public struct VFIOUserRegionAccess: Equatable, Sendable {
    public static let fixedSize = 16
    public var offset: UInt64
    public var region: UInt32
    public var count: UInt32
    public var data: [UInt8]

    public init(offset: UInt64, region: UInt32, count: UInt32, data: [UInt8] = []) {
        self.offset = offset
        self.region = region
        self.count = count
        self.data = data
    }

    public func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.put64(offset)
        b.put32(region)
        b.put32(count)
        return b + data
    }

    public static func decode(_ payload: [UInt8], what: String) throws -> VFIOUserRegionAccess {
        let r = PayloadReader(bytes: payload, what: what)
        return VFIOUserRegionAccess(offset: try r.u64(0), region: try r.u32(8), count: try r.u32(12),
                                    data: Array(payload.dropFirst(fixedSize)))
    }
}

// MARK: - DMA_READ / DMA_WRITE (server to client)

/// DMA_READ and DMA_WRITE, request and reply: address, count (16 bytes),
/// then the data where the message carries it.
public struct VFIOUserDMAAccess: Equatable, Sendable {
    public static let fixedSize = 16
    public var address: UInt64
    public var count: UInt64
    public var data: [UInt8]

    public init(address: UInt64, count: UInt64, data: [UInt8] = []) {
        self.address = address
        self.count = count
        self.data = data
    }

    public func encoded() -> [UInt8] {
        var b: [UInt8] = []
        b.put64(address)
        b.put64(count)
        return b + data
    }

    public static func decode(_ payload: [UInt8], what: String) throws -> VFIOUserDMAAccess {
        let r = PayloadReader(bytes: payload, what: what)
        return VFIOUserDMAAccess(address: try r.u64(0), count: try r.u64(8), data: Array(payload.dropFirst(fixedSize)))
    }
}
