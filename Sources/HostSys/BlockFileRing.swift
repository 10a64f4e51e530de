import CShim
import Glibc
import Synchronization

/// Asynchronous I/O on a `BlockFile` through io_uring (liburing): many
/// reads, writes and flushes in flight at once, submitted in batches (one
/// `io_uring_enter` per `commit`) and collected in batches (`reap`), with
/// an eventfd that becomes readable when completions are waiting, for the
/// device's I/O thread to poll.
///
/// Each request carries the caller's `tag`, which comes back with its
/// result. The buffers (the guest's own pages) must stay valid until then.
/// A transfer goes to the image's O_DIRECT descriptor when its buffers and
/// offset are aligned for it, as `BlockFile` does for its synchronous calls.
/// A completion that moved fewer bytes than asked (a short transfer), or
/// that the O_DIRECT descriptor refused (EINVAL), is finished with the
/// synchronous call on the caller's thread, so a result is always all or
/// an error. A flush is `fsync` submitted with IOSQE_IO_DRAIN: it starts
/// only after every request submitted before it has completed, so it
/// covers them all, as the synchronous `flush` covers every write that
/// returned.
///
/// Thread safety: every call locks the ring's state, so any thread may
/// submit or reap; the device calls it under its own lock anyway.
public final class BlockFileRing: Sendable {
    /// What a tagged request is, to finish a short transfer synchronously.
    private enum Kind { case read, write, flush }

    // @unchecked Sendable: `iovecs` belongs to this one request: written at
    // submission, read by the kernel, freed once when the request is reaped,
    // always with the ring's lock held or after the request left the table.
    private struct Pending: @unchecked Sendable {
        let tag: UInt64
        let kind: Kind
        let offset: UInt64
        /// The iovecs handed to the kernel: allocated at submission, freed
        /// when the request completes.
        let iovecs: UnsafeMutableBufferPointer<iovec>
        let count: Int
        let total: Int
    }

    // @unchecked Sendable: the ring is only touched with the Mutex held.
    private struct State: @unchecked Sendable {
        let ring: UnsafeMutablePointer<io_uring>
        var pending: [UInt64: Pending] = [:]
        /// Prepared but not yet handed to the kernel by `commit`.
        var unsubmitted = 0
        var nextID: UInt64 = 1
        /// Requests `commit` could not hand over (io_uring_enter failed):
        /// they complete with this error at the next `reap`.
        var failed: [(tag: UInt64, error: SysError)] = []
        var closed = false
    }

    public let file: BlockFile
    /// Readable when completions are waiting (io_uring_register_eventfd).
    public let completionEvent: EventFD
    /// Requests in flight at most (the submission queue's size); a submit
    /// beyond it is refused, so the completion queue (twice as large) never
    /// overflows.
    public let maxInFlight: Int
    /// IOV_MAX: the most iovecs one readv/writev takes.
    public static let maxSegments = BlockFile.maxIOVecs
    public var maxSegments: Int { Self.maxSegments }
    private let state: Mutex<State>

    /// Completions finished synchronously (short or refused by O_DIRECT).
    private let synchronousRetries = Atomic<UInt64>(0)
    public var retriedSynchronously: UInt64 { synchronousRetries.load(ordering: .relaxed) }

    /// Sets up a ring of `entries` submission slots (rounded up to a power
    /// of 2 by the kernel) for `file`. Throws when the kernel has no
    /// io_uring (ENOSYS), forbids it (EPERM: kernel.io_uring_disabled, a
    /// seccomp filter) or has not the memory for it.
    public init(file: BlockFile, entries: UInt32) throws {
        let ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        ring.initialize(to: io_uring())
        let r = io_uring_queue_init(entries, ring, 0)
        guard r == 0 else {
            ring.deallocate()
            throw SysError(errno: -r, operation: "io_uring_queue_init (\(entries) entries)")
        }
        let event: EventFD
        do {
            event = try EventFD(nonBlocking: true)
            let e = io_uring_register_eventfd(ring, event.fd.raw)
            guard e == 0 else { throw SysError(errno: -e, operation: "io_uring_register_eventfd") }
        } catch {
            io_uring_queue_exit(ring)
            ring.deallocate()
            throw error
        }
        self.file = file
        completionEvent = event
        maxInFlight = Int(ring.pointee.sq.ring_entries)
        state = Mutex(State(ring: ring))
    }

