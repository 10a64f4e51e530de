import Foundation
import Devices
@testable import KVM
import Synchronization
import XCTest
@testable import VMM

/// Records bus accesses and answers reads with a fixed byte.
final class RecordingDevice: BusDevice {
    private let recorded = Mutex<(writes: [(UInt64, [UInt8])], reads: [UInt64])>(([], []))
    let answer: UInt8
    init(answer: UInt8 = 0x42) { self.answer = answer }
    var writes: [(UInt64, [UInt8])] { recorded.withLock { $0.writes } }
    var reads: [UInt64] { recorded.withLock { $0.reads } }
    func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        recorded.withLock { $0.reads.append(offset) }
        for i in 0..<data.count { data[i] = answer }
    }
    func write(offset: UInt64, data: UnsafeRawBufferPointer) { recorded.withLock { $0.writes.append((offset, Array(data))) } }
}

final class ExitHandlerTests: XCTestCase {
    /// Stands in for the data area of a run page.
    let area = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
    deinit { area.deallocate() }

    /// Exit data holding `bytes`, at the start of `area`.
    func data(_ bytes: [UInt8]) -> ExitData {
        let window = UnsafeMutableRawBufferPointer(rebasing: area[0..<bytes.count])
        window.copyBytes(from: bytes)
        return ExitData(window)
    }

    /// What the handler left in the first `count` bytes of `area`.
    func stored(_ count: Int) -> [UInt8] { Array(area[0..<count]) }

    func run(_ exit: VCPUExit, pio: Bus = Bus(), mmio: Bus = Bus()) -> ExitAction {
        handleExit(exit, vcpu: 0, pio: pio, mmio: mmio)
    }

    func testPortOutReachesDeviceAtOffset() throws {
        let d = RecordingDevice()
        let pio = Bus()
        try pio.insert(d, base: 0x3F8, length: 8)
        XCTAssertEqual(run(.ioOut(port: 0x3F9, size: 1, data: data([0x41])), pio: pio), .resume)
        XCTAssertEqual(d.writes.count, 1)
        XCTAssertEqual(d.writes[0].0, 1)
        XCTAssertEqual(d.writes[0].1, [0x41])
    }

    func testRepOutsWritesEachElement() throws {
        let d = RecordingDevice()
        let pio = Bus()
        try pio.insert(d, base: 0x1F0, length: 2)
        XCTAssertEqual(run(.ioOut(port: 0x1F0, size: 2, data: data([1, 2, 3, 4])), pio: pio), .resume)
        XCTAssertEqual(d.writes.map { $0.1 }, [[1, 2], [3, 4]])
    }

    func testRepInsFillsEachElement() throws {
        let d = RecordingDevice(answer: 0x17)
        let pio = Bus()
        try pio.insert(d, base: 0x60, length: 1)
        _ = run(.ioIn(port: 0x60, size: 1, data: data([0, 0, 0])), pio: pio)
        XCTAssertEqual(stored(3), [0x17, 0x17, 0x17])
        XCTAssertEqual(d.reads.count, 3)
    }

    func testUnclaimedPortReadsAllOnes() {
        _ = run(.ioIn(port: 0x2F8, size: 4, data: data([0, 0, 0, 0])))
        XCTAssertEqual(stored(4), [0xFF, 0xFF, 0xFF, 0xFF])
        // A write to nothing is dropped and the guest continues.
        XCTAssertEqual(run(.ioOut(port: 0x2F8, size: 1, data: data([0]))), .resume)
    }

    func testAccessStraddlingDeviceEndIsUnclaimed() throws {
        let d = RecordingDevice()
        let pio = Bus()
        try pio.insert(d, base: 0x3F8, length: 8)
        _ = run(.ioIn(port: 0x3FE, size: 4, data: data([0, 0, 0, 0])), pio: pio)
        XCTAssertEqual(d.reads.count, 0)
        XCTAssertEqual(stored(4), [0xFF, 0xFF, 0xFF, 0xFF])
    }

    func testBadPortElementSizeStops() {
        if case .stop(.vmmError) = run(.ioIn(port: 0x60, size: 0, data: data([0]))) {} else { XCTFail("size 0 must stop") }
        if case .stop(.vmmError) = run(.ioOut(port: 0x60, size: 16, data: data([UInt8](repeating: 0, count: 16)))) {} else {
            XCTFail("size 16 must stop")
        }
    }

