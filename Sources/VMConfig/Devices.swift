import Bits

/// How a disk's data meets the host's page cache (`[[disk]] cache`).
public enum DiskCache: String, CaseIterable, Equatable, Sendable {
    /// Through the page cache; a guest flush is an fsync.
    case writeback
    /// O_DIRECT: past the page cache (a guest flush is still an fsync, for
    /// the disk's own cache). Falls back to `writeback`, with a log line,
    /// where the image's file system refuses O_DIRECT.
    case none
}

/// How a disk's requests reach the image (`[[disk]] aio`).
public enum DiskAIO: String, CaseIterable, Equatable, Sendable {
    /// io_uring: many requests in flight, completed in batches on the
    /// disk's I/O thread. Falls back to `sync`, with a log line, where the
    /// host kernel has no io_uring or forbids it.
    case ioUring = "io_uring"
    /// One request at a time, `preadv`/`pwritev`/`fsync` on the disk's I/O
    /// thread.
    case sync
}

/// A virtio-blk disk (`[[disk]]`), backed by a raw image file.
public struct DiskConfig: Equatable, Sendable {
    /// Absolute path of the image.
    public var path: String
    /// Open the image read-only and offer VIRTIO_BLK_F_RO to the guest.
    public var readOnly: Bool
    /// Page cache or O_DIRECT.
    public var cache: DiskCache
    /// Behind the vIOMMU when there is one (`iommu = false`: outside it).
    public var iommu: Bool
    /// Request queues; nil: one per vCPU.
    public var queues: Int?
    /// io_uring or synchronous I/O.
    public var aio: DiskAIO

    public init(path: String, readOnly: Bool = false, cache: DiskCache = .writeback, iommu: Bool = true,
                queues: Int? = nil, aio: DiskAIO = .ioUring) {
        self.path = path
        self.readOnly = readOnly
        self.cache = cache
        self.iommu = iommu
        self.queues = queues
        self.aio = aio
    }

    /// Request queues for a VM of `vcpus` vCPUs: `queues`, or one per vCPU.
    public func queueCount(vcpus: Int) -> Int { queues ?? min(max(vcpus, 1), Schema.diskQueueRange.upperBound) }
}

/// A virtio-net device (`[[net]]`) on a host TAP interface.
public struct NetConfig: Equatable, Sendable {
    /// The TAP interface name: 1...15 bytes of `A-Z a-z 0-9 _ . -`.
    public var tap: String
    /// The guest's MAC address, 6 bytes, unicast and not all zero.
    public var mac: [UInt8]
    /// Behind the vIOMMU when there is one (`iommu = false`: outside it).
    public var iommu: Bool
    /// The vhost-net kernel data path when the host has it (and the NIC is
    /// not behind the vIOMMU); false: always the VMM's own (userspace) one.
    public var vhost: Bool
    /// Queue pairs with vhost-net; nil: one per vCPU.
    public var queues: Int?

    public init(tap: String, mac: [UInt8], iommu: Bool = true, vhost: Bool = true, queues: Int? = nil) {
        self.tap = tap
        self.mac = mac
        self.iommu = iommu
        self.vhost = vhost
        self.queues = queues
    }

    /// Queue pairs for a VM of `vcpus` vCPUs: `queues`, or one per vCPU.
    public func queuePairs(vcpus: Int) -> Int { queues ?? min(max(vcpus, 1), Schema.netQueueRange.upperBound) }

    /// `mac` as six lower-case hex pairs: "52:54:00:12:34:56".
    public var macString: String { MAC.format(mac) }

    /// Parses six hex pairs separated by colons, either case
    /// ("52:54:00:AB:cd:EF"). Nil for anything else. Does not judge the
    /// address (multicast and all-zero addresses parse).
    public static func parseMAC(_ text: String) -> [UInt8]? { MAC.parse(text) }

    /// The MAC a `[[net]]` at `index` gets without a `mac` key: 52:54:00 and
    /// then 0x123456 + index in the low three bytes (24 bits, wrapping), so
    /// the first is QEMU's familiar 52:54:00:12:34:56. 0x52 has the
    /// locally-administered bit set and the multicast bit clear.
    public static func defaultMAC(index: Int) -> [UInt8] { MAC.defaultAddress(index: index) }
}

/// The MAC a `[[net]]` gets without a `mac` key. Parsing, formatting and the
/// I/G and U/L bits are `Bits.MAC`'s (IEEE 802-2014 clause 8.2.2).
extension MAC {
    /// QEMU's prefix for generated NIC addresses (net/net.c,
    /// qemu_macaddr_default_if_unset): locally administered, unicast.
    static let defaultPrefix: [UInt8] = [0x52, 0x54, 0x00]
    static let defaultFirstSuffix: UInt32 = 0x12_34_56

    static func defaultAddress(index: Int) -> [UInt8] {
        let suffix = (defaultFirstSuffix &+ UInt32(truncatingIfNeeded: index)) & 0xFF_FFFF
        return defaultPrefix + [UInt8(truncatingIfNeeded: suffix >> 16),
                                UInt8(truncatingIfNeeded: suffix >> 8),
                                UInt8(truncatingIfNeeded: suffix)]
    }
}

/// The vIOMMU (`[viommu]` or `--viommu`): a virtio-iommu device the guest
/// programs, described by an ACPI VIOT table. Every PCI device sits behind it
/// unless its table says `iommu = false`.
public struct VIOMMUConfig: Equatable, Sendable {
    /// Domains the guest may have at once (`max_domains`).
    public var maxDomains: Int
    /// Mappings per domain (`max_mappings`).
    public var maxMappingsPerDomain: Int
    /// Microseconds the request queue is polled after a request (`poll_us`;
    /// 0: never). The guest waits for each request and sends the next soon
    /// after: polling spares it a VM exit per request, at the cost of a host
    /// CPU busy for that long after each burst. Only on a host with more
    /// than one CPU.
    public var pollMicroseconds: Int

    public static let defaultMaxDomains = 1024
    public static let defaultMaxMappingsPerDomain = 1 << 16
    /// Bounds for both caps: at least one, and a ceiling that keeps the
    /// VMM's tables small (a mapping is tens of bytes).
    public static let domainRange = 1...65536
    public static let mappingRange = 1...(1 << 20)
    public static let defaultPollMicroseconds = 500
    public static let pollRange = 0...100_000

    public init(maxDomains: Int = VIOMMUConfig.defaultMaxDomains,
                maxMappingsPerDomain: Int = VIOMMUConfig.defaultMaxMappingsPerDomain,
                pollMicroseconds: Int = VIOMMUConfig.defaultPollMicroseconds) {
        self.maxDomains = maxDomains
        self.maxMappingsPerDomain = maxMappingsPerDomain
        self.pollMicroseconds = pollMicroseconds
    }
}
