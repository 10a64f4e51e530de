import Devices
import Foundation
import TestFakes
import XCTest

// Register offsets and bits (PC16550D datasheet; Linux serial_reg.h), spelled
// out so the tests do not share constants with the code under test.
private let RBR: UInt64 = 0, THR: UInt64 = 0, DLL: UInt64 = 0
private let IER: UInt64 = 1, DLM: UInt64 = 1
private let IIR: UInt64 = 2, FCR: UInt64 = 2
private let LCR: UInt64 = 3, MCR: UInt64 = 4, LSR: UInt64 = 5, MSR: UInt64 = 6, SCR: UInt64 = 7

final class Serial16550Tests: XCTestCase {
    var line: RecordingLine!
    var console: RecordingConsole!
    var uart: Serial16550!

    override func setUp() {
        line = RecordingLine()
        console = RecordingConsole()
        uart = Serial16550(interrupt: line, console: console)
    }

    func testResetValues() {
        XCTAssertEqual(uart.readByte(IER), 0x00)
        XCTAssertEqual(uart.readByte(IIR), 0x01, "no interrupt, FIFOs off")
        XCTAssertEqual(uart.readByte(LCR), 0x00)
        XCTAssertEqual(uart.readByte(MCR), 0x00)
        XCTAssertEqual(uart.readByte(LSR), 0x60, "THRE | TEMT")
        XCTAssertEqual(uart.readByte(MSR), 0xB0, "CTS | DSR | DCD so the console never waits")
        XCTAssertEqual(line.levels, [])
        XCTAssertEqual(Serial16550.com1Base, 0x3F8)
        XCTAssertEqual(Serial16550.com1IRQ, 4)
    }

    func testScratchRegister() {
        for v: UInt8 in [0x00, 0x55, 0xAA, 0xFF] {
            uart.writeByte(SCR, v)
            XCTAssertEqual(uart.readByte(SCR), v)
        }
    }

    func testDLABLatchesDivisor() {
        uart.writeByte(IER, 0x05)
        uart.writeByte(LCR, 0x80 | 0x03) // DLAB, 8N1
        uart.writeByte(DLL, 0x01)
        uart.writeByte(DLM, 0x02)
        XCTAssertEqual(uart.readByte(DLL), 0x01)
        XCTAssertEqual(uart.readByte(DLM), 0x02)
        XCTAssertEqual(console.bytes, [], "a DLL write is not a transmission")
        uart.writeByte(LCR, 0x03)
        XCTAssertEqual(uart.readByte(LCR), 0x03)
        XCTAssertEqual(uart.readByte(IER), 0x05, "IER kept while DLAB was set")
        uart.writeByte(LCR, 0x83)
        XCTAssertEqual(uart.readByte(DLL), 0x01, "divisor kept")
        XCTAssertEqual(uart.readByte(DLM), 0x02)
    }

    func testDefaultDivisorIs9600Baud() {
        uart.writeByte(LCR, 0x80)
        XCTAssertEqual(uart.readByte(DLL), 12)
        XCTAssertEqual(uart.readByte(DLM), 0)
    }

    func testTransmitGoesToConsoleAndHistory() {
        for b in Array("hi\n".utf8) { uart.writeByte(THR, b) }
        XCTAssertEqual(console.bytes, Array("hi\n".utf8))
        XCTAssertEqual(uart.recentOutput, Array("hi\n".utf8))
        XCTAssertEqual(uart.readByte(LSR), 0x60, "THR and transmitter empty after a transmission")
    }

    func testHistoryKeepsOnlyTheNewestBytes() {
        let small = Serial16550(interrupt: line, console: console, historyCapacity: 8)
        for b in UInt8(0)..<20 { small.writeByte(THR, b) }
        XCTAssertEqual(small.recentOutput, Array(12..<20))
        XCTAssertEqual(console.bytes.count, 20)
    }

    func testDefaultHistoryIs16KiB() {
        for i in 0..<(16 * 1024 + 100) { uart.writeByte(THR, UInt8(truncatingIfNeeded: i)) }
        let h = uart.recentOutput
        XCTAssertEqual(h.count, 16 * 1024)
        XCTAssertEqual(h.first, UInt8(truncatingIfNeeded: 100))
    }

