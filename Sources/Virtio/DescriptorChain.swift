import GuestMemory

/// One buffer of a descriptor chain: a range of guest RAM the device may read
/// (device-readable) or write (device-writable). Every segment of a chain that
/// `SplitVirtqueue.popAvailable` returned has been checked: `address + length`
/// does not overflow and the range lies wholly inside one region of guest RAM.
public struct DescriptorSegment: Equatable, Sendable {
    public let address: GuestAddress
    public let length: UInt32
    public let isWritable: Bool

    public init(address: GuestAddress, length: UInt32, isWritable: Bool) {
        self.address = address
        self.length = length
        self.isWritable = isWritable
    }
}

/// A descriptor chain taken from the available ring, flattened: direct
/// descriptors and the contents of an indirect table, in chain order. The
/// structural checks (§2.7.5, §2.7.5.3) are done when the chain is popped;
/// the direction rules are the device's to apply (`requireReadableBeforeWritable`,
/// `requireWritableOnly`, `requireReadableOnly`), since only the device knows
/// which it cares about.
public struct DescriptorChain: Equatable, Sendable {
    /// The head index: what goes into the used ring's `id` (§2.7.8).
    public let head: UInt16
    public let segments: [DescriptorSegment]
    /// True when a device-readable segment follows a device-writable one,
    /// which §2.7.4.2 forbids the driver to do.
    public let hasReadableAfterWritable: Bool

    public init(head: UInt16, segments: [DescriptorSegment]) {
        self.head = head
        self.segments = segments
        var seenWritable = false
        var misordered = false
        for s in segments {
            if s.isWritable { seenWritable = true } else if seenWritable { misordered = true }
        }
        hasReadableAfterWritable = misordered
    }

    /// The readable segments, then the writable ones, without copying: for
    /// a chain whose readable buffers all come first (check
    /// `requireReadableBeforeWritable` before relying on it).
    public var readableThenWritable: (readable: ArraySlice<DescriptorSegment>, writable: ArraySlice<DescriptorSegment>) {
        let split = segments.firstIndex(where: \.isWritable) ?? segments.endIndex
        return (segments[..<split], segments[split...])
    }

    public var readableSegments: [DescriptorSegment] { segments.filter { !$0.isWritable } }
    public var writableSegments: [DescriptorSegment] { segments.filter { $0.isWritable } }
    /// Total bytes; cannot overflow, since a popped chain describes at most 2^32 bytes.
    /// Summed in place, with no filtered copy (VirtioNet asks for every frame).
    public var readableLength: UInt64 { segments.reduce(0) { $1.isWritable ? $0 : $0 + UInt64($1.length) } }
    public var writableLength: UInt64 { segments.reduce(0) { $1.isWritable ? $0 + UInt64($1.length) : $0 } }

    /// Throws `.readableAfterWritable` for devices that parse a request header
    /// followed by a response area (§2.7.4.2).
    public func requireReadableBeforeWritable() throws {
        if hasReadableAfterWritable { throw VirtqueueError.readableAfterWritable(head: head) }
    }

    /// Throws `.wrongDirection` unless every segment is device-writable
    /// (receive queues: entropy §5.4.6.1, console receiveq §5.3.6.1).
    public func requireWritableOnly() throws {
        if segments.contains(where: { !$0.isWritable }) {
            throw VirtqueueError.wrongDirection(head: head, expectedWritable: true)
        }
    }

    /// Throws `.wrongDirection` unless every segment is device-readable
    /// (transmit queues: console transmitq §5.3.6.1).
    public func requireReadableOnly() throws {
        if segments.contains(where: { $0.isWritable }) {
            throw VirtqueueError.wrongDirection(head: head, expectedWritable: false)
        }
    }

    /// Copies the device-readable bytes, in chain order, up to `limit` bytes.
    public func readReadable(memory: GuestMemoryAccess, limit: Int = Int.max) throws -> [UInt8] {
        var out: [UInt8] = []
        for s in segments where !s.isWritable {
            let room = limit - out.count
            guard room > 0 else { break }
            let n = min(Int(s.length), room)
            guard n > 0 else { continue } // zero-length segments are never checked against memory
            do {
                out += try memory.readBytes(at: s.address, count: n)
            } catch {
                throw VirtqueueError.memory("\(error)")
            }
        }
        return out
    }

    /// Writes `bytes` into the device-writable segments in chain order and
    /// returns how many fit (what goes into the used ring's `len`, §2.7.8.2).
    @discardableResult
    public func writeWritable(_ bytes: [UInt8], memory: GuestMemoryAccess) throws -> Int {
        var done = 0
        for s in segments where s.isWritable {
            guard done < bytes.count else { break }
            let n = min(Int(s.length), bytes.count - done)
            guard n > 0 else { continue }
            do {
                try memory.writeBytes(Array(bytes[done..<(done + n)]), at: s.address)
            } catch {
                throw VirtqueueError.memory("\(error)")
            }
            done += n
        }
        return done
    }
}
