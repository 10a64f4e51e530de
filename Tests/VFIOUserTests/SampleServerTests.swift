import Foundation
import HostSys
import XCTest
@testable import VFIOUser

/// Memory of one DMA window for the tests: a memfd, so it can be passed to
/// the server in `fd` mode and read back here whatever wrote it.
final class MemfdWindow: VFIOUserDMAMemory, @unchecked Sendable {
    let mapping: SharedMemoryMapping
    init(_ name: String, size: Int) throws { mapping = try SharedMemoryMapping(name: name, size: size) }
    var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: mapping.pointer, count: mapping.size)) }
    func read(at offset: UInt64, count: Int) -> [UInt8]? {
        Array(UnsafeRawBufferPointer(start: mapping.pointer + Int(offset), count: count))
    }
    func write(at offset: UInt64, _ data: [UInt8]) -> Bool {
        data.withUnsafeBytes { (mapping.pointer + Int(offset)).copyMemory(from: $0.baseAddress!, byteCount: data.count) }
        return true
    }
}

/// The host-side harness of issue #15: libvfio-user's sample `server`
/// (../shared/vfio-user/, its README says exactly what it does) driven by
/// this client: negotiation, region and IRQ info, SET_IRQS, a BAR0 write
/// that arms the server's one-second timer, then its INTx and its DMA,
/// direct through a passed memfd and by DMA_READ/DMA_WRITE messages.
final class SampleServerTests: XCTestCase {
    /// What the server does when its timer fires, per its README: 4 x 1 KiB
    /// filled 'A'...'D' at the window's start.
    static let pattern: [UInt8] = [UInt8(ascii: "A"), UInt8(ascii: "B"), UInt8(ascii: "C"), UInt8(ascii: "D")]
        .flatMap { [UInt8](repeating: $0, count: 1024) }

    struct Server {
        let process: Process
        let socket: String
        let output: URL
        var log: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

        /// Waits for the server to exit: its status, or nil after `seconds`.
        func exitStatus(within seconds: Double) -> Int32? {
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning, Date() < deadline { usleep(20_000) }
            if process.isRunning {
                process.terminate()
                return nil
            }
            return process.terminationStatus
        }
    }

