import CShim
import Foundation
import GuestMemory
@testable import HostSys
import Synchronization
import TestFakes
import Virtio
import XCTest

/// Records transmitted frames; can be told to fail.
final class RecordingNetBackend: NetBackend {
    private let state = Mutex<(frames: [[UInt8]], fail: Bool)>(([], false))
    struct Failure: Error {}

    var frames: [[UInt8]] { state.withLock { $0.frames } }
    var fail: Bool {
        get { state.withLock { $0.fail } }
        set { state.withLock { $0.fail = newValue } }
    }

    func send(frame: [UInt8]) throws {
        try state.withLock { s in
            if s.fail { throw Failure() }
            s.frames.append(frame)
        }
    }
}

/// virtio-net driven end to end: a fake driver posts transmit and receive
/// chains (§5.1.6) into fake guest memory.
final class NetTests: XCTestCase {
    let memory = ArrayGuestMemory(size: 0x20_0000)
    let mac = MACAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])!
    /// §5.1.6: 12-byte header with VIRTIO_F_VERSION_1; num_buffers at 10.
    let hdr = 12

    struct Rig {
        let net: VirtioNet
        let backend: RecordingNetBackend
        let rx: FakeDriver
        let tx: FakeDriver
        let irq: RecordingInterrupt
    }

    func rig(features: UInt64 = VirtioSpec.Feature.version1, backlog: Int = 4, activate: Bool = true) throws -> Rig {
        try memory.zero(at: GuestAddress(0x1000), length: 0x8000) // fresh rings
        let backend = RecordingNetBackend()
        let net = VirtioNet(backend: backend, mac: mac, rxBacklogLimit: backlog)
        let rx = FakeDriver(memory: memory, size: 8, base: 0x1000)
        let tx = FakeDriver(memory: memory, size: 8, base: 0x4000)
        let irq = RecordingInterrupt()
        if activate {
            try net.activate(memory: memory, features: features, queues: [rx.makeQueue(), tx.makeQueue()], interrupt: irq)
        }
        return Rig(net: net, backend: backend, rx: rx, tx: tx, irq: irq)
    }

    func frame(_ n: Int, seed: UInt8 = 0) -> [UInt8] {
        (0..<n).map { UInt8(truncatingIfNeeded: $0 &+ Int(seed)) }
    }

    /// A receive header as the device must write it: zeros, num_buffers = 1.
    var rxHeader: [UInt8] { [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0] }

    // MARK: identity and configuration

    func testIdentityFeaturesAndConfigurationBytes() throws {
        let net = VirtioNet(backend: RecordingNetBackend(), mac: mac)
        XCTAssertEqual(net.deviceType, 1, "§5.1.1")
        XCTAssertEqual(net.queueMaxSizes, [256, 256], "receiveq1, transmitq1; no control queue")
        XCTAssertEqual(net.deviceFeatures, 1 << 5 | 1 << 16, "VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS")
        XCTAssertEqual(net.configSize, 8)
        var b = [UInt8](repeating: 0xAA, count: 12)
        b.withUnsafeMutableBytes { net.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(b, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 0, 0, 0, 0], "mac, le16 status LINK_UP, zeros past the end")
        var two = [UInt8](repeating: 0, count: 2)
        two.withUnsafeMutableBytes { net.readConfig(offset: 6, data: $0) }
        XCTAssertEqual(two, [1, 0])
        two.withUnsafeMutableBytes { net.writeConfig(offset: 0, data: UnsafeRawBufferPointer($0)) }
        b.withUnsafeMutableBytes { net.readConfig(offset: 0, data: $0) }
        XCTAssertEqual(Array(b[0..<6]), mac.bytes, "writes are ignored")
    }

    func testLinkStateChangeNotifiesOnlyWithStatusNegotiated() throws {
        let with = try rig(features: VirtioSpec.Feature.version1 | VirtioNet.Feature.status)
        with.net.setLinkUp(false)
        var two = [UInt8](repeating: 0xFF, count: 2)
        two.withUnsafeMutableBytes { with.net.readConfig(offset: 6, data: $0) }
        XCTAssertEqual(two, [0, 0])
        XCTAssertEqual(with.irq.configChanges, 1)
        with.net.setLinkUp(false)
        XCTAssertEqual(with.irq.configChanges, 1, "no change, no notification")

        let without = try rig()
        without.net.setLinkUp(false)
        XCTAssertEqual(without.irq.configChanges, 0)
    }

    // MARK: transmit

    func testTransmitStripsTheHeaderAndSends() throws {
        let r = try rig()
        let f = frame(60, seed: 3)
        try memory.writeBytes([UInt8](repeating: 0, count: hdr) + f, at: GuestAddress(0x8000))
        let a = r.tx.post([(0x8000, UInt32(hdr + 60), false)])
        // Header split across descriptors, frame in a third.
        let g = frame(1514, seed: 9)
        try memory.writeBytes([0, 0, 0, 0, 0], at: GuestAddress(0x9000))
        try memory.writeBytes([0, 0, 0, 0, 0, 0, 0], at: GuestAddress(0x9100))
        try memory.writeBytes(g, at: GuestAddress(0xA000))
        let b = r.tx.post([(0x9000, 5, false), (0x9100, 7, false), (0xA000, 1514, false)])
        r.net.queueNotified(VirtioNet.transmitQueue)

        XCTAssertEqual(r.backend.frames, [f, g])
        let used = r.tx.takeUsed()
        XCTAssertEqual(used.map(\.id), [UInt32(a), UInt32(b)])
        XCTAssertEqual(used.map(\.len), [0, 0], "nothing written into transmit buffers")
        XCTAssertEqual(r.irq.usedQueues, [VirtioNet.transmitQueue], "one interrupt for the batch")
        XCTAssertEqual(r.net.statistics.txFrames, 2)
        XCTAssertEqual(r.net.statistics.txBytes, 60 + 1514)
    }

    func testOversizeTransmitIsDroppedAndCounted() throws {
        let r = try rig()
        // 12 + 65536 is the largest accepted; one byte more is dropped unread.
        try memory.writeBytes(frame(hdr + 65537), at: GuestAddress(0x10000))
        r.tx.post([(0x10000, UInt32(hdr + 65537), false)])
        r.tx.post([(0x10000, UInt32(hdr + 65536), false)])
        r.net.queueNotified(VirtioNet.transmitQueue)
        XCTAssertEqual(r.backend.frames.map(\.count), [65536])
        XCTAssertEqual(r.net.statistics.txDroppedOversize, 1)
        XCTAssertEqual(r.tx.takeUsed().map(\.len), [0, 0], "the dropped chain is still returned")
        XCTAssertTrue(r.irq.errors.isEmpty)
    }

    func testTransmitShorterThanHeaderPlusEthernetHeaderIsDropped() throws {
        let r = try rig()
        r.tx.post([(0x8000, UInt32(hdr + 13), false)])
        r.tx.post([(0x8000, UInt32(hdr), false)])
        r.tx.post([(0x8000, 5, false)])
        r.tx.post([(0x8000, UInt32(hdr + 14), false)])
        r.net.queueNotified(VirtioNet.transmitQueue)
        XCTAssertEqual(r.backend.frames.map(\.count), [14])
        XCTAssertEqual(r.net.statistics.txDroppedMalformed, 3)
        XCTAssertEqual(r.tx.takeUsed().count, 4)
        XCTAssertTrue(r.irq.errors.isEmpty)
    }

    func testBackendErrorIsCountedAndTheChainReturned() throws {
        let r = try rig()
        r.backend.fail = true
        r.tx.post([(0x8000, UInt32(hdr + 60), false)])
        r.net.queueNotified(VirtioNet.transmitQueue)
        XCTAssertEqual(r.net.statistics.txErrors, 1)
        XCTAssertEqual(r.tx.takeUsed().count, 1)
        r.backend.fail = false
        r.tx.post([(0x8000, UInt32(hdr + 60), false)])
        r.net.queueNotified(VirtioNet.transmitQueue)
        XCTAssertEqual(r.backend.frames.count, 1)
    }

    func testWritableTransmitBufferNeedsReset() throws {
        let r = try rig()
        let head = r.tx.post([(0x8000, UInt32(hdr), false), (0x9000, 60, true)])
        r.net.queueNotified(VirtioNet.transmitQueue)
        XCTAssertEqual(r.irq.errors, [.wrongDirection(head: head, expectedWritable: false)])
        XCTAssertEqual(r.tx.usedIndex, 0)
        XCTAssertTrue(r.backend.frames.isEmpty)
        // Broken until reset: receive drops, transmit is left alone.
        r.rx.post([(0xA000, 1526, true)])
        XCTAssertFalse(r.net.receive(frame: frame(60)))
        XCTAssertEqual(r.rx.usedIndex, 0)
    }

    func testHostileTransmitRingIsReportedNotTrapped() throws {
        let r = try rig()
        r.tx.setAvailIndex(100)
        r.net.queueNotified(VirtioNet.transmitQueue)
        XCTAssertEqual(r.irq.errors, [.availIndexJump(availIndex: 100, nextAvail: 0, queueSize: 8)])
    }

    // MARK: receive

    func testReceiveWritesHeaderAndFrameIntoAPostedBuffer() throws {
        let r = try rig()
        let head = r.rx.post([(0xA000, 1526, true)])
        let f = frame(100, seed: 1)
        XCTAssertTrue(r.net.receive(frame: f))
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xA000), count: hdr + 100), rxHeader + f)
        XCTAssertEqual(r.rx.takeUsed().map { [$0.id, $0.len] }, [[UInt32(head), UInt32(hdr + 100)]])
        XCTAssertEqual(r.irq.usedQueues, [VirtioNet.receiveQueue])
        XCTAssertEqual(r.net.statistics.rxFrames, 1)
        XCTAssertEqual(r.net.statistics.rxBytes, 100)
    }

    func testReceiveFillsAChainSplitAcrossDescriptors() throws {
        let r = try rig()
        r.rx.post([(0xA000, UInt32(hdr), true), (0xB000, 30, true), (0xC000, 1496, true)])
        let f = frame(200, seed: 5)
        XCTAssertTrue(r.net.receive(frame: f))
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xA000), count: hdr), rxHeader)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xB000), count: 30), Array(f[0..<30]))
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xC000), count: 170), Array(f[30...]))
        XCTAssertEqual(r.rx.takeUsed().map(\.len), [UInt32(hdr + 200)])
    }

    func testReceiveWithoutBuffersWaitsInTheBacklogThenDeliversInOrder() throws {
        let r = try rig(backlog: 2)
        let f1 = frame(60, seed: 1), f2 = frame(61, seed: 2), f3 = frame(62, seed: 3)
        XCTAssertFalse(r.net.receive(frame: f1))
        XCTAssertFalse(r.net.receive(frame: f2))
        XCTAssertEqual(r.net.backlogCount, 2)
        XCTAssertFalse(r.net.receive(frame: f3), "backlog full: dropped")
        XCTAssertEqual(r.net.backlogCount, 2)
        XCTAssertEqual(r.net.statistics.rxDroppedNoBuffer, 1)
        XCTAssertEqual(r.irq.usedQueues, [])

        r.rx.post([(0xA000, 1526, true)])
        r.rx.post([(0xB000, 1526, true)])
        r.rx.post([(0xC000, 1526, true)])
        r.net.queueNotified(VirtioNet.receiveQueue)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xA000), count: hdr + 60), rxHeader + f1)
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xB000), count: hdr + 61), rxHeader + f2)
        XCTAssertEqual(r.rx.takeUsed().map(\.len), [UInt32(hdr + 60), UInt32(hdr + 61)])
        XCTAssertEqual(r.net.backlogCount, 0)
        XCTAssertEqual(r.irq.usedQueues, [VirtioNet.receiveQueue])

        // A buffer is left: the next frame goes straight in.
        XCTAssertTrue(r.net.receive(frame: f3))
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xC000), count: hdr + 62), rxHeader + f3)
    }

    func testReceiveBeforeActivationIsDropped() throws {
        let r = try rig(activate: false)
        XCTAssertFalse(r.net.receive(frame: frame(60)))
        XCTAssertEqual(r.net.backlogCount, 0)
        XCTAssertEqual(r.net.statistics.rxDroppedNoBuffer, 1)
    }

    func testFrameTooBigForTheBufferIsDroppedAndTheBufferReturnedEmpty() throws {
        let r = try rig()
        let small = r.rx.post([(0xA000, 50, true)])
        let big = r.rx.post([(0xB000, 1526, true)])
        try memory.writeBytes([UInt8](repeating: 0xEE, count: 50), at: GuestAddress(0xA000))
        XCTAssertTrue(r.net.receive(frame: frame(100)), "consumed: dropped for its size, not for lack of buffers")
        XCTAssertEqual(try memory.readBytes(at: GuestAddress(0xA000), count: 50), [UInt8](repeating: 0xEE, count: 50))
        XCTAssertTrue(r.net.receive(frame: frame(100, seed: 7)))
        XCTAssertEqual(r.rx.takeUsed().map { [$0.id, $0.len] }, [[UInt32(small), 0], [UInt32(big), UInt32(hdr + 100)]])
        XCTAssertEqual(r.net.statistics.rxDroppedBufferTooSmall, 1)
        XCTAssertEqual(r.net.statistics.rxFrames, 1)
    }

    func testOversizeAndEmptyFramesFromTheHostAreDropped() throws {
        let r = try rig()
        r.rx.post([(0x10000, 0x20000, true)])
        XCTAssertTrue(r.net.receive(frame: frame(65537)))
        XCTAssertTrue(r.net.receive(frame: []))
        XCTAssertEqual(r.net.statistics.rxDroppedOversize, 2)
        XCTAssertEqual(r.rx.usedIndex, 0, "the buffer is kept for a real frame")
        XCTAssertTrue(r.net.receive(frame: frame(65536)))
        XCTAssertEqual(r.rx.takeUsed().map(\.len), [UInt32(hdr + 65536)])
    }

    func testReadableReceiveBufferNeedsReset() throws {
        let r = try rig()
        let head = r.rx.post([(0xA000, 1526, false)])
        XCTAssertFalse(r.net.receive(frame: frame(60)))
        XCTAssertEqual(r.irq.errors, [.wrongDirection(head: head, expectedWritable: true)])
        XCTAssertEqual(r.rx.usedIndex, 0)
        XCTAssertFalse(r.net.receive(frame: frame(60)))
        XCTAssertEqual(r.irq.errors.count, 1)
    }

    func testResetDropsTheBacklog() throws {
        let r = try rig()
        XCTAssertFalse(r.net.receive(frame: frame(60)))
        XCTAssertEqual(r.net.backlogCount, 1)
        r.net.reset()
        XCTAssertEqual(r.net.backlogCount, 0)
        r.rx.post([(0xA000, 1526, true)])
        r.net.queueNotified(VirtioNet.receiveQueue)
        XCTAssertEqual(r.rx.usedIndex, 0)
        XCTAssertThrowsError(try r.net.activate(memory: memory, features: 0, queues: [r.rx.makeQueue()], interrupt: r.irq))
    }

    func testRandomChainsAndFramesNeverTrap() throws {
        var rng = SplitMix64(seed: 0x4E7)
        var r = try rig(backlog: 3)
        var transmitted = 0
        var resets = 0, sent: UInt64 = 0, received: UInt64 = 0
        for iteration in 0..<400 {
            let queue = Bool.random(using: &rng) ? r.tx : r.rx
            var chain: [(addr: UInt64, len: UInt32, writable: Bool)] = []
            for k in 0..<Int.random(in: 1...3, using: &rng) {
                let len = [0, 5, 12, 26, 100, 1526, 70000].randomElement(using: &rng) ?? 0
                let writable = queue === r.rx ? !(Int.random(in: 0..<20, using: &rng) == 0)
                                              : Int.random(in: 0..<20, using: &rng) == 0
                chain.append((0x10000 + 0x20000 * UInt64(k), UInt32(len), writable))
            }
            let errorsBefore = r.irq.errors.count
            queue.post(chain)
            if queue === r.tx {
                r.net.queueNotified(VirtioNet.transmitQueue)
            } else {
                _ = r.net.receive(frame: frame([0, 1, 60, 1514, 65536, 65537].randomElement(using: &rng) ?? 0))
            }
            if r.irq.errors.count > errorsBefore {
                resets += 1
                sent += r.net.statistics.txFrames
                received += r.net.statistics.rxFrames
                r = try rig(backlog: 3) // broken: a fresh device, as after a reset
                transmitted = 0
                continue
            }
            let s = r.net.statistics
            transmitted += queue === r.tx ? 1 : 0
            XCTAssertEqual(UInt64(transmitted), s.txFrames + s.txDroppedOversize + s.txDroppedMalformed + s.txErrors,
                           "iteration \(iteration): every transmit chain is accounted for")
            XCTAssertLessThanOrEqual(r.net.backlogCount, 3)
            for u in r.rx.takeUsed() {
                XCTAssertLessThanOrEqual(u.len, UInt32(hdr + 65536), "iteration \(iteration)")
            }
        }
        sent += r.net.statistics.txFrames
        received += r.net.statistics.rxFrames
        // The loop reaches every outcome, so it tests something.
        XCTAssertGreaterThan(resets, 5)
        XCTAssertGreaterThan(sent, 20)
        XCTAssertGreaterThan(received, 20)
    }

    // MARK: MAC address

    func testMACAddressValidationAndParsing() {
        XCTAssertEqual(MACAddress(string: "52:54:00:12:34:56"), mac)
        XCTAssertNil(MACAddress(string: "52-54-00-12-34-56"), "one grammar: ':' only, as the config takes")
        XCTAssertNil(MACAddress(string: "+2:54:00:12:34:56"), "no signs")
        XCTAssertEqual(mac.description, "52:54:00:12:34:56")
        XCTAssertEqual(MACAddress(string: "02:0a:0B:00:00:01")?.bytes, [0x02, 0x0A, 0x0B, 0, 0, 1])
        XCTAssertNil(MACAddress([1, 2, 3, 4, 5]), "5 bytes")
        XCTAssertNil(MACAddress([0x02, 0, 0, 0, 0, 0, 0]), "7 bytes")
        XCTAssertNil(MACAddress([0, 0, 0, 0, 0, 0]), "all zero")
        XCTAssertNil(MACAddress([0x01, 0, 0x5E, 0, 0, 1]), "multicast (I/G bit)")
        XCTAssertNil(MACAddress(string: "52:54:00:12:34"))
        XCTAssertNil(MACAddress(string: "52:54:00:12:34:5"))
        XCTAssertNil(MACAddress(string: "52:54:00:12:34:zz"))
        XCTAssertNil(MACAddress(string: "52:54:00:12:34:56:"))
        XCTAssertNil(MACAddress(string: "01:00:5e:00:00:01"), "parses, but multicast")
        XCTAssertNil(MACAddress(string: ""))
    }

    // MARK: TapDevice

    func testTunUAPIConstantsMatchTheirLiterals() {
        // _IOW('T', 202, int): _IOC_WRITE (1) << 30 | sizeof(int) << 16 | 'T' << 8 | 202 (asm-generic/ioctl.h).
        let iow: UInt = 1 << 30 | 4 << 16 | UInt(UInt8(ascii: "T")) << 8 | 202
        XCTAssertEqual(TunUAPI.TUNSETIFF, iow)
        XCTAssertEqual(TunUAPI.TUNSETIFF, 0x4004_54CA)
        XCTAssertEqual(TunUAPI.IFF_TAP, 0x0002)
        XCTAssertEqual(TunUAPI.IFF_NO_PI, 0x1000)
        XCTAssertEqual(TunUAPI.IFNAMSIZ, 16)
        XCTAssertEqual(TunUAPI.ifreqSize, 40)
        XCTAssertEqual(TunUAPI.ifreqFlagsOffset, 16)
    }

    /// vhost-net's and the TAP offload uAPI as CShim exports it, against the
    /// numbers the headers' macros make (asm-generic/ioctl.h: dir << 30 |
    /// size << 16 | type << 8 | nr; linux/vhost.h uses type 0xAF).
    func testVhostAndTapOffloadUAPIMatchTheirLiterals() {
        func ioc(_ dir: UInt, _ type: UInt, _ nr: UInt, _ size: UInt) -> UInt { dir << 30 | size << 16 | type << 8 | nr }
        let w: UInt = 1, r: UInt = 2, t = UInt(UInt8(ascii: "T"))
        XCTAssertEqual(SHIM_VHOST_SET_OWNER, ioc(0, 0xAF, 0x01, 0))
        XCTAssertEqual(SHIM_VHOST_GET_FEATURES, ioc(r, 0xAF, 0x00, 8))
        XCTAssertEqual(SHIM_VHOST_SET_FEATURES, ioc(w, 0xAF, 0x00, 8))
        XCTAssertEqual(SHIM_VHOST_SET_MEM_TABLE, ioc(w, 0xAF, 0x03, 8), "struct vhost_memory without its regions: 8 bytes")
        XCTAssertEqual(SHIM_VHOST_SET_VRING_NUM, ioc(w, 0xAF, 0x10, 8))
        XCTAssertEqual(SHIM_VHOST_SET_VRING_ADDR, ioc(w, 0xAF, 0x11, 40))
        XCTAssertEqual(SHIM_VHOST_SET_VRING_BASE, ioc(w, 0xAF, 0x12, 8))
        XCTAssertEqual(SHIM_VHOST_GET_VRING_BASE, ioc(w | r, 0xAF, 0x12, 8))
        XCTAssertEqual(SHIM_VHOST_SET_VRING_KICK, ioc(w, 0xAF, 0x20, 8))
        XCTAssertEqual(SHIM_VHOST_SET_VRING_CALL, ioc(w, 0xAF, 0x21, 8))
        XCTAssertEqual(SHIM_VHOST_NET_SET_BACKEND, ioc(w, 0xAF, 0x30, 8))
        XCTAssertEqual(SHIM_TUNSETVNETHDRSZ, ioc(w, t, 216, 4))
        XCTAssertEqual(SHIM_TUNSETOFFLOAD, ioc(w, t, 208, 4))
        XCTAssertEqual(SHIM_IFF_VNET_HDR, 0x4000)
        XCTAssertEqual([SHIM_TUN_F_CSUM, SHIM_TUN_F_TSO4, SHIM_TUN_F_TSO6], [0x01, 0x02, 0x04])
        XCTAssertEqual(MemoryLayout<vhost_memory_region>.size, 32)
        XCTAssertEqual(MemoryLayout<vhost_vring_addr>.size, 40)
    }

    func testIfreqBytes() {
        let b = TapDevice.ifreq(name: "tap7", flags: TunUAPI.IFF_TAP | TunUAPI.IFF_NO_PI)
        XCTAssertEqual(b.count, 40)
        XCTAssertEqual(Array(b[0..<16]), Array("tap7".utf8) + [UInt8](repeating: 0, count: 12))
        XCTAssertEqual(Array(b[16..<18]), [0x02, 0x10], "le16 ifr_flags = IFF_TAP | IFF_NO_PI")
        XCTAssertEqual(Array(b[18...]), [UInt8](repeating: 0, count: 22))
        XCTAssertEqual(TapDevice.name(fromIfreq: b), "tap7")
        var full = TapDevice.ifreq(name: "", flags: 0)
        for i in 0..<16 { full[i] = UInt8(ascii: "x") } // no NUL: at most 15 bytes are a name
        XCTAssertEqual(TapDevice.name(fromIfreq: full), String(repeating: "x", count: 15))
    }

    func testTapNameValidation() {
        XCTAssertTrue(TapDevice.isValidName("tap0"))
        XCTAssertTrue(TapDevice.isValidName(String(repeating: "a", count: 15)))
        XCTAssertFalse(TapDevice.isValidName(String(repeating: "a", count: 16)), "IFNAMSIZ - 1 bytes at most")
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb", "a\u{0}b"] {
            XCTAssertFalse(TapDevice.isValidName(bad), bad.debugDescription)
        }
        XCTAssertThrowsError(try TapDevice(name: "a/b", controlPath: "/nonexistent/tun")) { error in
            XCTAssertEqual((error as? SysError)?.errno, EINVAL, "checked before anything is opened")
            XCTAssertTrue("\(error)".contains("tap name \"a/b\" is invalid"), "\(error)")
        }
    }

    func testTapOpenErrorSaysToLoadTheModule() {
        let path = "/nonexistent-swiftvmm/net/tun"
        XCTAssertThrowsError(try TapDevice(name: "tap0", controlPath: path)) { error in
            XCTAssertEqual((error as? SysError)?.errno, ENOENT)
            XCTAssertTrue("\(error)".hasPrefix("\(path) missing: modprobe tun"), "\(error)")
        }
    }

    func testTapErrorMessagesSayWhatToDo() {
        XCTAssertEqual(TapDevice.setIffFailure(name: "vm0", errno: EPERM),
                       "tap vm0: no permission (needs CAP_NET_ADMIN or a tap owned by your user: ip tuntap add vm0 mode tap user $USER)")
        XCTAssertTrue(TapDevice.setIffFailure(name: "", errno: EPERM).contains("ip tuntap add tap0 mode tap user $USER"))
        XCTAssertTrue(TapDevice.setIffFailure(name: "vm0", errno: EBUSY).contains("busy"))
        XCTAssertTrue(TapDevice.setIffFailure(name: "eth0", errno: EINVAL).contains("not a tap"))
        XCTAssertTrue(TapDevice.openFailure(path: "/dev/net/tun", errno: EACCES).contains("no permission"))
        XCTAssertEqual(TapDevice.openFailure(path: "/dev/net/tun", errno: ENODEV), "/dev/net/tun missing: modprobe tun")
    }

    func testRealTapWhenPermitted() throws {
        let tap: TapDevice
        do {
            tap = try TapDevice()
        } catch let error as SysError {
            throw XCTSkip("creating a tap needs /dev/net/tun and CAP_NET_ADMIN here: \(error)")
        }
        XCTAssertTrue(tap.name.hasPrefix("tap"), tap.name)
        try tap.setNonBlocking()
        // The interface is down: nothing to read, and no blocking either.
        XCTAssertThrowsError(try tap.readFrame()) { error in
            XCTAssertEqual((error as? SysError)?.errno, EAGAIN, "\(error)")
        }
        try tap.setNonBlocking(false)
    }
}
