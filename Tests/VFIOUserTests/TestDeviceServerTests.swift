import Foundation
import HostSys
import XCTest
@testable import VFIOUser

/// tests/lab/vfu-testdev.py, the vfio-user device the lab's guest drives
/// (libvfio-user's sample arms its DMA only through an 8-byte I/O access,
/// which no x86 guest can make), checked here against this client before a
/// guest relies on it: its IDs and BAR, a FILL and a SUM in both DMA modes,
/// the INTx after each, Interrupt Disable holding it back, and a command
/// with bus mastering off or outside every mapping doing no DMA.
final class TestDeviceServerTests: XCTestCase {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("tests/lab/vfu-testdev.py").path

    /// The register offsets of BAR0 (the script's docstring).
    enum Reg: UInt64 { case id = 0x00, addrLo = 0x04, addrHi = 0x08, len = 0x0C, seed = 0x10, cmd = 0x14,
                            result = 0x18, irq = 0x1C, count = 0x20, errors = 0x24, chunk = 0x28 }

    func start() throws -> (VFIOUserClient, () -> String, Process) {
        let (socket, log, p) = try launch()
        let client = try VFIOUserClient.connect(path: socket, name: "testdev", options: .init(), log: { _ in })
        addTeardownBlock { client.close() }
        return (client, log, p)
    }

    /// Starts the script with `options` on a socket in a new directory.
    func launch(_ options: [String] = []) throws -> (socket: String, log: () -> String, process: Process) {
        let (server, dir) = try SampleServerTests.launch(executable: "/usr/bin/python3", what: "vfu-testdev") { [Self.script] + options + [$0] }
        addTeardownBlock {
            if server.process.isRunning { server.process.terminate() }
            try? FileManager.default.removeItem(at: dir)
        }
        return (server.socket, { server.log }, server.process)
    }

    func reg(_ c: VFIOUserClient, _ r: Reg) throws -> UInt32 {
        let b = try c.regionRead(region: 0, offset: r.rawValue, count: 4)
        return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
    }

    func set(_ c: VFIOUserClient, _ r: Reg, _ v: UInt32) throws {
        try c.regionWrite(region: 0, offset: r.rawValue, data: withUnsafeBytes(of: v.littleEndian) { Array($0) })
    }

    func command(_ c: VFIOUserClient, _ cmd: UInt32, at address: UInt64, length: UInt32, seed: UInt32 = 0) throws {
        try set(c, .addrLo, UInt32(truncatingIfNeeded: address))
        try set(c, .addrHi, UInt32(truncatingIfNeeded: address >> 32))
        try set(c, .len, length)
        try set(c, .seed, seed)
        try set(c, .cmd, cmd)
    }

    func waitForSignal(_ e: EventFD, seconds: Double) -> Bool { e.signalled(within: seconds) }

