import Bits

/// Memory behind one DMA window, as the client serves it to DMA_READ and
/// DMA_WRITE messages. Offsets are from the window's start and have been
/// checked against its size before the call.
public protocol VFIOUserDMAMemory: AnyObject, Sendable {
    /// `count` bytes at `offset`, or nil when the memory cannot be read there.
    func read(at offset: UInt64, count: Int) -> [UInt8]?
    /// Writes `bytes` at `offset`; false when the memory cannot be written there.
    func write(at offset: UInt64, _ bytes: [UInt8]) -> Bool
}

/// One window the client told the server about with DMA_MAP.
public struct VFIOUserDMAWindow: Sendable {
    public let address: UInt64
    public let size: UInt64
    public let flags: VFIOUserDMAFlags
    public let memory: any VFIOUserDMAMemory
    /// Whether the server got a descriptor for it (it may then reach the
    /// memory without asking).
    public let passedFD: Bool

    public init(address: UInt64, size: UInt64, flags: VFIOUserDMAFlags, memory: any VFIOUserDMAMemory, passedFD: Bool) {
        self.address = address
        self.size = size
        self.flags = flags
        self.memory = memory
        self.passedFD = passedFD
    }

    /// One past the last address (checked at insertion: never overflows).
    var end: UInt64 { address &+ size }
}

/// The DMA windows a server may use, and the check of every DMA_READ and
/// DMA_WRITE against them: a request must lie inside one window, with that
/// window's permission, and within the transfer limit. Nothing outside a
/// window is ever read or written.
public struct VFIOUserDMATable: Sendable {
    public private(set) var windows: [VFIOUserDMAWindow] = []
    /// The most windows kept (the server's max_dma_maps, or ours).
    public var maxWindows: Int

    public init(maxWindows: Int = 65535) { self.maxWindows = maxWindows }

    /// Why a window cannot be added: empty, wrapping, overlapping or one too many.
    public func problem(adding address: UInt64, size: UInt64) -> String? {
        guard size > 0 else { return "DMA window at \(hex(address)) has size 0" }
        let (_, overflow) = address.addingReportingOverflow(size)
        guard !overflow else { return "DMA window [\(hex(address)), +\(hex(size))) wraps past the end of the address space" }
        if let other = windows.first(where: { address < $0.end && $0.address < address &+ size }) {
            return "DMA window [\(hex(address)), +\(hex(size))) overlaps the window at [\(hex(other.address)), +\(hex(other.size)))"
        }
        guard windows.count < maxWindows else { return "DMA window at \(hex(address)): already \(windows.count) windows (at most \(maxWindows))" }
        return nil
    }

    public mutating func add(_ window: VFIOUserDMAWindow) throws {
        if let why = problem(adding: window.address, size: window.size) { throw VFIOUserError.invalidRequest(why) }
        windows.append(window)
    }

    /// Removes the window that starts at `address` with exactly `size` bytes.
    @discardableResult
    public mutating func remove(address: UInt64, size: UInt64) -> VFIOUserDMAWindow? {
        guard let i = windows.firstIndex(where: { $0.address == address && $0.size == size }) else { return nil }
        return windows.remove(at: i)
    }

    public func window(at address: UInt64, size: UInt64) -> VFIOUserDMAWindow? {
        windows.first { $0.address == address && $0.size == size }
    }

    /// A refused DMA request: the errno for the reply and the reason for the log.
    public struct Refusal: Error, Equatable {
        public let errno: UInt32
        public let reason: String
    }

    /// errno values of refusals (asm-generic/errno-base.h).
    static let EPERM: UInt32 = 1
    static let EFAULT: UInt32 = 14
    static let EINVAL: UInt32 = 22

    /// The window and offset a request for `count` bytes at `address` may use.
    public func resolve(address: UInt64, count: UInt64, write: Bool, maxTransfer: UInt64) -> Result<(VFIOUserDMAWindow, UInt64), Refusal> {
        let what = write ? "DMA_WRITE" : "DMA_READ"
        guard count > 0 else { return .failure(Refusal(errno: Self.EINVAL, reason: "\(what) of 0 bytes at \(hex(address))")) }
        guard count <= maxTransfer else {
            return .failure(Refusal(errno: Self.EINVAL, reason: "\(what) of \(count) bytes at \(hex(address)): more than max_data_xfer_size \(maxTransfer)"))
        }
        let (end, overflow) = address.addingReportingOverflow(count)
        guard !overflow, let w = windows.first(where: { $0.address <= address && end <= $0.end }) else {
            return .failure(Refusal(errno: Self.EFAULT, reason: "\(what) of \(count) bytes at \(hex(address)): not inside one mapped DMA window"))
        }
        guard w.flags.contains(write ? .writable : .readable) else {
            return .failure(Refusal(errno: Self.EPERM, reason: "\(what) of \(count) bytes at \(hex(address)): the window at \(hex(w.address)) is not \(write ? "writable" : "readable")"))
        }
        return .success((w, address - w.address))
    }

    /// What a DMA_READ or DMA_WRITE from the server gets.
    public enum Answer: Equatable {
        /// The reply's payload (address, count and, for a read, the data) and the bytes moved.
        case served([UInt8], bytes: UInt64)
        /// An error reply, with the reason for the log.
        case refused(Refusal)

        /// Serves one DMA message's `payload` from `table`'s windows. The fixed
        /// fields must be whole and a write's data exactly `count` bytes (a read
        /// carries none), or the message is malformed (thrown: the client cuts
        /// the server off). A request outside the windows, against a window's
        /// permission or over `maxTransfer` is refused, and no memory is touched.
        public static func serve(payload: [UInt8], write: Bool, table: VFIOUserDMATable, maxTransfer: UInt64) throws -> Answer {
            let what = write ? "DMA_WRITE" : "DMA_READ"
            let access = try VFIOUserDMAAccess.decode(payload, what: what)
            if write {
                guard UInt64(access.data.count) == access.count else {
                    throw VFIOUserError.malformed("\(what) of \(access.count) bytes carries \(access.data.count)")
                }
            } else {
                guard access.data.isEmpty else { throw VFIOUserError.malformed("\(what) carries \(access.data.count) bytes of data") }
            }
            switch table.resolve(address: access.address, count: access.count, write: write, maxTransfer: maxTransfer) {
            case .failure(let refusal):
                return .refused(refusal)
            case .success(let (window, offset)):
                var reply = VFIOUserDMAAccess(address: access.address, count: access.count).encoded()
                if write {
                    guard window.memory.write(at: offset, access.data) else {
                        return .refused(Refusal(errno: EFAULT, reason: "\(what) at \(hex(access.address)): the memory could not be written"))
                    }
                } else {
                    guard let data = window.memory.read(at: offset, count: Int(access.count)), UInt64(data.count) == access.count else {
                        return .refused(Refusal(errno: EFAULT, reason: "\(what) at \(hex(access.address)): the memory could not be read"))
                    }
                    reply += data
                }
                return .served(reply, bytes: access.count)
            }
        }
    }
}
