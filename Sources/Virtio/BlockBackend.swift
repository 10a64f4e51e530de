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