    static func serverBinary() throws -> String {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let shared = ProcessInfo.processInfo.environment["SWIFTVMM_SHARED"] ?? repo.deletingLastPathComponent().appendingPathComponent("shared").path
        let path = shared + "/vfio-user/server"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw XCTSkip("libvfio-user's sample server is not at \(path) (../shared/vfio-user beside the repository, or SWIFTVMM_SHARED)")
        }
        return path
    }

    /// Starts the sample server on a socket in a new directory; the caller
    /// ends it and removes `directory`.
    static func launch(verbose: Bool = true) throws -> (server: Server, directory: URL) {
        try launch(executable: try serverBinary(), what: "the sample server") { verbose ? ["-v", $0] : [$0] }
    }

    /// Starts a vfio-user server, `executable` with `arguments(socket)`, on a
    /// socket in a new directory (its output in server.log there), and waits
    /// up to 10 s for it to listen; the caller ends it and removes `directory`.
    static func launch(executable: String, what: String, arguments: (String) -> [String]) throws -> (server: Server, directory: URL) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vfu-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let socket = dir.appendingPathComponent("sock").path
        let output = dir.appendingPathComponent("server.log")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments(socket)
        let handle = try FileHandle(forWritingTo: output)
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        let server = Server(process: p, socket: socket, output: output)
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: socket) {
            guard p.isRunning, Date() < deadline else {
                if p.isRunning { p.terminate() }
                throw VFIOUserError.disconnected("\(what) did not listen at \(socket): \(server.log)")
            }
            usleep(10_000)
        }
        return (server, dir)
    }

    func startServer() throws -> Server {
        let (server, dir) = try Self.launch()
        addTeardownBlock {
            if server.process.isRunning { server.process.terminate() }
            try? FileManager.default.removeItem(at: dir)
        }
        return server
    }

    func connect(_ server: Server, twin: Bool) throws -> (VFIOUserClient, Locked<[String]>) {
        let lines = Locked<[String]>([])
        var options = VFIOUserClient.Options()
        options.offerTwinSocket = twin
        let client = try VFIOUserClient.connect(path: server.socket, name: "sample", options: options,
                                                log: { line in lines.mutate { $0.append(line) } })
        addTeardownBlock { client.close() }
        return (client, lines)
    }

    /// Reads the device the way the VMM will: info, regions, IRQs, config.
    func checkDevice(_ client: VFIOUserClient) throws {
        let info = try client.deviceInfo()
        XCTAssertEqual(info, VFIOUserDeviceInfo(argsz: 16, flags: 3, regionCount: 9, irqCount: 5))
        let bar0 = try client.regionInfo(0)
        XCTAssertEqual(bar0.info.size, 8)
        XCTAssertTrue(bar0.info.readable && bar0.info.writable)
        XCTAssertFalse(bar0.info.mappable)
        XCTAssertNil(bar0.descriptor)
        let bar1 = try client.regionInfo(1)
        XCTAssertEqual(bar1.info.size, 0x4000)
        XCTAssertTrue(bar1.info.mappable)
        XCTAssertEqual(bar1.info.sparseAreas, [VFIOUserSparseArea(offset: 0, size: 0x1000), VFIOUserSparseArea(offset: 0x2000, size: 0x1000)])
        let fd = try XCTUnwrap(bar1.descriptor, "BAR1 is mappable: its descriptor comes with the reply")
        defer { fd.close() }
        // BAR1 is plain memory: a REGION_WRITE shows in the mapped area (the
        // server's REGION_READ ignores the offset, its README says, so the
        // read back goes through the mapping).
        let mapping = try FileMapping(fd: fd, size: 0x1000, offset: Int(bar1.info.offset), what: "BAR1")
        try client.regionWrite(region: 1, offset: 0x10, data: [0xDE, 0xC0, 0xAD, 0x0B])
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: mapping.pointer + 0x10, count: 4)), [0xDE, 0xC0, 0xAD, 0x0B])
        let config = try client.regionInfo(7)
        XCTAssertEqual(config.info.size, 256)
        XCTAssertEqual(try client.regionRead(region: 7, offset: 0, count: 4), [0xAD, 0xDE, 0xEF, 0xBE]) // 0xdead:0xbeef
        let intx = try client.irqInfo(0)
        XCTAssertEqual(intx.count, 1)
        XCTAssertNotEqual(intx.flags & VFIOUserIRQInfo.flagEventFD, 0)
        // A region the device does not have: the server's error, and the connection stays.
        XCTAssertThrowsError(try client.regionRead(region: 12, offset: 0, count: 4)) { e in
            guard case VFIOUserError.serverError = e else { return XCTFail("\(e)") }
        }
        XCTAssertNil(client.disconnectReason)
    }

    /// Arms the timer (BAR0 takes an 8-byte absolute UNIX time) and waits
    /// for the INTx on `eventfd`.
    func fireTimer(_ client: VFIOUserClient, eventfd: EventFD) throws {
        let when = Int64(Date().timeIntervalSince1970) + 1
        try client.regionWrite(region: 0, offset: 0, data: withUnsafeBytes(of: when.littleEndian) { Array($0) })
        XCTAssertTrue(waitForSignal(eventfd, seconds: 10), "no INTx from the server within 10 s")
    }

    func waitForSignal(_ e: EventFD, seconds: Double) -> Bool { e.signalled(within: seconds) }

    func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition(), Date() < deadline { usleep(10_000) }
        return condition()
    }

    /// Runs the whole sequence; `region0FD` says whether the first window
    /// goes to the server as a descriptor (`fd` mode) or not (`message`
    /// mode). The server always does its message DMA on the first window
    /// and its direct DMA on the second, so the second always gets its fd.
    func runSequence(region0FD: Bool, twin: Bool) throws {
        let server = try startServer()
        let (client, log) = try connect(server, twin: twin)
        let caps = try client.negotiate()
        XCTAssertEqual(caps.maxMessageFDs, 8)
        XCTAssertEqual(caps.maxDataTransferSize, 1 << 20)
        XCTAssertEqual(caps.twinSocket, twin)
        XCTAssertTrue(log.value.contains { $0.contains("offered and not used: migration") }, "\(log.value)")
        try checkDevice(client)

        let intx = try EventFD(nonBlocking: true)
        try client.setIRQs(index: 0, action: VFIOUserSetIRQs.actionTrigger, start: 0, eventfds: [intx.fd.raw])
        let messageWindow = try MemfdWindow("vfu-window0", size: 0x4000)
        let directWindow = try MemfdWindow("vfu-window1", size: 0x4000)
        try client.dmaMap(address: 0x10_0000, size: 0x4000, flags: [.readable, .writable], memory: messageWindow,
                          fd: region0FD ? messageWindow.mapping.fd.raw : nil)
        try client.dmaMap(address: 0x20_0000, size: 0x4000, flags: [.readable, .writable], memory: directWindow,
                          fd: directWindow.mapping.fd.raw)
        XCTAssertEqual(client.dmaWindows.map(\.passedFD), [region0FD, true])

        try fireTimer(client, eventfd: intx)
        XCTAssertTrue(waitFor(10) { client.counters.dmaReads == 2 }, "DMA messages served: \(client.counters); server: \(server.log)")
        let c = client.counters
        XCTAssertEqual(c.dmaWrites, 4)
        XCTAssertEqual(c.dmaReads, 2)
        XCTAssertEqual(c.dmaBytes, 4 * 1024 + 2 * 2048)
        XCTAssertEqual(c.dmaRefused, 0)
        // By message into the first window, by the server's own mapping into the second.
        XCTAssertEqual(Array(messageWindow.bytes.prefix(4096)), Self.pattern)
        XCTAssertEqual(Array(directWindow.bytes.prefix(4096)), Self.pattern)
        XCTAssertTrue(messageWindow.bytes[4096...].allSatisfy { $0 == 0 })

        try client.dmaUnmap(address: 0x10_0000, size: 0x4000)
        try client.dmaUnmap(address: 0x20_0000, size: 0x4000)
        XCTAssertTrue(client.dmaWindows.isEmpty)
        XCTAssertNil(client.disconnectReason)
        client.close()
        XCTAssertEqual(server.exitStatus(within: 10), 0, server.log)
    }

    func testFDModeWithTwinSocket() throws { try runSequence(region0FD: true, twin: true) }

    func testMessageModeOnOneSocket() throws { try runSequence(region0FD: false, twin: false) }

    func testMessageModeWithTwinSocket() throws { try runSequence(region0FD: false, twin: true) }

    /// Without a descriptor the server cannot reach the memory at all: its
    /// direct DMA fails ("Bad address") and it gives up, and the window it
    /// meant to write stays untouched.
    func testWithoutDescriptorsTheServerCannotReachMemory() throws {
        let server = try startServer()
        let (client, _) = try connect(server, twin: true)
        try client.negotiate()
        let intx = try EventFD(nonBlocking: true)
        try client.setIRQs(index: 0, action: VFIOUserSetIRQs.actionTrigger, start: 0, eventfds: [intx.fd.raw])
        let first = try MemfdWindow("vfu-window0", size: 0x4000)
        let second = try MemfdWindow("vfu-window1", size: 0x4000)
        try client.dmaMap(address: 0x10_0000, size: 0x4000, flags: [.readable, .writable], memory: first)
        try client.dmaMap(address: 0x20_0000, size: 0x4000, flags: [.readable, .writable], memory: second)
        try fireTimer(client, eventfd: intx)
        XCTAssertEqual(server.exitStatus(within: 10), 1, server.log)
        XCTAssertTrue(server.log.contains("Bad address"), server.log)
        XCTAssertTrue(second.bytes.allSatisfy { $0 == 0 })
        XCTAssertTrue(first.bytes.allSatisfy { $0 == 0 })
        XCTAssertTrue(waitFor(5) { client.disconnectReason != nil })
        XCTAssertThrowsError(try client.deviceInfo()) { e in
            guard case VFIOUserError.disconnected = e else { return XCTFail("\(e)") }
        }
    }
}

extension EventFD {
    /// Whether the (non-blocking) eventfd is signalled within `seconds`; reading it clears it.
    func signalled(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let b = try? fd.read(upTo: 8), b.count == 8 { return true }
            usleep(5_000)
        }
        return false
    }
}

/// A value several threads touch, behind a lock (for the tests' log lines).
final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ v: T) { stored = v }
    var value: T { lock.lock(); defer { lock.unlock() }; return stored }
    func mutate(_ f: (inout T) -> Void) { lock.lock(); defer { lock.unlock() }; f(&stored) }
}
