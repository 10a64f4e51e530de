/// Where a virtio block device's sectors live. The VMM uses `BlockFile`
/// (HostSys: a raw image through pread/pwrite/fsync); tests use an array.
///
/// The device checks every request against `capacity` before it calls
/// `read` or `write`, so a backend only sees ranges inside the image. A
/// throwing call becomes VIRTIO_BLK_S_IOERR for that request (§5.2.6); the
/// device keeps running.
public protocol BlockBackend: AnyObject, Sendable {
    /// Size of the image in bytes. The device exposes the whole 512-byte
    /// sectors of it (§5.2.4 `capacity`); a partial last sector is unused.
    var capacity: UInt64 { get }
    /// Writes are refused: the device offers VIRTIO_BLK_F_RO (§5.2.3).
    var isReadOnly: Bool { get }
    /// Fills `buffer` with the bytes at `[offset, offset + buffer.count)`.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
    /// Stores `bytes` at `offset`.
    func write(at offset: UInt64, from bytes: UnsafeRawBufferPointer) throws
    /// Makes everything written so far durable (VIRTIO_BLK_T_FLUSH, §5.2.6).
    func flush() throws
    /// Makes `[offset, offset + length)` read as zeros from now on
    /// (VIRTIO_BLK_T_DISCARD, and _WRITE_ZEROES). With `deallocate` the
    /// backend may give the space back (a hole in a file); without it, it
    /// keeps the space allocated.
    func zero(at offset: UInt64, length: UInt64, deallocate: Bool) throws
    /// Fills `buffers`, one after the other, with the bytes from `offset`
    /// on (the guest's own buffers, in place: `preadv`).
    func read(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws
    /// Stores `buffers`, one after the other, from `offset` on (`pwritev`).
    func write(at offset: UInt64, from buffers: [UnsafeRawBufferPointer]) throws
}

extension BlockBackend {
    /// One `read` per buffer.
    public func read(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer]) throws {
        var at = offset
        for b in buffers {
            try read(at: at, into: b)
            at += UInt64(b.count)
        }
    }

    /// One `write` per buffer.
    public func write(at offset: UInt64, from buffers: [UnsafeRawBufferPointer]) throws {
        var at = offset
        for b in buffers {
            try write(at: at, from: b)
            at += UInt64(b.count)
        }
    }
}

/// Asynchronous I/O on a block backend: many requests in flight at once.
/// The VMM's is `BlockFileRing` (io_uring on the image); tests use a fake
/// that completes when told to.
///
/// A request is queued with a tag (false: no room, or more buffers than
/// `maxSegments`; nothing was queued), the queued ones go to the host
/// together at `commit`, and `reap` hands back each finished request's tag
/// with nil or the error it failed with. The backend tells its owner that
/// completions are waiting through a descriptor the VMM polls on the
/// device's I/O thread, which then calls `VirtioBlock.completionsReady`.
/// A flush starts after every request queued before it has finished.
/// The buffers must stay valid until the request is reaped.
public protocol BlockAsyncIO: AnyObject, Sendable {
    /// Requests in flight at most.
    var maxInFlight: Int { get }
    /// Buffers per read or write at most.
    var maxSegments: Int { get }
    func submitRead(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer], tag: UInt64) -> Bool
    func submitWrite(at offset: UInt64, from buffers: [UnsafeRawBufferPointer], tag: UInt64) -> Bool
    func submitFlush(tag: UInt64) -> Bool
    /// Hands the queued requests to the host, as one batch.
    func commit()
    /// Every finished request's tag, with nil or its error.
    func reap(_ body: (UInt64, (any Error)?) -> Void)
    /// Waits until nothing is in flight, dropping every result (a reset).
    func waitForAll()
}
