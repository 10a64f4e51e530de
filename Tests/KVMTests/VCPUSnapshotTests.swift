import XCTest
@testable import KVM

final class VCPUSnapshotTests: XCTestCase {
    func testMPStatesFromKVMNumbers() {
        XCTAssertEqual(VCPUSnapshot.MPState(raw: 0), .runnable)
        XCTAssertEqual(VCPUSnapshot.MPState(raw: 1), .uninitialized)
        XCTAssertEqual(VCPUSnapshot.MPState(raw: 3), .halted)
        XCTAssertEqual(VCPUSnapshot.MPState(raw: 9), .other(9))
    }

    func testSummaryOfAHaltedLongModeVCPU() {
        let s = VCPUSnapshot(rip: 0xffff_ffff_81c3_a2f1, rsp: 0xffff_ffff_8260_3e98, rflags: 0x246, cr0: 0x8005_0033,
                             cr2: 0, cr3: 0x1c_0000, cr4: 0x3506f0, efer: 0xd01, longModeCode: true, mpState: .halted)
        XCTAssertEqual(s.summary, "RIP 0xffffffff81c3a2f1 (64-bit, interrupts on, halted in HLT), RSP 0xffffffff82603e98, RFLAGS 0x246, CR0 0x80050033, CR2 0x0, CR3 0x1c0000, CR4 0x3506f0")
    }

    func testSummaryNamesTheModeAndInterruptFlag() {
        var s = VCPUSnapshot(rip: 0xfff0, rsp: 0, rflags: 0x2, cr0: 0x10, cr2: 0, cr3: 0, cr4: 0, efer: 0,
                             longModeCode: false, mpState: .runnable)
        XCTAssertTrue(s.summary.hasPrefix("RIP 0xfff0 (real mode, interrupts off, running)"), s.summary)
        s.cr0 = 0x11
        XCTAssertTrue(s.summary.contains("(32-bit protected mode, "), s.summary)
        s.efer = 0x500
        XCTAssertTrue(s.summary.contains("(compatibility mode, "), s.summary)
        s.mpState = .uninitialized
        XCTAssertTrue(s.summary.contains("not started (waits for INIT)"), s.summary)
    }
}
