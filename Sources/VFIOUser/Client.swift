import Bits
import Dispatch
import HostSys
import Synchronization

/// A reply the client waited for: header, payload and passed descriptors.
public struct VFIOUserReply: Sendable {
    public let header: VFIOUserHeader
    public let payload: [UInt8]
    public let descriptors: [FileDescriptor]
}

/// What the client sees of the server's side, counted for the exit line.
public struct VFIOUserCounters: Sendable, Equatable {
    public var requests = 0
    public var dmaReads = 0
    public var dmaWrites = 0
    public var dmaBytes: UInt64 = 0
    public var dmaRefused = 0
}

/// The client end of one vfio-user connection (QEMU docs/interop/vfio-user.rst).
///
/// Requests go out from any thread and wait for their reply, each with a
/// time limit. A reader thread per socket takes every message the server
/// sends: replies go to the request waiting for them; DMA_READ and DMA_WRITE
/// are served from the DMA windows, each checked first (`VFIOUserDMATable`).
/// A server that breaks the protocol (a malformed or oversized message,
/// descriptors where none belong, a reply to nothing, no reply in time) is
/// disconnected and said so in the log once; every request after that fails
/// at once with `.disconnected`, so no caller ever waits on a dead server.
public final class VFIOUserClient: Sendable {
    public struct Options: Sendable {
        /// Time limit of every request but DEVICE_RESET.
        public var requestTimeoutMs = 5000
        /// DEVICE_RESET's limit (the spec warns it may take long).
        public var resetTimeoutMs = 30000
        /// Ask for a second socket for the server's own commands.
        public var offerTwinSocket = true
        /// The largest DMA_READ/DMA_WRITE this client serves (its max_data_xfer_size).
        public var maxDataTransferSize = 1 << 20
        /// Descriptors this client takes in one message (its max_msg_fds).
        public var maxMessageFDs = 16
        /// A send that cannot finish in this time fails (the server stopped reading).
        public var sendTimeoutMs = 5000
        public init() {}
    }

    /// The protocol version this client speaks.
    public static let major: UInt16 = 0
    public static let minor: UInt16 = 2
    /// Room for a message's fixed fields and capability chains above its data.
    static let messageOverhead = 64 << 10

    public let name: String
    let options: Options
    let main: UnixSocket
    let log: @Sendable (String) -> Void
    let onDisconnect: @Sendable (String) -> Void

    /// A request waiting for its reply.
    final class Pending: Sendable {
        let command: VFIOUserCommand
        let maxDescriptors: Int
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<VFIOUserReply, VFIOUserError>?>(nil)
        init(command: VFIOUserCommand, maxDescriptors: Int) {
            self.command = command
            self.maxDescriptors = maxDescriptors
        }
        func finish(_ r: Result<VFIOUserReply, VFIOUserError>) {
            let first = result.withLock { slot -> Bool in
                guard slot == nil else { return false }
                slot = r
                return true
            }
            if first { done.signal() }
        }
    }

    struct State {
        var nextID: UInt16 = 1
        var pending: [UInt16: Pending] = [:]
        var disconnected: String?
        var dma = VFIOUserDMATable()
        var server = VFIOUserCapabilities()
        var twin: UnixSocket?
        var counters = VFIOUserCounters()
    }
    let state = Mutex(State())
    /// One writer at a time per socket: a message goes out whole.
    let mainSend = Mutex(())
    let twinSend = Mutex(())
    let threads = Mutex<[KickableThread]>([])

    /// Takes over `socket` (connected to the server) and starts reading it.
    /// Call `negotiate()` next.
    public init(socket: UnixSocket, name: String, options: Options = Options(),
                log: @escaping @Sendable (String) -> Void,
                onDisconnect: @escaping @Sendable (String) -> Void = { _ in }) throws {
        self.main = socket
        self.name = name
        self.options = options
        self.log = log
        self.onDisconnect = onDisconnect
        try socket.setSendTimeout(milliseconds: options.sendTimeoutMs)
        startReader(socket, twin: false)
    }

