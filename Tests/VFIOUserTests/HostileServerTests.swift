import Foundation
import HostSys
import XCTest
@testable import VFIOUser

/// The server end of a socketpair, scripted by a test.
final class FakeServer: @unchecked Sendable {
    let socket: UnixSocket
    init(_ socket: UnixSocket) { self.socket = socket }

    struct Message {
        var header: VFIOUserHeader
        var payload: [UInt8]
        var descriptors: [FileDescriptor]
    }

    func read() throws -> Message {
        guard socket.waitReadable(timeoutMs: 5000), let head = try socket.receive(exactly: 16, maxDescriptors: 8) else {
            throw VFIOUserError.disconnected("fake server: nothing to read")
        }
        let h = try VFIOUserHeader.decode(head.bytes)
        let body = h.size > 16 ? try socket.receive(exactly: Int(h.size) - 16, maxDescriptors: 8) : nil
        return Message(header: h, payload: body?.bytes ?? [], descriptors: head.descriptors + (body?.descriptors ?? []))
    }

    func send(_ header: VFIOUserHeader, _ payload: [UInt8] = [], descriptors: [Int32] = []) throws {
        try socket.send(header.encoded() + payload, descriptors: descriptors)
    }

    func reply(to m: Message, _ payload: [UInt8] = [], error: UInt32? = nil, descriptors: [Int32] = []) throws {
        let flags = VFIOUserHeader.typeReply | (error == nil ? 0 : VFIOUserHeader.errorFlag)
        try send(VFIOUserHeader(messageID: m.header.messageID, command: m.header.command, size: UInt32(16 + payload.count),
                                flags: flags, error: error ?? 0), payload, descriptors: descriptors)
    }

    /// Sends the server's own command and returns its reply.
    func command(_ c: VFIOUserCommand, id: UInt16, _ payload: [UInt8], descriptors: [Int32] = []) throws -> Message {
        try send(VFIOUserHeader(messageID: id, command: c.rawValue, size: UInt32(16 + payload.count)), payload, descriptors: descriptors)
        return try read()
    }

    /// Answers VERSION with 0.2 and `json`.
    func acceptVersion(json: String = #"{"capabilities":{"max_msg_fds":8}}"#) throws {
        let m = try read()
        XCTAssertEqual(m.header.command, VFIOUserCommand.version.rawValue)
        try reply(to: m, VFIOUserVersion(major: 0, minor: 2, json: json).encoded())
    }
}

/// A server that breaks the protocol is logged and cut off, never trusted:
/// the client stays up, no request waits past its limit, no memory outside
/// a DMA window is touched.
final class HostileServerTests: XCTestCase {
    func makeClient(timeoutMs: Int = 2000) throws -> (VFIOUserClient, FakeServer, Locked<[String]>) {
        let (mine, theirs) = try UnixSocket.pair()
        let lines = Locked<[String]>([])
        var options = VFIOUserClient.Options()
        options.requestTimeoutMs = timeoutMs
        options.offerTwinSocket = false
        options.maxDataTransferSize = 4096
        let client = try VFIOUserClient(socket: mine, name: "fake", options: options, log: { l in lines.mutate { $0.append(l) } })
        addTeardownBlock { client.close() }
        return (client, FakeServer(theirs), lines)
    }

    /// Runs `body` on another thread (a request blocks until the fake server answers).
    func background<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> Locked<Result<T, Error>?> {
        let out = Locked<Result<T, Error>?>(nil)
        DispatchQueue.global().async { let r = Result { try body() }; out.mutate { $0 = r } }
        return out
    }

    func wait<T>(_ r: Locked<Result<T, Error>?>, seconds: Double = 5) -> Result<T, Error>? {
        let deadline = Date().addingTimeInterval(seconds)
        while r.value == nil, Date() < deadline { usleep(5000) }
        return r.value
    }