    func testReceiveSetsDataReadyAndDrains() {
        XCTAssertEqual(uart.enqueueInput([0x61, 0x62, 0x63]), 1, "FIFOs off: RBR holds one byte")
        uart.writeByte(FCR, 0x01)
        XCTAssertEqual(uart.readByte(LSR) & 0x01, 0, "enabling the FIFO cleared it")
        XCTAssertEqual(uart.enqueueInput([0x61, 0x62, 0x63]), 3)
        XCTAssertEqual(uart.readByte(LSR), 0x61, "DR | THRE | TEMT")
        XCTAssertEqual(uart.readByte(RBR), 0x61)
        XCTAssertEqual(uart.readByte(RBR), 0x62)
        XCTAssertEqual(uart.readByte(LSR) & 0x01, 0x01)
        XCTAssertEqual(uart.readByte(RBR), 0x63)
        XCTAssertEqual(uart.readByte(LSR), 0x60, "DR cleared once empty")
        XCTAssertEqual(uart.readByte(RBR), 0x63, "an empty RBR reads its last byte")
    }

    func testInputSpaceIsBounded() {
        uart.writeByte(FCR, 0x01)
        XCTAssertEqual(uart.inputSpace, Serial16550.defaultRxCapacity)
        let big = [UInt8](repeating: 0x41, count: 100)
        XCTAssertEqual(uart.enqueueInput(big), Serial16550.defaultRxCapacity)
        XCTAssertEqual(uart.inputSpace, 0)
        XCTAssertEqual(uart.enqueueInput([0x42]), 0, "held back by the caller, not dropped")
        XCTAssertEqual(uart.readByte(LSR) & 0x02, 0, "refusing input is not an overrun")
        _ = uart.readByte(RBR)
        XCTAssertEqual(uart.inputSpace, 1)
        XCTAssertEqual(uart.enqueueInput([]), 0)
    }

    func testInputSpaceHandlerFiresWhenSpaceReturns() {
        let calls = RecordingSink()
        uart.setInputSpaceHandler { calls.machineEvent(.bootComplete) }
        XCTAssertEqual(uart.enqueueInput([1, 2]), 1) // FIFOs off: full after one byte
        XCTAssertEqual(calls.events.count, 0)
        _ = uart.readByte(LSR)
        XCTAssertEqual(calls.events.count, 0, "no space was freed")
        _ = uart.readByte(RBR)
        XCTAssertEqual(calls.events.count, 1)
        _ = uart.readByte(RBR)
        XCTAssertEqual(calls.events.count, 1, "space was not zero before")
        XCTAssertEqual(uart.enqueueInput([3]), 1)
        uart.writeByte(FCR, 0x01) // enabling the FIFO clears it and makes room
        XCTAssertEqual(calls.events.count, 2)
        uart.setInputSpaceHandler(nil)
        XCTAssertEqual(uart.enqueueInput([UInt8](repeating: 0, count: 64)), 64)
        _ = uart.readByte(RBR)
        XCTAssertEqual(calls.events.count, 2)
    }

    func testFCRClearReceiveFIFO() {
        uart.writeByte(FCR, 0x01)
        XCTAssertEqual(uart.enqueueInput([1, 2, 3]), 3)
        uart.writeByte(FCR, 0x01 | 0x02)
        XCTAssertEqual(uart.readByte(LSR) & 0x01, 0)
        XCTAssertEqual(uart.readByte(IIR) & 0xC0, 0xC0, "FIFOs still on")
        XCTAssertEqual(uart.enqueueInput([4]), 1)
        uart.writeByte(FCR, 0x02) // FCR0 = 0: FIFOs off, both cleared
        XCTAssertEqual(uart.readByte(LSR) & 0x01, 0)
        XCTAssertEqual(uart.readByte(IIR), 0x01)
    }