    /// Connects to the server listening at `path`.
    public static func connect(path: String, name: String, options: Options = Options(),
                               log: @escaping @Sendable (String) -> Void,
                               onDisconnect: @escaping @Sendable (String) -> Void = { _ in }) throws -> VFIOUserClient {
        // A server starting beside the VMM may have bound its socket and not yet listen: 2 s of grace.
        try VFIOUserClient(socket: UnixSocket.connect(path: path, waitForListenerMs: 2000), name: name, options: options,
                           log: log, onDisconnect: onDisconnect)
    }

    deinit { close() }

    private func startReader(_ socket: UnixSocket, twin: Bool) {
        let t = KickableThread(name: twin ? "vfu-dma" : "vfu-reader") { [weak self] in
            self?.readLoop(socket, twin: twin)
        }
        threads.withLock { $0.append(t) }
    }

    /// Ends the connection: the server sees the socket close (and, by the
    /// spec, drops our DMA windows and interrupt descriptors).
    public func close() {
        disconnect("closed by the VMM", quiet: true)
        let joining = threads.withLock { t -> [KickableThread] in
            let all = t
            t = []
            return all
        }
        for t in joining where !t.isCurrent { t.join() }
    }

    /// Why the connection ended, or nil while it is up.
    public var disconnectReason: String? { state.withLock { $0.disconnected } }
    public var counters: VFIOUserCounters { state.withLock { $0.counters } }
    public var serverCapabilities: VFIOUserCapabilities { state.withLock { $0.server } }
    public var dmaWindows: [VFIOUserDMAWindow] { state.withLock { $0.dma.windows } }

    // MARK: - Requests

    /// VERSION: proposes 0.2 with this client's capabilities, checks the
    /// server's answer (same major, minor not above ours, capabilities that
    /// parse), takes the twin socket if the server set one up, and logs the
    /// capabilities it offered that this client does not use.
    @discardableResult
    public func negotiate() throws -> VFIOUserCapabilities {
        let json = VFIOUserCapabilities.clientJSON(maxMessageFDs: options.maxMessageFDs,
                                                   maxDataTransferSize: options.maxDataTransferSize,
                                                   twinSocket: options.offerTwinSocket)
        let request = VFIOUserVersion(major: Self.major, minor: Self.minor, json: json)
        let reply = try call(.version, request.encoded(), maxReplyDescriptors: 1)
        do {
            let version = try VFIOUserVersion.decode(reply.payload)
            guard version.major == Self.major, version.minor <= Self.minor else {
                throw VFIOUserError.malformed("VERSION: the server answered \(version.major).\(version.minor) to \(Self.major).\(Self.minor)")
            }
            let caps = try version.json.map(VFIOUserCapabilities.parse) ?? VFIOUserCapabilities()
            var twin: UnixSocket?
            if caps.twinSocket {
                guard options.offerTwinSocket, let index = caps.twinSocketFDIndex, index < UInt64(reply.descriptors.count) else {
                    throw VFIOUserError.malformed("VERSION: twin_socket is on without a socket passed at its fd_index")
                }
                twin = UnixSocket(adopting: reply.descriptors[Int(index)])
                for (i, d) in reply.descriptors.enumerated() where i != Int(index) { d.close() }
            } else if !reply.descriptors.isEmpty {
                throw VFIOUserError.malformed("VERSION: \(reply.descriptors.count) descriptor(s) passed without twin_socket")
            }
            state.withLock {
                $0.server = caps
                $0.dma.maxWindows = Int(min(caps.maxDMAMaps, 65535))
                $0.twin = twin
            }
            if let twin {
                try twin.setSendTimeout(milliseconds: options.sendTimeoutMs)
                startReader(twin, twin: true)
            }
            log("vfio-user \(name): protocol \(version.major).\(version.minor), server max_msg_fds \(caps.maxMessageFDs), max_data_xfer_size \(caps.maxDataTransferSize), \(twin == nil ? "one socket" : "twin socket for the server's DMA messages")"
                + (caps.unused.isEmpty ? "" : "; offered and not used: \(caps.unused.joined(separator: ", "))"))
            return caps
        } catch let error as VFIOUserError {
            reply.descriptors.forEach { $0.close() }
            disconnect(error.description)
            throw error
        }
    }

    public func deviceInfo() throws -> VFIOUserDeviceInfo {
        let reply = try call(.deviceGetInfo, VFIOUserDeviceInfo().encoded())
        return try checked { try VFIOUserDeviceInfo.decode(reply.payload) }
    }