    func run(fd: Bool) throws {
        let (client, log, process) = try start()
        try client.negotiate()
        XCTAssertEqual(try client.deviceInfo(), VFIOUserDeviceInfo(argsz: 16, flags: 3, regionCount: 9, irqCount: 5))
        let bar0 = try client.regionInfo(0)
        XCTAssertEqual(bar0.info.size, 4096)
        XCTAssertFalse(bar0.info.mappable)
        XCTAssertEqual(try client.regionRead(region: 7, offset: 0, count: 4), [0xAD, 0xDE, 0x0D, 0xF0]) // 0xdead:0xf00d
        XCTAssertEqual(try client.regionRead(region: 7, offset: 0x3D, count: 1), [1], "Interrupt Pin A")
        XCTAssertEqual(try reg(client, .id), 0x5455_4656)
        let intx = try EventFD(nonBlocking: true)
        try client.setIRQs(index: 0, action: VFIOUserSetIRQs.actionTrigger, start: 0, eventfds: [intx.fd.raw])
        let window = try MemfdWindow("vfu-testdev", size: 0x10000)
        try client.dmaMap(address: 0x100_0000, size: 0x10000, flags: [.readable, .writable], memory: window,
                          fd: fd ? window.mapping.fd.raw : nil)

        // Bus mastering off: no DMA, an error counted, still an interrupt.
        try command(client, 1, at: 0x100_0000, length: 16, seed: 9)
        XCTAssertTrue(waitForSignal(intx, seconds: 10), log())
        XCTAssertEqual(try reg(client, .errors), 1)
        XCTAssertTrue(window.bytes.allSatisfy { $0 == 0 })
        try set(client, .irq, 1)
        XCTAssertEqual(try reg(client, .irq), 0)
        try client.regionWrite(region: 7, offset: 4, data: [0x06, 0x00]) // memory space, bus master

        // FILL: 5000 bytes (two messages in message mode) at offset 0x100.
        try command(client, 1, at: 0x100_0100, length: 5000, seed: 0x41)
        XCTAssertTrue(waitForSignal(intx, seconds: 10), log())
        XCTAssertEqual(Array(window.bytes[0x100 ..< 0x100 + 5000]), (0 ..< 5000).map { UInt8(truncatingIfNeeded: 0x41 + $0) })
        XCTAssertTrue(window.bytes[..<0x100].allSatisfy { $0 == 0 })
        XCTAssertTrue(window.bytes[(0x100 + 5000)...].allSatisfy { $0 == 0 })
        XCTAssertEqual(client.counters.dmaWrites, fd ? 0 : 2)
        XCTAssertEqual(try reg(client, .irq), 1)
        XCTAssertEqual(try client.regionRead(region: 7, offset: 6, count: 1)[0] & 0x08, 0x08, "Status: Interrupt Status")

        // Interrupt Disable holds the next one back; clearing it with one pending sends it.
        try set(client, .irq, 1)
        try client.regionWrite(region: 7, offset: 4, data: [0x06, 0x04])
        let data = (0 ..< 3000).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        XCTAssertTrue(window.write(at: 0x2000, data))
        try command(client, 2, at: 0x100_2000, length: 3000)
        XCTAssertTrue((0 ..< 100).contains { _ in usleep(5_000); return (try? reg(client, .count)) == 3 })
        XCTAssertFalse(waitForSignal(intx, seconds: 0.2), "INTx sent with Interrupt Disable set")
        XCTAssertEqual(try reg(client, .result), UInt32(data.reduce(0) { $0 + Int($1) }))
        try client.regionWrite(region: 7, offset: 4, data: [0x06, 0x00])
        XCTAssertTrue(waitForSignal(intx, seconds: 10), "the pending INTx after Interrupt Disable was cleared")
        XCTAssertEqual(client.counters.dmaReads, fd ? 0 : 1)

        // READ with CHUNK 64 KiB: 40000 bytes in one DMA_READ message.
        try set(client, .irq, 1)
        try set(client, .chunk, 0x10000)
        try command(client, 3, at: 0x100_0000, length: 40000)
        XCTAssertTrue(waitForSignal(intx, seconds: 10), log())
        XCTAssertEqual(client.counters.dmaReads, fd ? 0 : 2)
        XCTAssertEqual(try reg(client, .errors), 1)

        // Outside every mapping: refused by the server itself (it knows the windows).
        try set(client, .irq, 1)
        try command(client, 2, at: 0x200_0000, length: 64)
        XCTAssertTrue(waitForSignal(intx, seconds: 10), log())
        XCTAssertEqual(try reg(client, .result), 0xFFFF_FFFF)
        XCTAssertEqual(try reg(client, .errors), 2)
        XCTAssertNil(client.disconnectReason)
        client.close()
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        XCTAssertFalse(process.isRunning)
        XCTAssertEqual(process.terminationStatus, 0, log())
        XCTAssertTrue(log().contains("fill 5000 bytes at 0x1000100 by \(fd ? "fd" : "message")"), log())
        XCTAssertTrue(log().contains("client gone after 5 commands, 2 failed"), log())
    }

    /// A server whose INTx is AUTOMASKED signals once, then waits for its
    /// unmask eventfd: VFIOUserDevice passes the resample eventfd (what KVM
    /// signals at the guest's EOI) as that, and only then does the next
    /// interrupt come. libvfio-user's INTx is not automasked: no unmask is sent.
    func testAutomaskedINTxWaitsForTheResampleEventFD() throws {
        let (socket, log, process) = try launch(["-a"])
        let device = try VFIOUserDevice.open(socket: socket, log: { _ in })
        addTeardownBlock { device.close() }
        XCTAssertTrue(device.intxAutomasked)
        let trigger = try EventFD(nonBlocking: true), resample = try EventFD(nonBlocking: true)
        try device.enableINTx(trigger: trigger.fd.raw, resample: resample.fd.raw)
        let client = device.client
        try client.regionWrite(region: 7, offset: 4, data: [0x06, 0x00])
        let window = try MemfdWindow("vfu-automask", size: 0x10000)
        try client.dmaMap(address: 0x100_0000, size: 0x10000, flags: [.readable, .writable], memory: window, fd: window.mapping.fd.raw)

        try command(client, 1, at: 0x100_0000, length: 64, seed: 1)
        XCTAssertTrue(waitForSignal(trigger, seconds: 10), log())
        try set(client, .irq, 1)
        try command(client, 1, at: 0x100_0000, length: 64, seed: 2)
        XCTAssertTrue((0 ..< 200).contains { _ in usleep(5_000); return (try? reg(client, .count)) == 2 })
        XCTAssertFalse(waitForSignal(trigger, seconds: 0.3), "a second INTx before the unmask")
        resample.signal() // the guest's EOI
        XCTAssertTrue(waitForSignal(trigger, seconds: 10), "the INTx pending at the unmask: \(log())")
        device.close()
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        XCTAssertEqual(process.terminationStatus, 0, log())
        XCTAssertTrue(log().contains("intx unmask eventfd set"), log())
        XCTAssertTrue(log().contains("client gone after 2 commands, 0 failed, 1 unmasks"), log())
    }

    func testFDMode() throws { try run(fd: true) }
    func testMessageMode() throws { try run(fd: false) }
}
