import Bits

/// Something the guest driver did that the virtio 1.2 specification forbids.
/// A device that meets one stops using its queues, sets DEVICE_NEEDS_RESET
/// (§2.1.2) and sends a configuration change notification; the VMM logs
/// "guest error: \(description)" and keeps running.
public enum VirtqueueError: Error, Equatable, CustomStringConvertible {
    /// The queue size is 0, not a power of 2 or above the device's maximum (§2.7).
    case invalidQueueSize(UInt16)
    /// A ring part is not aligned as §2.7 requires.
    case misalignedRing(part: RingPart, address: UInt64)
    /// A ring part is not wholly inside guest RAM, or its end overflows.
    case ringOutsideMemory(part: RingPart, address: UInt64, length: UInt64)
    /// `avail.idx` moved more than the queue size past the device's position:
    /// the driver exposed more buffers than the queue can hold (§2.7.6, §2.7.13).
    case availIndexJump(availIndex: UInt16, nextAvail: UInt16, queueSize: UInt16)
    /// A head from the available ring, or a `next` field, names a descriptor
    /// past the end of its table.
    case descriptorIndexOutOfRange(index: UInt32, tableSize: UInt32)
    /// A chain visits more descriptors than its table holds: it loops, or is
    /// longer than the queue size (§2.7.5.2, §2.7.5.3.1).
    case chainTooLong(head: UInt16, limit: UInt32)
    /// A chain describes more than 2^32 bytes (§2.7.5.2).
    case chainTooLarge(head: UInt16)
    /// `addr + len` of a descriptor does not fit in 64 bits.
    case addressOverflow(address: UInt64, length: UInt32)
    /// A buffer is not wholly inside one region of guest RAM (it runs past the
    /// end, or spans a hole).
    case bufferOutsideMemory(address: UInt64, length: UInt32)
    /// VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated (§2.7.5.3.1).
    case indirectNotNegotiated(head: UInt16)
    /// VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT (§2.7.5.3.1).
    case indirectWithNext(head: UInt16)
    /// VIRTQ_DESC_F_INDIRECT inside an indirect table (§2.7.5.3.1).
    case nestedIndirect(head: UInt16)
    /// An indirect table whose length is 0, not a multiple of 16 bytes, or
    /// holds more than the maximum queue size of descriptors (§2.7.5.3).
    case badIndirectTableLength(head: UInt16, length: UInt32)
    /// A device-readable descriptor follows a device-writable one in a chain
    /// (§2.7.4.2: "The driver MUST place any device-writable descriptor
    /// elements after any device-readable descriptor elements").
    case readableAfterWritable(head: UInt16)
    /// A buffer's direction is wrong for this queue, e.g. a device-readable
    /// buffer in an entropy or console receive queue (§5.4.6.1, §5.3.6.1).
    case wrongDirection(head: UInt16, expectedWritable: Bool)
    /// A used-ring entry names a head that is not a descriptor of this queue
    /// (a device bug, reported the same way).
    case usedHeadOutOfRange(head: UInt16, queueSize: UInt16)
    /// The queue was used before it was enabled and activated.
    case queueNotReady
    /// A guest memory access that was checked at activation failed anyway.
    case memory(String)
    /// A device-specific protocol error, described by the device.
    case device(String)
    /// A transport protocol error (e.g. DRIVER_OK without FEATURES_OK, §3.1.1).
    case transport(String)

    public enum RingPart: String, Equatable, Sendable {
        case descriptorTable = "descriptor table"
        case availRing = "available ring"
        case usedRing = "used ring"
    }

    public var description: String {
        switch self {
        case let .invalidQueueSize(s):
            return "queue size \(s) is not a power of 2 between 1 and the device maximum"
        case let .misalignedRing(part, a):
            return "\(part.rawValue) at \(hex(a)) is misaligned"
        case let .ringOutsideMemory(part, a, l):
            return "\(part.rawValue) at \(hex(a))+\(hex(l)) is outside guest RAM"
        case let .availIndexJump(idx, next, size):
            return "available index \(idx) is more than the queue size \(size) ahead of \(next)"
        case let .descriptorIndexOutOfRange(i, n):
            return "descriptor index \(i) is outside a table of \(n)"
        case let .chainTooLong(h, l):
            return "descriptor chain at head \(h) is longer than \(l) (a loop?)"
        case let .chainTooLarge(h):
            return "descriptor chain at head \(h) describes more than 4 GiB"
        case let .addressOverflow(a, l):
            return "descriptor \(hex(a))+\(hex(UInt64(l))) overflows 64 bits"
        case let .bufferOutsideMemory(a, l):
            return "buffer \(hex(a))+\(hex(UInt64(l))) is not inside guest RAM"
        case let .indirectNotNegotiated(h):
            return "indirect descriptor at head \(h) without VIRTIO_F_INDIRECT_DESC"
        case let .indirectWithNext(h):
            return "descriptor chain at head \(h) has INDIRECT together with NEXT"
        case let .nestedIndirect(h):
            return "indirect table at head \(h) contains an indirect descriptor"
        case let .badIndirectTableLength(h, l):
            return "indirect table at head \(h) has bad length \(l)"
        case let .readableAfterWritable(h):
            return "descriptor chain at head \(h) has a device-readable buffer after a device-writable one"
        case let .wrongDirection(h, w):
            return "descriptor chain at head \(h) has a device-\(w ? "readable" : "writable") buffer where only device-\(w ? "writable" : "readable") ones belong"
        case let .usedHeadOutOfRange(h, s):
            return "used head \(h) is outside a queue of \(s)"
        case .queueNotReady:
            return "queue used before it was enabled"
        case let .memory(s):
            return "guest memory: \(s)"
        case let .device(s), let .transport(s):
            return s
        }
    }
}