    func testMMIOReadAndWrite() throws {
        let d = RecordingDevice(answer: 0x99)
        let mmio = Bus()
        try mmio.insert(d, base: 0xD000_0000, length: 0x1000)
        XCTAssertEqual(run(.mmioWrite(address: 0xD000_0010, data: data([1, 2, 3, 4])), mmio: mmio), .resume)
        XCTAssertEqual(d.writes.first?.0, 0x10)
        XCTAssertEqual(d.writes.first?.1, [1, 2, 3, 4])
        _ = run(.mmioRead(address: 0xD000_0020, data: data([0, 0])), mmio: mmio)
        XCTAssertEqual(stored(2), [0x99, 0x99])
        _ = run(.mmioRead(address: 0xE000_0000, data: data([UInt8](repeating: 0, count: 8))), mmio: mmio)
        XCTAssertEqual(stored(8), [UInt8](repeating: 0xFF, count: 8))
    }

    func testCrashExitsStopWithReasons() {
        XCTAssertEqual(run(.shutdown), .stop(.tripleFault(vcpu: 0, rip: nil)))
        XCTAssertEqual(run(.internalError(suberror: 1, data: [7])), .stop(.kvmInternalError(vcpu: 0, suberror: 1, data: [7], rip: nil)))
        XCTAssertEqual(run(.systemEvent(.reset)), .stop(.reset))
        XCTAssertEqual(run(.systemEvent(.shutdown)), .stop(.powerOff))
        XCTAssertEqual(run(.systemEvent(.crash)), .stop(.tripleFault(vcpu: 0, rip: nil)))
        XCTAssertEqual(run(.systemEvent(.other(9))), .stop(.vmmError("unexpected KVM system event 9 on vCPU 0")))
        XCTAssertEqual(run(.interrupted), .resume)
        if case .stop(.vmmError) = run(.unknown(reason: 1234)) {} else { XCTFail("unknown exit must stop with an error") }
        if case .stop(.vmmError) = run(.failEntry(reason: 0x80000021, cpu: 1)) {} else { XCTFail("fail entry must stop") }
    }

    func testCrashDescriptionsNameRIP() {
        let r = StopReason.kvmInternalError(vcpu: 0, suberror: VCPUExit.internalErrorEmulation, data: [], rip: nil).withRIP(0xFFFF_FFFF_8100_0000)
        XCTAssertEqual(r.description, "KVM emulation failure on vCPU 0 at RIP 0xffffffff81000000")
        XCTAssertEqual(StopReason.tripleFault(vcpu: 1, rip: 0x1000).description, "guest triple fault on vCPU 1 at RIP 0x1000 (KVM_EXIT_SHUTDOWN)")
        XCTAssertTrue(StopReason.tripleFault(vcpu: 0, rip: 0xFFF0).description.contains("last RIP is unknown"))
    }

    func testExitStatusTable() {
        XCTAssertEqual(ExitStatus.of(.powerOff), 0)
        XCTAssertEqual(ExitStatus.of(.reset), 0)
        XCTAssertEqual(ExitStatus.of(.guestVerdict(3)), 3)
        XCTAssertEqual(ExitStatus.of(.guestPanic(viaPVPanic: true)), 121)
        XCTAssertEqual(ExitStatus.of(.guestPanic(viaPVPanic: false)), 121)
        XCTAssertEqual(ExitStatus.of(.tripleFault(vcpu: 0, rip: nil)), 122)
        XCTAssertEqual(ExitStatus.of(.failPatternMatched("BUG:")), 123)
        XCTAssertEqual(ExitStatus.of(.timeout(seconds: 1)), 124)
        XCTAssertEqual(ExitStatus.of(.vmmError("x")), 70)
        XCTAssertEqual(ExitStatus.of(.signal(15)), 143)
    }

    func testStopLatchFirstReasonWins() {
        let l = StopLatch()
        let hooked = AtomicCounter()
        l.whenStopped { _ = hooked.increment() }
        XCTAssertFalse(l.isStopped)
        XCTAssertTrue(l.stop(.reset))
        XCTAssertTrue(l.isStopped)
        XCTAssertFalse(l.stop(.powerOff))
        XCTAssertEqual(l.wait(), .reset)
        XCTAssertEqual(hooked.count, 1)
        l.whenStopped { _ = hooked.increment() }
        XCTAssertEqual(hooked.count, 2, "a hook added after the stop runs at once")
    }