    func testIIRShowsFIFOsEnabled() {
        uart.writeByte(FCR, 0x01)
        XCTAssertEqual(uart.readByte(IIR), 0xC1)
        uart.writeByte(FCR, 0xC7)
        XCTAssertEqual(uart.readByte(IIR), 0xC1)
        uart.writeByte(FCR, 0x00)
        XCTAssertEqual(uart.readByte(IIR), 0x01)
    }

    /// The probes of Linux's `autoconfig()` / `autoconfig_16550a()`.
    func testLinuxAutoconfigSeesA16550A() {
        // Existence test: IER bits 0-3 stick, and only those.
        uart.writeByte(IER, 0x00)
        XCTAssertEqual(uart.readByte(IER) & 0x0F, 0)
        uart.writeByte(IER, 0xFF)
        XCTAssertEqual(uart.readByte(IER), 0x0F, "bits 4-7 (UUE etc.) read 0 on a 16550A")
        uart.writeByte(IER, 0x00)
        // Loopback test: MCR = LOOP | OUT2 | RTS must show CTS | DCD.
        uart.writeByte(MCR, 0x1A)
        XCTAssertEqual(uart.readByte(MSR) & 0xF0, 0x90)
        uart.writeByte(MCR, 0x00)
        // FIFO test: IIR >> 6 == 3 means 16550A.
        uart.writeByte(FCR, 0x01)
        XCTAssertEqual(uart.readByte(IIR) >> 6, 3)
        // The 16750 test: 64-byte FIFO bit must not show.
        uart.writeByte(FCR, 0x01 | 0x20)
        XCTAssertEqual(uart.readByte(IIR) & 0x20, 0)
        // EFR probe (LCR = 0xBF): offset 2 still reads IIR, which is not 0.
        uart.writeByte(LCR, 0xBF)
        XCTAssertNotEqual(uart.readByte(IIR), 0)
        uart.writeByte(LCR, 0x00)
        // MCR bits 5-7 do not stick.
        uart.writeByte(MCR, 0xFF)
        XCTAssertEqual(uart.readByte(MCR), 0x1F)
    }

    func testTHREInterruptArmedByIEREdgeAndClearedByIIRRead() {
        uart.writeByte(IER, 0x02)
        XCTAssertEqual(line.levels, [true])
        XCTAssertEqual(uart.readByte(IIR), 0x02)
        XCTAssertEqual(line.levels, [true, false], "reading IIR cleared THRE")
        XCTAssertEqual(uart.readByte(IIR), 0x01)
        // Writing IER again with THRI already set is no rising edge.
        uart.writeByte(IER, 0x02)
        XCTAssertEqual(uart.readByte(IIR), 0x01)
        // Linux's UART_BUG_THRE test: IER 0 then THRI re-asserts it.
        uart.writeByte(IER, 0x00)
        uart.writeByte(IER, 0x02)
        XCTAssertEqual(uart.readByte(IIR), 0x02)
        XCTAssertEqual(line.levels, [true, false, true, false])
    }

    func testTHREInterruptReArmedAfterTransmit() {
        uart.writeByte(IER, 0x02)
        _ = uart.readByte(IIR)
        uart.writeByte(THR, 0x41)
        XCTAssertEqual(line.levels, [true, false, true])
        XCTAssertEqual(uart.readByte(IIR), 0x02)
        XCTAssertEqual(line.levels, [true, false, true, false])
        // Disabling THRI drops the line without an IIR read.
        uart.writeByte(THR, 0x42)
        uart.writeByte(IER, 0x00)
        XCTAssertEqual(line.levels, [true, false, true, false, true, false])
        XCTAssertEqual(uart.readByte(IIR), 0x01)
    }

    func testTransmitWithTHRIOffRaisesNothing() {
        uart.writeByte(THR, 0x41)
        XCTAssertEqual(line.levels, [])
        XCTAssertEqual(uart.readByte(IIR), 0x01)
    }

