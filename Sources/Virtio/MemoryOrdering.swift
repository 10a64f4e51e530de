import Synchronization

/// Fences around the ring indices.
///
/// The driver runs on other vCPUs and writes guest RAM concurrently with the
/// device thread; both sides publish data first and an index second
/// (§2.7.13 "Supplying Buffers to The Device": the driver "MUST perform a
/// suitable memory barrier before the idx update"; §2.7.8.2: the device
/// "MUST write at least len bytes ... prior to updating the used idx"). Guest
/// RAM is plain shared memory read with `memcpy`, so the device side pairs
/// the driver's barriers with these fences, as Firecracker's `queue.rs` and
/// Linux's vhost do:
///
/// - `afterReadingAvailIndex`: acquire, so the ring entries and descriptors
///   read next are at least as new as `avail.idx`.
/// - `beforePublishingUsedIndex`: release, so the used element and the data
///   written into the buffers are visible before `used.idx` moves.
/// - `full`: sequentially consistent, between a store and a load of
///   different locations (writing `used.idx` then reading `used_event`;
///   writing `avail_event` then re-reading `avail.idx`), which x86 would
///   otherwise reorder.
///
/// The 16-bit index loads and stores go through `GuestMemoryAccess` as
/// 2-byte copies of naturally aligned fields (the rings are aligned, checked
/// at activation), which x86 performs as single accesses.
enum MemoryOrdering {
    @inline(__always)
    static func afterReadingAvailIndex() { atomicMemoryFence(ordering: .acquiring) }

    @inline(__always)
    static func beforePublishingUsedIndex() { atomicMemoryFence(ordering: .releasing) }

    @inline(__always)
    static func full() { atomicMemoryFence(ordering: .sequentiallyConsistent) }
}