    /// Threads racing to stop (vCPUs, the timeout, a signal): exactly one
    /// wins, waiters get its reason, hooks run once, and whoever sees
    /// `isStopped` sees the reason too.
    func testStopLatchRaceHasOneWinner() {
        for _ in 0..<50 {
            let l = StopLatch()
            let hooked = AtomicCounter(), winners = AtomicCounter(), unseen = AtomicCounter()
            l.whenStopped { _ = hooked.increment() }
            DispatchQueue.concurrentPerform(iterations: 4) { i in
                if l.stop(.guestVerdict(UInt8(i))) { _ = winners.increment() }
                if l.isStopped, l.current == nil { _ = unseen.increment() }
            }
            XCTAssertEqual(winners.count, 1)
            XCTAssertEqual(hooked.count, 1)
            XCTAssertEqual(unseen.count, 0)
            guard case let .guestVerdict(v)? = l.current else { return XCTFail("reason \(String(describing: l.current))") }
            XCTAssertEqual(l.wait(), .guestVerdict(v))
        }
    }
}

final class ConsoleMatcherTests: XCTestCase {
    func testPatternSplitAcrossChunksMatches() throws {
        let m = try ConsoleMatcher(expect: ["login: ready"], failOn: [])
        XCTAssertNil(m.feed(Array("booting...\r\nlog".utf8)))
        XCTAssertNil(m.feed(Array("in: re".utf8)))
        XCTAssertEqual(m.feed(Array("ady".utf8)), .init(kind: .expect, pattern: "login: ready"))
        XCTAssertNil(m.feed(Array("login: ready\n".utf8)), "a matcher reports once")
    }

    func testBytewiseFeedAcrossLines() throws {
        let m = try ConsoleMatcher(expect: [], failOn: ["Kernel panic - not syncing"])
        var hit: ConsoleMatcher.Match?
        for b in Array("ok\r\nKernel panic - not syncing: VFS\r\n".utf8) where hit == nil { hit = m.feed([b]) }
        XCTAssertEqual(hit, .init(kind: .failOn, pattern: "Kernel panic - not syncing"))
    }

    func testMultiLinePatternMatchesOnNewline() throws {
        let m = try ConsoleMatcher(expect: ["first\\nsecond"], failOn: [])
        XCTAssertNil(m.feed(Array("first\r\n".utf8)))
        XCTAssertNil(m.feed(Array("seco".utf8)))
        XCTAssertEqual(m.feed(Array("nd\r\n".utf8))?.kind, .expect)
    }

    func testFailureWinsOverExpectInSameChunk() throws {
        let m = try ConsoleMatcher(expect: ["done"], failOn: ["BUG:"])
        XCTAssertEqual(m.feed(Array("BUG: bad\ndone\n".utf8))?.kind, .failOn)
    }

    func testLinuxPanicIsRecognisedLiterally() throws {
        let m = try ConsoleMatcher(expect: ["Kernel"], failOn: [], panic: [ConsoleMatcher.linuxPanic])
        XCTAssertEqual(m.feed(Array("[ 1.0] Kernel panic - not syncing: sysrq triggered crash\n".utf8))?.kind, .panic)
    }

    func testInvalidPatternNamesOption() {
        XCTAssertThrowsError(try ConsoleMatcher(expect: ["("], failOn: [])) { e in
            XCTAssertTrue("\(e)".hasPrefix("--expect: \"(\" is not a valid regular expression"), "\(e)")
        }
    }

    func testWindowBoundsMemory() throws {
        let m = try ConsoleMatcher(expect: ["never"], failOn: [], window: 64)
        for _ in 0..<1000 { XCTAssertNil(m.feed(Array("0123456789\n".utf8))) }
    }
}

final class PanicTrackerTests: XCTestCase {
    func testResetAfterPanicEndsAsPanic() {
        let l = StopLatch()
        let p = PanicTracker(latch: l, flushDelay: 60)
        XCTAssertFalse(p.endOfPanic(), "a reset without a panic is a reset")
        p.report(viaPVPanic: false)
        p.report(viaPVPanic: true)
        XCTAssertTrue(p.endOfPanic())
        XCTAssertEqual(l.wait(), .guestPanic(viaPVPanic: true))
    }

    func testPanicStopsAfterFlushDelay() {
        let l = StopLatch()
        let p = PanicTracker(latch: l, flushDelay: 0.05, consoleWait: 0.05)
        p.report(viaPVPanic: false)
        XCTAssertEqual(l.wait(), .guestPanic(viaPVPanic: false))
    }

    /// The console line comes first, pvpanic only after the stack dump: a
    /// pvpanic report within the console wait still names pvpanic.
    func testPVPanicAfterTheConsoleLineIsStillPVPanic() {
        let l = StopLatch()
        let p = PanicTracker(latch: l, flushDelay: 0.05, consoleWait: 30)
        p.report(viaPVPanic: false)
        Thread.sleep(forTimeInterval: 0.2) // longer than the flush delay
        p.report(viaPVPanic: true)
        XCTAssertEqual(l.wait(), .guestPanic(viaPVPanic: true))
    }
}