    func testReceivedDataInterrupt() {
        uart.writeByte(FCR, 0x01)
        XCTAssertEqual(uart.enqueueInput([0x31]), 1)
        XCTAssertEqual(line.levels, [], "RDI not enabled")
        uart.writeByte(IER, 0x01)
        XCTAssertEqual(line.levels, [true])
        XCTAssertEqual(uart.readByte(IIR), 0xC4)
        XCTAssertEqual(line.levels, [true], "reading IIR does not clear received data")
        XCTAssertEqual(uart.readByte(RBR), 0x31)
        XCTAssertEqual(line.levels, [true, false])
        XCTAssertEqual(uart.enqueueInput([0x32, 0x33]), 2)
        XCTAssertEqual(line.levels, [true, false, true], "set only on change")
    }

    func testInterruptPriorities() {
        uart.writeByte(FCR, 0x01)
        uart.writeByte(MCR, 0x10) // loopback: MSR lines go 0xB0 -> 0x00, deltas set
        for i in 0..<65 { uart.writeByte(THR, UInt8(i)) } // one more than the FIFO: overrun
        uart.writeByte(IER, 0x0F)
        XCTAssertEqual(uart.readByte(IIR), 0xC6, "line status first")
        XCTAssertEqual(uart.readByte(IIR), 0xC6, "reading IIR does not clear it")
        let lsr = uart.readByte(LSR)
        XCTAssertEqual(lsr & 0x03, 0x03, "OE | DR")
        XCTAssertEqual(uart.readByte(IIR), 0xC4, "then received data")
        for _ in 0..<64 { _ = uart.readByte(RBR) }
        XCTAssertEqual(uart.readByte(IIR), 0xC2, "then THR empty")
        XCTAssertEqual(uart.readByte(IIR), 0xC0, "then modem status; the THRE read cleared THRE")
        XCTAssertEqual(uart.readByte(MSR) & 0x0F, 0x0B, "DCTS | DDSR | DDCD")
        XCTAssertEqual(uart.readByte(IIR), 0xC1)
        XCTAssertEqual(line.level, false)
        XCTAssertEqual(line.levels, [true, false])
    }

    func testFIFOOverflowSetsOverrunAndKeepsOldData() {
        uart.writeByte(FCR, 0x01)
        uart.writeByte(MCR, 0x10)
        for i in 0..<70 { uart.writeByte(THR, UInt8(i)) }
        XCTAssertEqual(uart.readByte(LSR), 0x63, "DR | OE | THRE | TEMT")
        XCTAssertEqual(uart.readByte(LSR), 0x61, "OE is cleared by reading LSR")
        var got: [UInt8] = []
        while uart.readByte(LSR) & 0x01 != 0 { got.append(uart.readByte(RBR)) }
        XCTAssertEqual(got, Array(0..<64), "the FIFO keeps the first 64; the rest are lost")
        XCTAssertEqual(console.bytes, [], "loopback does not transmit")
    }

    func testOverrunIn16450ModeOverwritesRBR() {
        uart.writeByte(MCR, 0x10)
        uart.writeByte(THR, 0x01)
        XCTAssertEqual(uart.readByte(LSR), 0x61)
        uart.writeByte(THR, 0x02)
        XCTAssertEqual(uart.readByte(LSR), 0x63)
        XCTAssertEqual(uart.readByte(RBR), 0x02)
        XCTAssertEqual(uart.readByte(LSR), 0x60)
    }

    func testLineStatusInterrupt() {
        uart.writeByte(IER, 0x04)
        uart.writeByte(MCR, 0x10)
        uart.writeByte(THR, 0x01)
        XCTAssertEqual(line.levels, [])
        uart.writeByte(THR, 0x02) // overrun in 16450 mode
        XCTAssertEqual(line.levels, [true])
        XCTAssertEqual(uart.readByte(IIR), 0x06)
        _ = uart.readByte(LSR)
        XCTAssertEqual(line.levels, [true, false])
    }