    /// DEVICE_GET_REGION_INFO, asked again with the size the server says it
    /// needs when the first answer did not fit. A mappable region's
    /// descriptor comes back with it (the caller owns it).
    public func regionInfo(_ index: UInt32) throws -> (info: VFIOUserRegionInfo, descriptor: FileDescriptor?) {
        var argsz = UInt32(VFIOUserRegionInfo.size) + 256
        for _ in 0..<2 {
            let reply = try call(.deviceGetRegionInfo, VFIOUserRegionInfo.request(index: index, argsz: argsz), maxReplyDescriptors: 1)
            let info: VFIOUserRegionInfo
            do {
                info = try checked { try VFIOUserRegionInfo.decode(reply.payload) }
            } catch {
                reply.descriptors.forEach { $0.close() }
                throw error
            }
            if info.argsz > argsz, info.argsz <= UInt32(Self.messageOverhead) {
                reply.descriptors.forEach { $0.close() }
                argsz = info.argsz
                continue
            }
            guard info.index == index else {
                reply.descriptors.forEach { $0.close() }
                throw violation("DEVICE_GET_REGION_INFO: asked for region \(index), the reply is for \(info.index)")
            }
            return (info, reply.descriptors.first)
        }
        throw violation("DEVICE_GET_REGION_INFO: region \(index) grows its reply on every ask")
    }

    public func irqInfo(_ index: UInt32) throws -> VFIOUserIRQInfo {
        let reply = try call(.deviceGetIRQInfo, VFIOUserIRQInfo(index: index).encoded())
        let info = try checked { try VFIOUserIRQInfo.decode(reply.payload) }
        guard info.index == index else { throw violation("DEVICE_GET_IRQ_INFO: asked for index \(index), the reply is for \(info.index)") }
        return info
    }

    /// DEVICE_SET_IRQS with eventfds: the server signals `eventfds[i]` for
    /// sub-index `start + i`. An empty list with DATA_NONE and count 0
    /// disables the whole index. More eventfds than the server takes in one
    /// message (its max_msg_fds) go in several messages, each for the next
    /// sub-indexes, as QEMU sends them.
    public func setIRQs(index: UInt32, action: UInt32, start: UInt32, eventfds: [Int32]) throws {
        guard !eventfds.isEmpty else {
            let request = VFIOUserSetIRQs(flags: VFIOUserSetIRQs.dataNone | action, index: index, start: start, count: 0)
            _ = try call(.deviceSetIRQs, request.encoded())
            return
        }
        let perMessage = Int(min(max(state.withLock { $0.server.maxMessageFDs }, 1), UInt64(UnixSocket.maxPassedDescriptors)))
        var first = 0
        while first < eventfds.count {
            let chunk = Array(eventfds[first..<min(first + perMessage, eventfds.count)])
            let (at, overflow) = start.addingReportingOverflow(UInt32(first))
            guard !overflow else { throw VFIOUserError.invalidRequest("DEVICE_SET_IRQS: sub-index \(start) + \(first) overflows") }
            let request = VFIOUserSetIRQs(flags: VFIOUserSetIRQs.dataEventFD | action, index: index, start: at, count: UInt32(chunk.count))
            _ = try call(.deviceSetIRQs, request.encoded(), descriptors: chunk)
            first += chunk.count
        }
    }

    /// REGION_READ of `count` bytes (at most the server's max_data_xfer_size).
    public func regionRead(region: UInt32, offset: UInt64, count: Int) throws -> [UInt8] {
        try checkTransfer(count, "REGION_READ")
        let reply = try call(.regionRead, VFIOUserRegionAccess(offset: offset, region: region, count: UInt32(count)).encoded())
        let access = try checked { try VFIOUserRegionAccess.decode(reply.payload, what: "REGION_READ") }
        guard access.region == region, access.offset == offset, access.count == UInt32(count), access.data.count == count else {
            throw violation("REGION_READ: asked for \(count) bytes of region \(region) at \(hex(offset)), the reply has \(access.data.count) bytes for \(access.count) of region \(access.region) at \(hex(access.offset))")
        }
        return access.data
    }

