import GuestMemory

/// A position in a list of segments (all device-readable or all
/// device-writable) read as one byte stream, so a request's parts may be
/// split across descriptors any way the driver likes (§2.6.4 "Message
/// Framing": the device must not assume a particular arrangement).
///
/// Moves forward only, so a request of N bytes over S segments costs
/// O(N + S) however it is chunked. Every segment came from a popped chain:
/// its `address + length` does not overflow and lies inside guest RAM.
struct BlockSegmentCursor {
    private let segments: ArraySlice<DescriptorSegment>
    private var index: Int
    private var offsetInSegment: UInt64 = 0
    /// Bytes left from the current position to the end of the stream.
    private(set) var remaining: UInt64

    init(_ segments: ArraySlice<DescriptorSegment>) {
        self.segments = segments
        index = segments.startIndex
        // A popped chain describes at most 2^32 bytes: no overflow.
        remaining = segments.reduce(0) { $0 + UInt64($1.length) }
    }

    /// Moves past `count` bytes (at most `remaining`).
    mutating func skip(_ count: UInt64) {
        var left = min(count, remaining)
        remaining -= left
        while left > 0, index < segments.endIndex {
            let inSegment = UInt64(segments[index].length) - offsetInSegment
            if left < inSegment {
                offsetInSegment += left
                return
            }
            left -= inSegment
            index += 1
            offsetInSegment = 0
        }
    }

    /// Calls `body(address, range)` for each piece of guest memory that holds
    /// the next `count` bytes (the caller keeps `count <= remaining`), `range`
    /// being where the piece falls in `0..<count`, and moves past them.
    private mutating func walk(_ count: Int,
                               _ body: (GuestAddress, Range<Int>) throws -> Void) throws {
        guard count >= 0, UInt64(count) <= remaining else {
            throw VirtqueueError.device("block request: \(count) bytes asked of a \(remaining)-byte buffer (device bug)")
        }
        var done = 0
        let total = count
        while done < total, index < segments.endIndex {
            let s = segments[index]
            let inSegment = UInt64(s.length) - offsetInSegment
            if inSegment == 0 { // zero-length segment, or this one is used up
                index += 1
                offsetInSegment = 0
                continue
            }
            let n = Int(min(inSegment, UInt64(total - done)))
            // offsetInSegment < s.length, and the segment was checked not to
            // overflow; `adding` stays checked anyway.
            guard let address = s.address.adding(offsetInSegment) else {
                throw VirtqueueError.addressOverflow(address: s.address.raw, length: s.length)
            }
            try body(address, done..<(done + n))
            done += n
            offsetInSegment += UInt64(n)
            remaining -= UInt64(n)
        }
    }

    /// The guest memory that holds the next `count` bytes (at most
    /// `remaining`), piece by piece, and moves past them.
    mutating func take(_ count: UInt64) throws -> [GuestRange] {
        guard let n = Int(exactly: count) else {
            throw VirtqueueError.device("block request: \(count) bytes asked of a \(remaining)-byte buffer (device bug)")
        }
        var ranges: [GuestRange] = []
        try walk(n) { address, range in ranges.append(GuestRange(address, UInt64(range.count))) }
        return ranges
    }

    /// Copies the next `buffer.count` bytes of the stream into `buffer`.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer, memory: GuestMemoryAccess) throws {
        try walk(buffer.count) { address, range in
            do {
                try memory.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[range]), at: address)
            } catch {
                throw VirtqueueError.memory("\(error)")
            }
        }
    }

    /// Copies `bytes` into the next `bytes.count` bytes of the stream.
    mutating func write(_ bytes: UnsafeRawBufferPointer, memory: GuestMemoryAccess) throws {
        try walk(bytes.count) { address, range in
            do {
                try memory.write(UnsafeRawBufferPointer(rebasing: bytes[range]), at: address)
            } catch {
                throw VirtqueueError.memory("\(error)")
            }
        }
    }
}
