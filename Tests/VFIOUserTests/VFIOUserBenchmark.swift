import Foundation
import GuestMemory
import HostSys
import Virtio
import XCTest
@testable import VFIOUser

/// What the safe DMA mode costs, and what a REGION round trip costs: a
/// benchmark, not a test. It prints figures and ratios measured in the same
/// run and asserts nothing about speed. Run by scripts/bench-vfio-user
/// (SWIFTVMM_BENCH=vfio-user); skipped otherwise.
final class VFIOUserBenchmark: XCTestCase {
    final class Entropy: EntropySource {
        func randomBytes(count: Int) -> [UInt8] { [UInt8](repeating: 0x5A, count: count) }
    }

    func nanos(_ body: () throws -> Void) rethrows -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0)
    }

    func testBenchmark() throws {
        guard ProcessInfo.processInfo.environment["SWIFTVMM_BENCH"] == "vfio-user" else {
            throw XCTSkip("a benchmark: scripts/bench-vfio-user runs it")
        }
        try dmaModes()
        try regionRoundTrip()
    }

    /// The server writes and reads guest memory, S bytes at a time: in `fd`
    /// mode through its own mapping of the memfd (a memcpy), in `message`
    /// mode by DMA_WRITE/DMA_READ messages this client checks and serves
    /// (over a socketpair, the server a thread of this process).
    func dmaModes() throws {
        let (mine, theirs) = try UnixSocket.pair()
        var options = VFIOUserClient.Options()
        options.offerTwinSocket = false
        let client = try VFIOUserClient(socket: mine, name: "bench", options: options, log: { _ in })
        defer { client.close() }
        let server = FakeServer(theirs)
        let window = 8 << 20
        let memory = try MemfdWindow("bench", size: window)
        let negotiated = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? client.negotiate()
            try? client.dmaMap(address: 0x1000_0000, size: UInt64(window), flags: [.readable, .writable], memory: memory,
                               fd: memory.mapping.fd.raw)
            negotiated.signal()
        }
        try server.acceptVersion()
        let map = try server.read()
        let fd = try XCTUnwrap(map.descriptors.first)
        try server.reply(to: map)
        negotiated.wait()
        // The server's own view of the window, from the descriptor it was passed.
        let serverView = try FileMapping(fd: fd, size: window, what: "bench window")

        print("vfio-user DMA, server to guest memory (8 MiB window; fd: the server's memcpy into its mapping of the memfd; message: DMA_WRITE/DMA_READ over a socketpair, checked and served by the client)")
        print("| size | fd write MiB/s | message write MiB/s | ratio | message write us/op | fd read MiB/s | message read MiB/s | ratio | message read us/op |")
        print("|---|---|---|---|---|---|---|---|---|")
        var id: UInt16 = 100
        for size in [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
            let total = 64 << 20
            let ops = max(total / size, 16)
            let data = [UInt8](repeating: 0xA5, count: size)
            var sink = [UInt8](repeating: 0, count: size)
            let fdWrite = nanos {
                for i in 0..<ops {
                    let at = (i * size) % window
                    data.withUnsafeBytes { (serverView.pointer + at).copyMemory(from: $0.baseAddress!, byteCount: size) }
                }
            }
            let fdRead = nanos {
                for i in 0..<ops {
                    let at = (i * size) % window
                    sink.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: serverView.pointer + at, byteCount: size) }
                }
            }
            let messageOps = max(ops / 4, 16)
            let msgWrite = try nanos {
                for i in 0..<messageOps {
                    id &+= 1
                    let at = UInt64(0x1000_0000 + (i * size) % window)
                    let r = try server.command(.dmaWrite, id: id, VFIOUserDMAAccess(address: at, count: UInt64(size), data: data).encoded())
                    guard !r.header.reportsError else { throw VFIOUserError.serverError(command: "DMA_WRITE", errno: r.header.error) }
                }
            }
            let msgRead = try nanos {
                for i in 0..<messageOps {
                    id &+= 1
                    let at = UInt64(0x1000_0000 + (i * size) % window)
                    let r = try server.command(.dmaRead, id: id, VFIOUserDMAAccess(address: at, count: UInt64(size)).encoded())
                    guard r.payload.count == 16 + size else { throw VFIOUserError.malformed("short DMA_READ reply") }
                }
            }
            func mibs(_ ns: Double, _ n: Int) -> Double { Double(n * size) / Double(1 << 20) / (ns / 1e9) }
            let fw = mibs(fdWrite, ops), mw = mibs(msgWrite, messageOps), fr = mibs(fdRead, ops), mr = mibs(msgRead, messageOps)
            let label = size >= 1 << 20 ? "\(size >> 20) MiB" : "\(size >> 10) KiB"
            print("| \(label) | \(f0(fw)) | \(f0(mw)) | \(f2(mw / fw))x | \(f1(msgWrite / Double(messageOps) / 1000)) | \(f0(fr)) | \(f0(mr)) | \(f2(mr / fr))x | \(f1(msgRead / Double(messageOps) / 1000)) |")
        }
        XCTAssertEqual(client.counters.dmaRefused, 0)
    }

    /// A 4-byte REGION_READ and REGION_WRITE round trip to libvfio-user's
    /// sample server (config space and BAR 1), against the same access to an
    /// emulated device's BAR (virtio-pci's common config) dispatched in
    /// process. In a VM both also pay the VM exit, which is the same for both
    /// and not measured here.
    func regionRoundTrip() throws {
        let (server, dir) = try SampleServerTests.launch(verbose: false)
        defer {
            if server.process.isRunning { server.process.terminate() }
            try? FileManager.default.removeItem(at: dir)
        }
        let client = try VFIOUserClient.connect(path: server.socket, name: "bench", log: { _ in })
        defer { client.close() }
        try client.negotiate()
        let n = 20000
        _ = try client.regionRead(region: 7, offset: 0, count: 4)
        let read = try nanos { for _ in 0..<n { _ = try client.regionRead(region: 7, offset: 0, count: 4) } }
        let write = try nanos { for i in 0..<n { try client.regionWrite(region: 1, offset: 0, data: [UInt8(i & 0xFF), 0, 0, 0]) } }

        let device = try VirtioPCIDevice(device: VirtioRNG(source: Entropy()), memory: ArrayGuestMemory(size: 1 << 20)) { _ in }
        var b = [UInt8](repeating: 0, count: 4)
        let emulatedN = n * 50
        let emulated = nanos {
            for _ in 0..<emulatedN { b.withUnsafeMutableBytes { device.readBar(0, offset: 0, data: $0) } }
        }
        let r = read / Double(n), w = write / Double(n), e = emulated / Double(emulatedN)
        print("")
        print("vfio-user REGION round trip to libvfio-user's sample server (4 bytes, \(n) each), against an emulated BAR read in process (virtio-pci common config, \(emulatedN)):")
        print("| access | ns/op | against the emulated BAR |")
        print("|---|---|---|")
        print("| REGION_READ (config space) | \(f0(r)) | \(f0(r / e))x |")
        print("| REGION_WRITE (BAR 1) | \(f0(w)) | \(f0(w / e))x |")
        print("| emulated BAR read | \(f1(e)) | 1x |")
    }

    func f0(_ v: Double) -> String { String(format: "%.0f", v) }
    func f1(_ v: Double) -> String { String(format: "%.1f", v) }
    func f2(_ v: Double) -> String { String(format: "%.2f", v) }
}