    /// REGION_WRITE of `data` (at most the server's max_data_xfer_size).
    public func regionWrite(region: UInt32, offset: UInt64, data: [UInt8]) throws {
        try checkTransfer(data.count, "REGION_WRITE")
        let request = VFIOUserRegionAccess(offset: offset, region: region, count: UInt32(data.count), data: data)
        let reply = try call(.regionWrite, request.encoded())
        let access = try checked { try VFIOUserRegionAccess.decode(reply.payload, what: "REGION_WRITE") }
        guard access.region == region, access.offset == offset, access.count == UInt32(data.count) else {
            throw violation("REGION_WRITE: wrote \(data.count) bytes of region \(region) at \(hex(offset)), the reply says \(access.count) of region \(access.region) at \(hex(access.offset))")
        }
    }

    /// DMA_MAP: the server may use [address, address + size). With `fd`, the
    /// server gets the memory's descriptor (at `fdOffset`) and may reach it
    /// directly; without, it must ask with DMA_READ/DMA_WRITE, which are
    /// served from `memory` after the checks.
    public func dmaMap(address: UInt64, size: UInt64, flags: VFIOUserDMAFlags, memory: any VFIOUserDMAMemory,
                       fd: Int32? = nil, fdOffset: UInt64 = 0) throws {
        let window = VFIOUserDMAWindow(address: address, size: size, flags: flags, memory: memory, passedFD: fd != nil)
        try state.withLock { try $0.dma.add(window) }
        let request = VFIOUserDMAMap(flags: flags, offset: fd == nil ? 0 : fdOffset, address: address, size: size)
        do {
            _ = try call(.dmaMap, request.encoded(), descriptors: fd.map { [$0] } ?? [])
        } catch {
            state.withLock { _ = $0.dma.remove(address: address, size: size) }
            throw error
        }
    }

    /// DMA_UNMAP of a window exactly as mapped. Once the reply is in, the
    /// server holds no reference to it and its DMA messages for it are refused.
    public func dmaUnmap(address: UInt64, size: UInt64) throws {
        guard state.withLock({ $0.dma.window(at: address, size: size) }) != nil else {
            throw VFIOUserError.invalidRequest("DMA_UNMAP of [\(hex(address)), +\(hex(size))): no window was mapped exactly there")
        }
        defer { state.withLock { _ = $0.dma.remove(address: address, size: size) } }
        let reply = try call(.dmaUnmap, VFIOUserDMAUnmap(address: address, size: size).encoded())
        if !reply.payload.isEmpty {
            let echo = try checked { try VFIOUserDMAUnmap.decode(reply.payload) }
            guard echo.address == address, echo.size == size else {
                throw violation("DMA_UNMAP: unmapped [\(hex(address)), +\(hex(size))), the reply echoes [\(hex(echo.address)), +\(hex(echo.size)))")
            }
        }
    }

    public func reset() throws {
        _ = try call(.deviceReset, [], timeoutMs: options.resetTimeoutMs)
    }

    private func checkTransfer(_ count: Int, _ what: String) throws {
        let limit = state.withLock { $0.server.maxDataTransferSize }
        guard count > 0, UInt64(count) <= limit else {
            throw VFIOUserError.invalidRequest("\(what) of \(count) bytes: the server takes 1 to \(limit) per message")
        }
    }

    /// Decodes a reply payload; a reply that does not decode disconnects the server.
    private func checked<T>(_ decode: () throws -> T) throws -> T {
        do { return try decode() } catch let error as VFIOUserError {
            disconnect(error.description)
            throw error
        }
    }

    private func violation(_ what: String) -> VFIOUserError {
        disconnect(what)
        return .malformed(what)
    }