    func testLoopbackModemLines() {
        uart.writeByte(MCR, 0x10)
        XCTAssertEqual(uart.readByte(MSR), 0x0B, "lines dropped: DCTS | DDSR | DDCD")
        XCTAssertEqual(uart.readByte(MSR), 0x00, "deltas cleared by the read")
        uart.writeByte(MCR, 0x10 | 0x01) // DTR -> DSR
        XCTAssertEqual(uart.readByte(MSR), 0x22)
        uart.writeByte(MCR, 0x10 | 0x02) // RTS -> CTS (DSR drops)
        XCTAssertEqual(uart.readByte(MSR), 0x13)
        uart.writeByte(MCR, 0x10 | 0x04) // OUT1 -> RI
        XCTAssertEqual(uart.readByte(MSR), 0x41, "RI rising is no TERI; CTS fell")
        uart.writeByte(MCR, 0x10 | 0x08) // OUT2 -> DCD, RI falls -> TERI
        XCTAssertEqual(uart.readByte(MSR), 0x8C)
        uart.writeByte(MCR, 0x00)
        XCTAssertEqual(uart.readByte(MSR), 0xB3, "back to a ready peer")
    }

    func testModemStatusInterrupt() {
        uart.writeByte(IER, 0x08)
        XCTAssertEqual(line.levels, [])
        uart.writeByte(MCR, 0x10)
        XCTAssertEqual(line.levels, [true])
        XCTAssertEqual(uart.readByte(IIR), 0x00)
        _ = uart.readByte(MSR)
        XCTAssertEqual(line.levels, [true, false])
        XCTAssertEqual(uart.readByte(IIR), 0x01)
    }

    func testLoopbackRefusesHostInput() {
        uart.writeByte(FCR, 0x01)
        uart.writeByte(MCR, 0x10)
        XCTAssertEqual(uart.inputSpace, 0)
        XCTAssertEqual(uart.enqueueInput([1, 2, 3]), 0)
        uart.writeByte(THR, 0x7F)
        XCTAssertEqual(uart.readByte(RBR), 0x7F)
        uart.writeByte(MCR, 0x00)
        XCTAssertEqual(uart.inputSpace, 64)
        XCTAssertEqual(uart.enqueueInput([1, 2, 3]), 3)
    }

    func testWideAccessesAreSplitIntoBytes() {
        uart.writeByte(SCR, 0x5A)
        XCTAssertEqual(uart.read(6, width: 2), [0xB0, 0x5A], "MSR, SCR")
        uart.write(6, [0x00, 0x77]) // MSR write ignored, SCR written
        XCTAssertEqual(uart.readByte(SCR), 0x77)
        XCTAssertEqual(uart.read(7, width: 4), [0x77, 0xFF, 0xFF, 0xFF], "past the registers: open bus")
        uart.write(0, Array("ok".utf8))
        XCTAssertEqual(console.bytes, [0x6F], "a 2-byte write at 0 is THR then IER")
        XCTAssertEqual(uart.readByte(IER), 0x0B, "0x6B masked to bits 0-3")
    }

    func testOddWidthsAndOffsetsNeverTrap() {
        let widths = [0, 1, 2, 3, 4, 8, 16]
        let offsets: [UInt64] = [0, 1, 2, 5, 7, 8, 100, 0x7FFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFC, 0xFFFF_FFFF_FFFF_FFFF]
        for off in offsets {
            for w in widths {
                _ = uart.read(off, width: w)
                uart.write(off, [UInt8](repeating: 0xFF, count: w))
                uart.write(off, [UInt8](repeating: 0x00, count: w))
            }
        }
        XCTAssertEqual(uart.read(0xFFFF_FFFF_FFFF_FFFF, width: 2), [0xFF, 0xFF])
    }

    func testConcurrentAccessKeepsEveryTransmittedByte() {
        uart.writeByte(FCR, 0x01)
        let perThread = 2_000
        let uart: Serial16550 = self.uart
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            for i in 0..<perThread {
                switch t {
                case 0, 1: uart.writeByte(THR, UInt8(truncatingIfNeeded: i))
                case 2: _ = uart.enqueueInput([UInt8(truncatingIfNeeded: i)]); _ = uart.readByte(RBR)
                default: uart.writeByte(IER, UInt8(truncatingIfNeeded: i)); _ = uart.readByte(IIR)
                }
            }
        }
        XCTAssertEqual(console.bytes.count, 2 * perThread)
        // Levels alternate: setLevel is only called on a change.
        let levels = line.levels
        for (a, b) in zip(levels, levels.dropFirst()) { XCTAssertNotEqual(a, b) }
    }
}