    deinit {
        state.withLock { s in
            io_uring_queue_exit(s.ring)
            s.ring.deallocate()
            for p in s.pending.values { p.iovecs.deallocate() }
        }
    }

    /// Requests submitted and not yet reaped.
    public var inFlight: Int { state.withLock { $0.pending.count } }

    /// Queues a read of `buffers`, one after the other, from `offset` on.
    /// False, and nothing queued, when `maxInFlight` requests are in flight
    /// or there are more than `maxSegments` buffers.
    public func submitRead(at offset: UInt64, into buffers: [UnsafeMutableRawBufferPointer], tag: UInt64) -> Bool {
        prepare(.read, at: offset, buffers.count, buffers.reduce(0) { $0 + $1.count }, tag: tag) { iov in
            for (i, b) in buffers.enumerated() { iov[i] = iovec(iov_base: b.baseAddress, iov_len: b.count) }
        }
    }

    /// Queues a write of `buffers`, one after the other, from `offset` on.
    /// False as for `submitRead`, and on a read-only image.
    public func submitWrite(at offset: UInt64, from buffers: [UnsafeRawBufferPointer], tag: UInt64) -> Bool {
        guard !file.isReadOnly else { return false }
        return prepare(.write, at: offset, buffers.count, buffers.reduce(0) { $0 + $1.count }, tag: tag) { iov in
            for (i, b) in buffers.enumerated() {
                iov[i] = iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count)
            }
        }
    }

    /// Queues an `fsync` that starts after everything submitted before it
    /// has completed (IOSQE_IO_DRAIN). False when the ring is full.
    public func submitFlush(tag: UInt64) -> Bool {
        prepare(.flush, at: 0, 0, 0, tag: tag) { _ in }
    }

    /// Queues a request of `count` buffers, `total` bytes in all, whose
    /// iovecs `fill` writes straight into the ones handed to the kernel (no
    /// copy in between: this runs for every request).
    private func prepare(_ kind: Kind, at offset: UInt64, _ count: Int, _ total: Int, tag: UInt64,
                         _ fill: (UnsafeMutableBufferPointer<iovec>) -> Void) -> Bool {
        guard count <= Self.maxSegments, kind == .flush || count > 0, let start = Int64(exactly: offset) else { return false }
        guard !start.addingReportingOverflow(Int64(total)).overflow else { return false }
        return state.withLock { s -> Bool in
            guard !s.closed, s.pending.count < maxInFlight, let sqe = io_uring_get_sqe(s.ring) else { return false }
            let iovecs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: max(count, 1))
            iovecs.initialize(repeating: iovec())
            fill(iovecs)
            let id = s.nextID
            s.nextID &+= 1
            switch kind {
            case .read, .write:
                let used = UnsafeMutableBufferPointer(rebasing: iovecs[0..<count])
                let direct = file.directDescriptor(for: used, at: start)
                let fd = (direct ?? file.bufferedDescriptor).raw
                if kind == .read {
                    io_uring_prep_readv(sqe, fd, iovecs.baseAddress, UInt32(count), UInt64(start))
                } else {
                    io_uring_prep_writev(sqe, fd, iovecs.baseAddress, UInt32(count), UInt64(start))
                }
                file.countTransfer(direct: direct != nil)
            case .flush:
                io_uring_prep_fsync(sqe, file.bufferedDescriptor.raw, 0)
                sqe.pointee.flags |= SHIM_IOSQE_IO_DRAIN
            }
            sqe.pointee.user_data = id
            s.pending[id] = Pending(tag: tag, kind: kind, offset: offset, iovecs: iovecs, count: count, total: total)
            s.unsubmitted += 1
            return true
        }
    }

    /// Hands every queued request to the kernel: one `io_uring_enter` for
    /// the batch. A failure other than EINTR/EAGAIN/EBUSY (which leave the
    /// requests queued for the next commit) fails the batch: its requests
    /// complete with that error at the next `reap`, and the completion
    /// event is signalled so the caller gets there.
    public func commit() {
        let failedNow = state.withLock { s -> Bool in
            guard s.unsubmitted > 0 else { return false }
            let r = io_uring_submit(s.ring)
            if r >= 0 {
                s.unsubmitted -= min(Int(r), s.unsubmitted)
                return false
            }
            guard -r != EINTR, -r != EAGAIN, -r != EBUSY else { return false }
            // The prepared entries are still in the submission ring: no
            // request of this batch reached the kernel. Take them back by
            // marking them failed (they are the newest `unsubmitted` ids).
            let error = SysError(errno: -r, operation: "io_uring_enter (\(file.path))")
            let newest = s.pending.keys.sorted().suffix(s.unsubmitted)
            for id in newest {
                if let p = s.pending.removeValue(forKey: id) {
                    p.iovecs.deallocate()
                    s.failed.append((p.tag, error))
                }
            }
            s.unsubmitted = 0
            return true
        }
        if failedNow { completionEvent.signal() }
    }

    /// Collects every completion waiting (draining the completion event
    /// first) and calls `body` with each request's tag and nil, or the
    /// error it ended with, in completion order. Short transfers and
    /// transfers refused by O_DIRECT are finished synchronously first.
    public func reap(_ body: (UInt64, (any Error)?) -> Void) {
        completionEvent.drain()
        var done: [(Pending, Int32)] = []
        var failed: [(tag: UInt64, error: SysError)] = []
        state.withLock { s in
            failed = s.failed
            s.failed = []
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            while io_uring_peek_cqe(s.ring, &cqe) == 0, let c = cqe {
                let id = c.pointee.user_data, res = c.pointee.res
                io_uring_cqe_seen(s.ring, c)
                if let p = s.pending.removeValue(forKey: id) { done.append((p, res)) }
            }
        }
        for f in failed { body(f.tag, f.error) }
        for (p, res) in done {
            defer { p.iovecs.deallocate() }
            body(p.tag, finish(p, res))
        }
    }

    /// Waits until no request is in flight, dropping every result (a
    /// device reset: nothing may be answered any more).
    public func waitForAll() {
        commit()
        state.withLock { s in
            s.failed = []
            while !s.pending.isEmpty {
                var cqe: UnsafeMutablePointer<io_uring_cqe>?
                let r = io_uring_wait_cqe(s.ring, &cqe)
                if r == -EINTR { continue }
                guard r == 0, let c = cqe else { break }
                let id = c.pointee.user_data
                io_uring_cqe_seen(s.ring, c)
                s.pending.removeValue(forKey: id)?.iovecs.deallocate()
            }
        }
        completionEvent.drain()
    }

    /// The result of a completed request: nil when all of it was done.
    private func finish(_ p: Pending, _ res: Int32) -> SysError? {
        let what: String
        switch p.kind {
        case .flush:
            return res < 0 ? SysError(errno: -res, operation: "fsync \(file.path)") : nil
        case .read: what = "read"
        case .write: what = "write"
        }
        if res >= 0, Int(res) == p.total { return nil }
        guard res >= 0 || -res == EINVAL || -res == EAGAIN || -res == EINTR else {
            return SysError(errno: -res, operation: "\(what) \(file.path) at offset \(p.offset)")
        }
        // Short, or refused by O_DIRECT: the whole request again, with the
        // synchronous call (which continues short transfers and falls back
        // from O_DIRECT); rewriting or rereading the same bytes is harmless.
        synchronousRetries.add(1, ordering: .relaxed)
        let buffers = p.iovecs.prefix(p.count).map { UnsafeMutableRawBufferPointer(start: $0.iov_base, count: $0.iov_len) }
        do {
            if p.kind == .read {
                try file.read(at: p.offset, into: buffers)
            } else {
                try file.write(at: p.offset, from: buffers.map { UnsafeRawBufferPointer($0) })
            }
            return nil
        } catch let e as SysError {
            return e
        } catch {
            return SysError(errno: EIO, operation: "\(what) \(file.path) at offset \(p.offset): \(error)")
        }
    }
}