    /// Sends a command and waits for its reply, within the time limit.
    public func call(_ command: VFIOUserCommand, _ payload: [UInt8], descriptors: [Int32] = [],
                     maxReplyDescriptors: Int = 0, timeoutMs: Int? = nil) throws -> VFIOUserReply {
        let (total, overflow) = payload.count.addingReportingOverflow(VFIOUserHeader.size)
        guard !overflow, total <= Int(UInt32.max) else { throw VFIOUserError.invalidRequest("\(command.name): a payload of \(payload.count) bytes") }
        let pending = Pending(command: command, maxDescriptors: maxReplyDescriptors)
        let id: UInt16 = try state.withLock { s in
            if let why = s.disconnected { throw VFIOUserError.disconnected(why) }
            var id = s.nextID
            while s.pending[id] != nil { id &+= 1 }
            s.nextID = id &+ 1
            s.pending[id] = pending
            s.counters.requests += 1
            return id
        }
        let header = VFIOUserHeader(messageID: id, command: command.rawValue, size: UInt32(total))
        do {
            try mainSend.withLock { _ in try main.send(header.encoded() + payload, descriptors: descriptors) }
        } catch {
            state.withLock { _ = $0.pending.removeValue(forKey: id) }
            let why = "sending \(command.name) failed: \(error)"
            disconnect(why)
            throw VFIOUserError.disconnected(why)
        }
        let limit = timeoutMs ?? options.requestTimeoutMs
        if pending.done.wait(timeout: .now() + .milliseconds(limit)) == .timedOut {
            state.withLock { _ = $0.pending.removeValue(forKey: id) }
            disconnect("no reply to \(command.name) (message \(id)) within \(limit) ms")
            throw VFIOUserError.timeout(command: command.name, milliseconds: limit)
        }
        let result = pending.result.withLock { $0 } ?? .failure(.disconnected("no result"))
        let reply = try result.get()
        if reply.header.reportsError {
            reply.descriptors.forEach { $0.close() }
            throw VFIOUserError.serverError(command: command.name, errno: reply.header.error)
        }
        return reply
    }

    // MARK: - The reader threads

    private func readLoop(_ socket: UnixSocket, twin: Bool) {
        while true {
            do {
                guard let message = try receiveMessage(socket) else {
                    disconnect(twin ? "the server closed its DMA socket" : "the server closed the connection")
                    return
                }
                try handle(message, on: socket, twin: twin)
            } catch let error as VFIOUserError {
                disconnect(error.description)
                return
            } catch {
                disconnect("reading from the server failed: \(error)")
                return
            }
        }
    }

    struct Incoming {
        var header: VFIOUserHeader
        var payload: [UInt8]
        var descriptors: [FileDescriptor]
    }

    private func receiveMessage(_ socket: UnixSocket) throws -> Incoming? {
        guard let head = try socket.receive(exactly: VFIOUserHeader.size, maxDescriptors: options.maxMessageFDs) else { return nil }
        var descriptors = head.descriptors
        var dropped = head.descriptorsDropped
        do {
            let header = try VFIOUserHeader.decode(head.bytes)
            let limit = options.maxDataTransferSize + Self.messageOverhead
            guard Int(header.size) <= limit else {
                throw VFIOUserError.malformed("\(VFIOUserCommand.name(of: header.command)) of \(header.size) bytes (at most \(limit))")
            }
            var payload: [UInt8] = []
            if header.size > UInt32(VFIOUserHeader.size) {
                guard let body = try socket.receive(exactly: Int(header.size) - VFIOUserHeader.size,
                                                    maxDescriptors: options.maxMessageFDs - descriptors.count) else {
                    throw VFIOUserError.malformed("the stream ended inside \(VFIOUserCommand.name(of: header.command))")
                }
                payload = body.bytes
                descriptors += body.descriptors
                dropped = dropped || body.descriptorsDropped
            }
            guard !dropped else {
                throw VFIOUserError.malformed("\(VFIOUserCommand.name(of: header.command)) passed more than \(options.maxMessageFDs) descriptors")
            }
            return Incoming(header: header, payload: payload, descriptors: descriptors)
        } catch {
            descriptors.forEach { $0.close() }
            throw error
        }
    }