    func negotiated(json: String = #"{"capabilities":{"max_msg_fds":8}}"#) throws -> (VFIOUserClient, FakeServer, Locked<[String]>) {
        let (client, server, lines) = try makeClient()
        let done = background { try client.negotiate() }
        try server.acceptVersion(json: json)
        guard case .success = wait(done) else { throw XCTSkip("negotiation failed: \(String(describing: done.value))") }
        return (client, server, lines)
    }

    func testVersionWithAnotherMajorIsRefused() throws {
        let (client, server, _) = try makeClient()
        let done = background { try client.negotiate() }
        let m = try server.read()
        let sent = try VFIOUserVersion.decode(m.payload)
        XCTAssertEqual(sent.major, 0)
        XCTAssertEqual(sent.minor, 2)
        XCTAssertEqual(sent.json, #"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":4096}}"#)
        try server.reply(to: m, VFIOUserVersion(major: 1, minor: 0, json: nil).encoded())
        guard case .failure(let e)? = wait(done) else { return XCTFail("negotiation accepted major 1") }
        XCTAssertTrue("\(e)".contains("answered 1.0 to 0.2"), "\(e)")
        XCTAssertNotNil(client.disconnectReason)
    }

    func testTwinSocketWithoutTheSocketIsRefused() throws {
        let (mine, theirs) = try UnixSocket.pair()
        let client = try VFIOUserClient(socket: mine, name: "fake", log: { _ in })
        addTeardownBlock { client.close() }
        let server = FakeServer(theirs)
        let done = background { try client.negotiate() }
        try server.acceptVersion(json: #"{"capabilities":{"twin_socket":{"supported":true,"fd_index":0}}}"#)
        guard case .failure(let e)? = wait(done) else { return XCTFail("twin socket without a descriptor was accepted") }
        XCTAssertTrue("\(e)".contains("twin_socket"), "\(e)")
    }

    func testReplyToAMessageNeverSentDisconnects() throws {
        let (client, server, lines) = try negotiated()
        try server.send(VFIOUserHeader(messageID: 999, command: 4, size: 32, flags: VFIOUserHeader.typeReply), VFIOUserDeviceInfo().encoded())
        XCTAssertTrue(waitUntil { client.disconnectReason != nil })
        XCTAssertTrue(client.disconnectReason?.contains("reply to message 999") ?? false, "\(String(describing: client.disconnectReason))")
        XCTAssertTrue(lines.value.contains { $0.contains("disconnected") })
        XCTAssertThrowsError(try client.deviceInfo()) { e in
            guard case VFIOUserError.disconnected = e else { return XCTFail("\(e)") }
        }
    }

    func testOversizedMessageDisconnects() throws {
        let (client, server, _) = try negotiated()
        try server.send(VFIOUserHeader(messageID: 1, command: 12, size: 0x7FFF_FFFF))
        XCTAssertTrue(waitUntil { client.disconnectReason != nil })
        XCTAssertTrue(client.disconnectReason?.contains("DMA_WRITE of 2147483647 bytes") ?? false, "\(String(describing: client.disconnectReason))")
    }

    func testUnknownMessageTypeDisconnects() throws {
        let (client, server, _) = try negotiated()
        try server.send(VFIOUserHeader(messageID: 1, command: 11, size: 16, flags: 7))
        XCTAssertTrue(waitUntil { client.disconnectReason?.contains("message type 7") ?? false })
    }

    func testNoReplyInTimeFailsTheRequestAndCutsTheServerOff() throws {
        let (client, server, _) = try makeClient(timeoutMs: 300)
        let start = Date()
        XCTAssertThrowsError(try client.negotiate()) { e in
            XCTAssertEqual(e as? VFIOUserError, .timeout(command: "VERSION", milliseconds: 300))
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 3)
        _ = try server.read() // the VERSION that was never answered
        // At once, without sending: a request that waited would end in .timeout.
        XCTAssertThrowsError(try client.deviceInfo()) { e in
            guard case VFIOUserError.disconnected(let why) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(why.contains("no reply to VERSION"), why)
        }
        XCTAssertFalse(server.socket.waitReadable(timeoutMs: 0) && (try? server.socket.receive(exactly: 1, maxDescriptors: 0)) != nil,
                       "nothing more was sent to the server")
    }

    func testServerThatGoesAwayWakesTheWaitingRequest() throws {
        let (client, server, _) = try negotiated()
        let pending = background { try client.deviceInfo() }
        _ = try server.read()
        server.socket.shutdown()
        guard case .failure(let e)? = wait(pending, seconds: 2) else { return XCTFail("the request still waits") }
        guard case VFIOUserError.disconnected(let why) = e else { return XCTFail("\(e)") }
        XCTAssertTrue(why.contains("closed the connection"), why)
    }

    func testReplyOfTheWrongCommandOrWithDescriptorsDisconnects() throws {
        let (client, server, _) = try negotiated()
        let pending = background { try client.deviceInfo() }
        let m = try server.read()
        var wrong = m
        wrong.header.command = VFIOUserCommand.regionRead.rawValue
        try server.reply(to: wrong, VFIOUserDeviceInfo().encoded())
        guard case .failure? = wait(pending) else { return XCTFail("a REGION_READ reply answered DEVICE_GET_INFO") }
        XCTAssertTrue(client.disconnectReason?.contains("its reply says REGION_READ") ?? false, "\(String(describing: client.disconnectReason))")

        let (client2, server2, _) = try negotiated()
        let pending2 = background { try client2.deviceInfo() }
        let m2 = try server2.read()
        let e = try EventFD()
        try server2.reply(to: m2, VFIOUserDeviceInfo().encoded(), descriptors: [e.fd.raw])
        guard case .failure? = wait(pending2) else { return XCTFail("a descriptor in DEVICE_GET_INFO's reply was taken") }
        XCTAssertTrue(client2.disconnectReason?.contains("passed 1 descriptor") ?? false, "\(String(describing: client2.disconnectReason))")
    }

    func testMalformedReplyPayloadDisconnects() throws {
        let (client, server, _) = try negotiated()
        let pending = background { try client.regionRead(region: 7, offset: 0, count: 4) }
        let m = try server.read()
        // Claims 4 bytes, carries 2.
        try server.reply(to: m, VFIOUserRegionAccess(offset: 0, region: 7, count: 4, data: [1, 2]).encoded())
        guard case .failure(let e)? = wait(pending) else { return XCTFail("a short REGION_READ reply was taken") }
        XCTAssertTrue("\(e)".contains("the reply has 2 bytes"), "\(e)")
        XCTAssertNotNil(client.disconnectReason)
    }

    func testServerErrorKeepsTheConnection() throws {
        let (client, server, _) = try negotiated()
        let pending = background { try client.regionRead(region: 9, offset: 0, count: 4) }
        try server.reply(to: try server.read(), error: 22)
        guard case .failure(let e)? = wait(pending) else { return XCTFail("an error reply was taken as data") }
        XCTAssertEqual(e as? VFIOUserError, .serverError(command: "REGION_READ", errno: 22))
        XCTAssertNil(client.disconnectReason)
    }

    /// DMA messages: served inside a window, refused outside it, over the
    /// limit or against its permission, each refusal an error reply.
    func testDMARequestsAreCheckedAgainstTheWindows() throws {
        let (client, server, lines) = try negotiated()
        let rw = try MemfdWindow("rw", size: 0x2000)
        let ro = try MemfdWindow("ro", size: 0x1000)
        _ = rw.write(at: 0x100, [9, 8, 7])
        let map1 = background { try client.dmaMap(address: 0x1_0000, size: 0x2000, flags: [.readable, .writable], memory: rw) }
        let m1 = try server.read()
        XCTAssertEqual(try VFIOUserDMAMap.decode(m1.payload), VFIOUserDMAMap(flags: [.readable, .writable], offset: 0, address: 0x1_0000, size: 0x2000))
        XCTAssertTrue(m1.descriptors.isEmpty)
        try server.reply(to: m1)
        guard case .success? = wait(map1) else { return XCTFail("map") }
        let map2 = background { try client.dmaMap(address: 0x4_0000, size: 0x1000, flags: [.readable], memory: ro) }
        try server.reply(to: try server.read())
        guard case .success? = wait(map2) else { return XCTFail("map") }

        // Served: a read and a write inside the first window.
        var r = try server.command(.dmaRead, id: 40, VFIOUserDMAAccess(address: 0x1_0100, count: 3).encoded())
        XCTAssertFalse(r.header.reportsError)
        XCTAssertEqual(r.header.messageID, 40)
        XCTAssertEqual(try VFIOUserDMAAccess.decode(r.payload, what: "reply"), VFIOUserDMAAccess(address: 0x1_0100, count: 3, data: [9, 8, 7]))
        r = try server.command(.dmaWrite, id: 41, VFIOUserDMAAccess(address: 0x1_1FFE, count: 2, data: [0xAA, 0xBB]).encoded())
        XCTAssertFalse(r.header.reportsError)
        XCTAssertEqual(r.payload, VFIOUserDMAAccess(address: 0x1_1FFE, count: 2).encoded())
        XCTAssertEqual(rw.read(at: 0x1FFE, count: 2), [0xAA, 0xBB])

        // Refused: across the window's end, between windows, over the limit, to a read-only window, of 0 bytes, wrapping.
        let refused: [(VFIOUserCommand, VFIOUserDMAAccess, UInt32)] = [
            (.dmaWrite, VFIOUserDMAAccess(address: 0x1_1FFF, count: 2, data: [1, 2]), 14),
            (.dmaRead, VFIOUserDMAAccess(address: 0x3_0000, count: 8), 14),
            (.dmaRead, VFIOUserDMAAccess(address: 0x1_0000, count: 4097), 22),
            (.dmaWrite, VFIOUserDMAAccess(address: 0x4_0000, count: 1, data: [1]), 1),
            (.dmaRead, VFIOUserDMAAccess(address: 0x1_0000, count: 0), 22),
            (.dmaRead, VFIOUserDMAAccess(address: UInt64.max - 1, count: 4), 14),
        ]
        for (i, (c, a, errno)) in refused.enumerated() {
            let reply = try server.command(c, id: UInt16(50 + i), a.encoded())
            XCTAssertTrue(reply.header.reportsError, "\(c.name) \(a)")
            XCTAssertEqual(reply.header.error, errno, "\(c.name) \(a)")
            XCTAssertTrue(reply.payload.isEmpty)
        }
        XCTAssertEqual(rw.read(at: 0x1FFF, count: 1), [0xBB]) // the refused write touched nothing
        XCTAssertEqual(ro.bytes, [UInt8](repeating: 0, count: 0x1000))
        XCTAssertEqual(client.counters.dmaRefused, refused.count)
        XCTAssertEqual(lines.value.filter { $0.contains("refused the server's") }.count, refused.count)
        XCTAssertNil(client.disconnectReason)

        // After DMA_UNMAP the window is gone for the server's messages too.
        let unmap = background { try client.dmaUnmap(address: 0x1_0000, size: 0x2000) }
        let u = try server.read()
        try server.reply(to: u, u.payload)
        guard case .success? = wait(unmap) else { return XCTFail("unmap") }
        r = try server.command(.dmaRead, id: 70, VFIOUserDMAAccess(address: 0x1_0100, count: 3).encoded())
        XCTAssertTrue(r.header.reportsError)

        // A DMA_WRITE whose data does not match its count is malformed: cut off.
        try server.send(VFIOUserHeader(messageID: 80, command: 12, size: 16 + 16 + 1), VFIOUserDMAAccess(address: 0x4_0000, count: 8, data: [1]).encoded())
        XCTAssertTrue(waitUntil { client.disconnectReason?.contains("DMA_WRITE of 8 bytes carries 1") ?? false },
                      "\(String(describing: client.disconnectReason))")
    }

    func testDescriptorsWithADMACommandDisconnect() throws {
        let (client, server, _) = try negotiated()
        let e = try EventFD()
        try server.send(VFIOUserHeader(messageID: 3, command: 11, size: 32), VFIOUserDMAAccess(address: 0, count: 4).encoded(), descriptors: [e.fd.raw])
        XCTAssertTrue(waitUntil { client.disconnectReason?.contains("passed 1 descriptor") ?? false })
    }

    func testUnknownServerCommandGetsENOSYS() throws {
        let (client, server, _) = try negotiated()
        let r = try server.command(.deviceReset, id: 5, [])
        XCTAssertTrue(r.header.reportsError)
        XCTAssertEqual(r.header.error, 38)
        XCTAssertNil(client.disconnectReason)
    }

    func testClientSideChecks() throws {
        let (client, server, _) = try negotiated()
        defer { withExtendedLifetime(server) {} } // its socket stays open
        let w = try MemfdWindow("w", size: 0x1000)
        XCTAssertThrowsError(try client.dmaMap(address: 0, size: 0, flags: [.readable], memory: w))
        XCTAssertThrowsError(try client.dmaMap(address: UInt64.max - 0xFFF, size: 0x2000, flags: [.readable], memory: w))
        XCTAssertThrowsError(try client.dmaUnmap(address: 0x1000, size: 0x1000)) { e in
            XCTAssertTrue("\(e)".contains("no window was mapped exactly there"), "\(e)")
        }
        // The server takes 1 MiB per message by default; its limit is checked before sending.
        XCTAssertThrowsError(try client.regionWrite(region: 0, offset: 0, data: [UInt8](repeating: 0, count: (1 << 20) + 1)))
        XCTAssertNil(client.disconnectReason)
    }

    /// More eventfds than the server takes per message (8 here) go in
    /// several SET_IRQS, each for the next sub-indexes, each with its own.
    func testSetIRQsSplitsAtTheServersDescriptorLimit() throws {
        let (client, server, _) = try negotiated()
        let events = try (0..<19).map { _ in try EventFD() }
        let done = background { try client.setIRQs(index: 2, action: VFIOUserSetIRQs.actionTrigger, start: 0, eventfds: events.map(\.fd.raw)) }
        var seen: [(start: UInt32, count: UInt32, fds: Int)] = []
        for _ in 0..<3 {
            let m = try server.read()
            let set = try VFIOUserSetIRQs.decode(m.payload)
            XCTAssertEqual(set.flags, VFIOUserSetIRQs.dataEventFD | VFIOUserSetIRQs.actionTrigger)
            XCTAssertEqual(set.index, 2)
            seen.append((set.start, set.count, m.descriptors.count))
            m.descriptors.forEach { $0.close() }
            try server.reply(to: m)
        }
        guard case .success? = wait(done) else { return XCTFail("SET_IRQS did not finish") }
        XCTAssertEqual(seen.map(\.start), [0, 8, 16])
        XCTAssertEqual(seen.map(\.count), [8, 8, 3])
        XCTAssertEqual(seen.map(\.fds), [8, 8, 3])
        // Disabling is one message, DATA_NONE, count 0, no descriptors.
        let off = background { try client.setIRQs(index: 2, action: VFIOUserSetIRQs.actionTrigger, start: 0, eventfds: []) }
        let m = try server.read()
        XCTAssertEqual(try VFIOUserSetIRQs.decode(m.payload), VFIOUserSetIRQs(flags: VFIOUserSetIRQs.dataNone | VFIOUserSetIRQs.actionTrigger, index: 2, start: 0, count: 0))
        XCTAssertTrue(m.descriptors.isEmpty)
        try server.reply(to: m)
        guard case .success? = wait(off) else { return XCTFail("disable did not finish") }
    }

    func waitUntil(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition(), Date() < deadline { usleep(5000) }
        return condition()
    }
}