    private func handle(_ m: Incoming, on socket: UnixSocket, twin: Bool) throws {
        if m.header.isReply {
            guard !twin else {
                m.descriptors.forEach { $0.close() }
                throw VFIOUserError.malformed("a reply (message \(m.header.messageID)) on the DMA socket, where only the server's commands go")
            }
            let pending = state.withLock { $0.pending.removeValue(forKey: m.header.messageID) }
            guard let pending else {
                m.descriptors.forEach { $0.close() }
                throw VFIOUserError.malformed("a reply to message \(m.header.messageID) (\(VFIOUserCommand.name(of: m.header.command))), which is not waiting for one")
            }
            var broken: String?
            if m.header.command != pending.command.rawValue {
                broken = "message \(m.header.messageID) was \(pending.command.name), its reply says \(VFIOUserCommand.name(of: m.header.command))"
            } else if m.descriptors.count > pending.maxDescriptors {
                broken = "the reply to \(pending.command.name) passed \(m.descriptors.count) descriptor(s) (at most \(pending.maxDescriptors))"
            }
            if let broken {
                // Cut off first, so the request that wakes sees the reason.
                m.descriptors.forEach { $0.close() }
                let why = "malformed message from the vfio-user server: \(broken)"
                disconnect(why)
                pending.finish(.failure(.malformed(broken)))
                return
            }
            pending.finish(.success(VFIOUserReply(header: m.header, payload: m.payload, descriptors: m.descriptors)))
            return
        }
        guard m.descriptors.isEmpty else {
            m.descriptors.forEach { $0.close() }
            throw VFIOUserError.malformed("\(VFIOUserCommand.name(of: m.header.command)) from the server passed \(m.descriptors.count) descriptor(s)")
        }
        switch VFIOUserCommand(rawValue: m.header.command) {
        case .dmaRead: try serveDMA(m, write: false, on: socket, twin: twin)
        case .dmaWrite: try serveDMA(m, write: true, on: socket, twin: twin)
        default:
            log("vfio-user \(name): the server sent \(VFIOUserCommand.name(of: m.header.command)), which a client does not take; answered ENOSYS")
            try reply(to: m.header, payload: [], failure: 38, on: socket, twin: twin)
        }
    }

    /// Serves one DMA_READ or DMA_WRITE: the fixed fields must be whole and
    /// (for a write) the data exactly `count` bytes, or the server is cut
    /// off; a request outside the windows, or over the size limit, gets an
    /// error reply and a log line, and no memory is touched.
    private func serveDMA(_ m: Incoming, write: Bool, on socket: UnixSocket, twin: Bool) throws {
        let table = state.withLock { $0.dma }
        let answer = try VFIOUserDMATable.Answer.serve(payload: m.payload, write: write, table: table,
                                                       maxTransfer: UInt64(options.maxDataTransferSize))
        switch answer {
        case .refused(let refusal):
            state.withLock { $0.counters.dmaRefused += 1 }
            log("vfio-user \(name): refused the server's \(refusal.reason)")
            try reply(to: m.header, payload: [], failure: refusal.errno, on: socket, twin: twin)
        case .served(let payload, let bytes):
            state.withLock {
                if write { $0.counters.dmaWrites += 1 } else { $0.counters.dmaReads += 1 }
                $0.counters.dmaBytes += bytes
            }
            try reply(to: m.header, payload: payload, failure: nil, on: socket, twin: twin)
        }
    }

    private func reply(to header: VFIOUserHeader, payload: [UInt8], failure code: UInt32?, on socket: UnixSocket, twin: Bool) throws {
        guard !header.wantsNoReply else { return }
        let flags = VFIOUserHeader.typeReply | (code == nil ? 0 : VFIOUserHeader.errorFlag)
        let out = VFIOUserHeader(messageID: header.messageID, command: header.command,
                                 size: UInt32(VFIOUserHeader.size + payload.count), flags: flags, error: code ?? 0)
        do {
            if twin {
                try twinSend.withLock { _ in try socket.send(out.encoded() + payload) }
            } else {
                try mainSend.withLock { _ in try socket.send(out.encoded() + payload) }
            }
        } catch {
            throw VFIOUserError.disconnected("answering the server's \(VFIOUserCommand.name(of: header.command)) failed: \(error)")
        }
    }

    /// Marks the connection dead (the first reason wins), wakes every
    /// waiting request with it and shuts the sockets, which ends the readers.
    func disconnect(_ why: String, quiet: Bool = false) {
        let (first, waiting, twin) = state.withLock { s -> (Bool, [Pending], UnixSocket?) in
            guard s.disconnected == nil else { return (false, [], nil) }
            s.disconnected = why
            let all = Array(s.pending.values)
            s.pending = [:]
            return (true, all, s.twin)
        }
        guard first else { return }
        for p in waiting { p.finish(.failure(.disconnected(why))) }
        main.shutdown()
        twin?.shutdown()
        if !quiet {
            log("vfio-user \(name): disconnected: \(why)")
            onDisconnect(why)
        }
    }
}
